#!/usr/bin/env bash
# make bench: run every benchmark of a release build, then print one table of
# every figure against its baseline measured in the same run, and write it as
# JSON (bench-results/summary.json) so figures can be tracked over time.
#
# Each bench_X is run as `bench_X STETHO_BIN WORK_DIR [args]` and reports its
# figures as lines "RESULT<TAB>name<TAB>value<TAB>unit<TAB>baseline<TAB>ratio".
set -euo pipefail
BUILD=${1:-build-release}
OUT=${BENCH_OUT:-bench-results}
WORK=${BENCH_WORK:-$BUILD/bench-work}
mkdir -p "$OUT" "$WORK"
results="$OUT/results.tsv"
: > "$results"
echo "== stetho benchmarks ($(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ))"
failed=()
run() {
  local name=$1; shift
  echo; echo "-- $name"
  # a failing benchmark is reported and the others still run and are tabled
  if ! "$@" | tee "$WORK/$name.out"; then failed+=("$name"); fi
  grep '^RESULT' "$WORK/$name.out" | cut -f2- >> "$results" || true
}
# a JSON number, or null for anything else (nan, inf, empty)
num() { [[ $1 =~ ^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]] && printf '%s' "$1" || printf 'null'; }
run taskvec "$BUILD/bench_taskvec" "$BUILD/stetho" "$WORK/taskvec" "${BENCH_GB:-2}" "$OUT/taskvec.json"
# forward: 2 threads, a 512-token prompt, 8 layers (its own argument convention)
[ -x "$BUILD/bench_forward" ] && run forward "$BUILD/bench_forward" 2 512 8
for b in "$BUILD"/bench_*; do
  name=$(basename "$b"); name=${name#bench_}
  case "$name" in taskvec|forward) continue ;; esac
  [ -x "$b" ] || continue
  run "$name" "$b" "$BUILD/stetho" "$WORK/$name" "$OUT/$name.json"
done
echo
echo "== summary (ratio = value / baseline, both measured in this run unless the baseline says otherwise)"
printf '%-40s %14s %-8s %14s %8s\n' benchmark value unit baseline ratio
while IFS=$'\t' read -r name value unit base ratio; do
  printf '%-40s %14s %-8s %14s %8s\n' "$name" "$value" "$unit" "$base" "$ratio"
done < "$results"
json="$OUT/summary.json"
{
  echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"cores\": $(nproc), \"results\": ["
  sep=""
  while IFS=$'\t' read -r name value unit base ratio; do
    printf '%s  {"name": "%s", "value": %s, "unit": "%s", "baseline": %s, "ratio": %s}' "$sep" "$name" \
      "$(num "$value")" "$unit" "$(num "$base")" "$(num "$ratio")"
    sep=$',\n'
  done < "$results"
  printf '\n], "failed": ['
  sep=""
  for f in "${failed[@]}"; do printf '%s"%s"' "$sep" "$f"; sep=", "; done
  printf ']}\n'
} > "$json.tmp" && mv "$json.tmp" "$json"
echo "wrote $json"
if [ ${#failed[@]} -gt 0 ]; then echo "bench: failed: ${failed[*]}"; exit 1; fi
