#!/usr/bin/env bash
# make bench: run every benchmark in a release build and print one table; each
# benchmark also writes JSON (bench-results/<name>.json) so figures can be tracked.
set -euo pipefail
BUILD=${1:-build-release}
OUT=${BENCH_OUT:-bench-results}
WORK=${BENCH_WORK:-$BUILD/bench-work}
mkdir -p "$OUT" "$WORK"
echo "== stetho benchmarks ($(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ))"
echo
echo "-- task vectors (issue 2): ${BENCH_GB:-2} GB bf16 checkpoint"
"$BUILD/bench_taskvec" "$BUILD/stetho" "$WORK/taskvec" "${BENCH_GB:-2}" "$OUT/taskvec.json"
for b in "$BUILD"/bench_*; do
  name=$(basename "$b")
  [ "$name" = bench_taskvec ] && continue
  [ -x "$b" ] || continue
  echo
  echo "-- ${name#bench_}"
  "$b" "$BUILD/stetho" "$WORK/${name#bench_}" "$OUT/${name#bench_}.json"
done
