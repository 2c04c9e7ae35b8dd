#!/usr/bin/env bash
# Fault injection through the whole CLI (SQLite style): every command that
# writes files is run with the Nth write failing (STETHO_FAULT_WRITE=N) for
# N = 1, 2, ... until it succeeds, and with the Nth allocation failing
# (STETHO_FAULT_ALLOC=N) for a spread of N. Each failure must exit 1 with
# "stetho: error:" and leave nothing in the output directory: no partial file,
# no temporary (eval's hidden resume files excepted: they are what a rerun
# resumes from). Under ASan a leak on any failure path fails the run too.
# Runs on the shipped tiny world (world/).
set -u
STETHO=${1:?usage: cli_faults.sh path/to/stetho}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$ROOT/world
[ -f "$W/base/model.safetensors" ] || { echo "SKIP: no shipped world at $W"; exit 77; }
T=${STETHO_TMP:-/tmp}/cli-faults-$$
rm -rf "$T"; mkdir -p "$T/in"
source "$(dirname "$0")/util/cli_lib.sh"

# inputs made once, outside the output directories
"$STETHO" diff "$W/base" "$W/ft" -o "$T/in/tv.safetensors" >/dev/null || bad "setup: diff"
"$STETHO" capture "$W/base" --text "Problem: What is 2 + 3?" --hooks blocks.1.hook_resid_post \
    -o "$T/in/acts.safetensors" >/dev/null || bad "setup: capture"
printf '{"generation":"Final Answer: The final answer is $5$. I hope it is correct.","answer":"5"}\n' > "$T/in/gen.jsonl"
printf '{"1": [0, 1, 2]}\n' > "$T/in/features.json"
for i in 1 2 3 4 5 6; do printf '{"text": "Paragraph %d: the river runs past the old mill and on to the sea."}\n' $i; done > "$T/in/text.jsonl"

# faults NAME MODE CMD...: CMD's output paths are under $O (recreated per run)
total=0
faults() {
    local name=$1 mode=$2; shift 2
    local n=1 rc tries=0
    while :; do
        rm -rf "$T/out"; mkdir -p "$T/out"
        if [ "$mode" = write ]; then
            STETHO_FAULT_WRITE=$n "$@" >/dev/null 2>"$T/err"; rc=$?
        else
            STETHO_FAULT_ALLOC=$n "$@" >/dev/null 2>"$T/err"; rc=$?
        fi
        [ $rc = 0 ] && break
        tries=$((tries + 1))
        if [ $rc != 1 ] || ! grep -q "^stetho: error:" "$T/err"; then
            bad "$name: $mode fault $n: exit $rc, stderr: $(head -c 300 "$T/err")"; return
        fi
        # allowed: eval's hidden partial files (kept on purpose: a rerun resumes from them)
        left=$(find "$T/out" -mindepth 1 \( -type f ! -name '.samples_*.partial.jsonl' \) -o \( -type d -empty \) | head -3)
        if [ -n "$left" ]; then
            bad "$name: $mode fault $n left $(tr '\n' ' ' <<<"$left")"; return
        fi
        # allocations: every one of the first 40, then a spread
        if [ "$mode" = write ] || [ $n -lt 40 ]; then n=$((n + 1)); else n=$((n + n / 3)); fi
        [ $n -gt 2000000 ] && { bad "$name: $mode faults never stop at $n"; return; }
    done
    [ $tries -gt 0 ] && ok || bad "$name: no $mode fault fired"
    total=$((total + tries))
}
O=$T/out
for mode in write alloc; do
    faults "diff" $mode "$STETHO" diff "$W/base" "$W/ft" -o "$O/tv.safetensors" --json "$O/tv.json"
    faults "edit" $mode "$STETHO" edit "$W/base" --task-vector "$T/in/tv.safetensors" --layers 2-3 -o "$O/edited"
    faults "capture" $mode "$STETHO" capture "$W/base" --text "What is 7 - 4?" \
        --hooks blocks.0.hook_resid_post,logits -o "$O/acts.safetensors"
    faults "sae encode" $mode "$STETHO" sae encode "$W/saes/layer_1" --input "$T/in/acts.safetensors" \
        -o "$O/f.safetensors" --top 4 --reconstruct
    faults "project" $mode "$STETHO" project --task-vector "$T/in/tv.safetensors" --sae-dir "$W/saes" \
        --features-file "$T/in/features.json" -o "$O/p.safetensors" --json "$O/p.json"
    faults "grade" $mode "$STETHO" grade --input "$T/in/gen.jsonl" --output "$O/graded.jsonl"
    faults "sae train" $mode "$STETHO" sae train "$W/base" --hook blocks.1.hook_resid_post --input "$T/in/text.jsonl" \
        --width 32 --k 4 --batch 64 --tokens 256 --quiet -o "$O/sae" --json "$O/sae.json"
    faults "eval" $mode "$STETHO" eval "$W/base" --tasks minerva_math_algebra --limit 1 --num-fewshot 0 \
        --max-gen-toks 8 --data "$W/data/math" --output-path "$O/eval" --log-samples
done
echo "cli_faults: $total injected faults, each a clean error with nothing left behind"

rm -rf "$T"
echo "cli_faults: $passes passed, $fails failed"
[ $fails = 0 ]
