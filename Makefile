# Thin wrapper over CMake. `make` builds build/stetho; `make test` runs the suite.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all test asan test-asan demo bench fuzz valgrind clean

all: $(BUILD)/Makefile
	@$(MAKE) --no-print-directory -C $(BUILD) -j$(JOBS)

$(BUILD)/Makefile: CMakeLists.txt
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null

test: all
	@cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan:
	@$(MAKE) --no-print-directory BUILD=build-asan CMAKE_FLAGS="-DSTETHO_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug" test

demo: all
	@$(BUILD)/stetho demo

bench:
	@cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release >/dev/null
	@$(MAKE) --no-print-directory -C build-release -j$(JOBS) stetho_cli benches
	@bash bench/run.sh build-release

fuzz:
	@CC=clang cmake -S . -B build-fuzz -DSTETHO_FUZZ=ON -DSTETHO_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@$(MAKE) --no-print-directory -C build-fuzz -j$(JOBS) fuzzers
	@bash fuzz/run.sh build-fuzz $${FUZZ_SECONDS:-60}

# valgrind memcheck over representative CLI runs (scripts/valgrind-cli); a
# build without -march=native, which valgrind may not be able to run.
valgrind:
	@cmake -S . -B build-valgrind -DSTETHO_NATIVE=OFF >/dev/null
	@$(MAKE) --no-print-directory -C build-valgrind -j$(JOBS) stetho_cli
	@scripts/valgrind-cli build-valgrind/stetho

clean:
	rm -rf build build-asan build-release build-fuzz build-valgrind
