#!/usr/bin/env bash
# stetho toy build --quick: builds a loadable world (base and fine-tuned HF
# directories with the tokenizer), deterministically for a seed and thread
# count, whose fine-tune lowered the held-out math loss; then SAEs for it and
# `stetho demo` on it (the whole study, end to end).
set -u
S="$1"; here=$(cd "$(dirname "$0")" && pwd)
. "$here/util/cli_lib.sh"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
G="$here/../../shared/data/general"; [ -d "$G" ] || G=""
"$S" toy build -o "$T/a" --quick --seed 3 --threads 2 ${G:+--general "$G"} --quiet > "$T/out" 2>&1 || { cat "$T/out"; bad "toy build failed"; }
for f in base/config.json base/model.safetensors base/tokenizer.json ft/model.safetensors logs/base_loss.tsv logs/ft_loss.tsv world.json \
         data/math/train.jsonl data/math/test.jsonl data/general/heldout_text.jsonl; do
    [ -s "$T/a/$f" ] && ok || bad "missing $f"
done
"$S" toy build -o "$T/b" --quick --seed 3 --threads 2 ${G:+--general "$G"} --quiet > /dev/null 2>&1
cmp -s "$T/a/ft/model.safetensors" "$T/b/ft/model.safetensors" && ok || bad "same seed and threads gave different weights"
# the loss went down during pretraining and the models run
first=$(sed -n 2p "$T/a/logs/base_loss.tsv" | cut -f4); last=$(tail -1 "$T/a/logs/base_loss.tsv" | cut -f4)
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.5) }' && ok || bad "base loss $first -> $last did not fall"
"$S" generate "$T/a/ft" --prompt "Problem:" --max-tokens 5 --quiet > /dev/null && ok || bad "generate on the fine-tuned model"
# the study on that world, end to end: its SAEs, then `stetho demo`. Skipped in the
# unoptimised sanitizer build (minutes of -O0 generation); the study runner itself
# runs there in cli_study and test_study_run.
if [ "${STETHO_SANITIZED:-0}" = 1 ]; then
  echo "cli_toy: sanitizer build, demo on the quick world skipped"
else
  "$S" sae train "$T/a/base" --input "$T/a/data/math/train.jsonl" --field problem --layers 0-3 --width 128 --k 8 \
      --tokens 20000 --batch 512 -o "$T/a/saes" --quiet > "$T/out" 2>&1 && ok || { cat "$T/out"; bad "sae train on the world"; }
  "$S" demo --world "$T/a" -o "$T/demo" --limit 2 > "$T/demo.out" 2>&1 && ok || { tail -20 "$T/demo.out"; bad "demo failed"; }
  for f in study.yaml summary.json report.html report.md diagnose/scores.json scalpel/projection.json; do
      [ -s "$T/demo/$f" ] && ok || bad "demo: missing $f"
  done
  grep -q "stethoscope top-3" "$T/demo.out" && grep -q "random 3 (seed 3)" "$T/demo.out" && grep -q "norm-ranked top-3" "$T/demo.out" \
      && grep -q "scalpel: the top 8 SAE features" "$T/demo.out" && ok || { cat "$T/demo.out"; bad "demo summary"; }
fi
"$S" toy build --quick > /dev/null 2>&1; [ $? -eq 2 ] && ok || bad "missing -o should exit 2"
echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
