#!/usr/bin/env bash
# make fuzz: run every libFuzzer target for a bounded time over its seed corpus
# (fuzz/corpus/<target>/, copied to a scratch directory so runs never modify the
# repository) and print how many executions ran and whether anything was found.
set -uo pipefail
BUILD=${1:-build-fuzz}
SECONDS_EACH=${2:-60}
WORK=$BUILD/fuzz-work
mkdir -p "$WORK"
# third-party leaks stetho cannot fix (each documented in the file)
export LSAN_OPTIONS="suppressions=$(pwd)/fuzz/lsan-suppressions.txt${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
status=0
printf '%-22s %12s %10s  %s\n' target executions exec/s result
for bin in "$BUILD"/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin"); target=${name#fuzz_}
  corpus="$WORK/corpus-$target"; mkdir -p "$corpus"
  [ -d "fuzz/corpus/$target" ] && cp -n fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null
  log="$WORK/$target.log"
  "$bin" -max_total_time="$SECONDS_EACH" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
         -artifact_prefix="$WORK/$target-" "$corpus" > "$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  [ -n "$execs" ] || execs=$(grep -oE '#[0-9]+' "$log" | tail -1 | tr -d '#')
  rate=$(grep -oE 'exec/s: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
  if [ $rc -eq 0 ]; then result=ok; else result="FOUND (see $log)"; status=1; fi
  printf '%-22s %12s %10s  %s\n' "$target" "${execs:-?}" "${rate:-?}" "$result"
done
exit $status
