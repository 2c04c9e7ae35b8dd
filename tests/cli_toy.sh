#!/usr/bin/env bash
# stetho toy build --quick: builds a loadable world (base and fine-tuned HF
# directories with the tokenizer, accuracy probes, prompt sets and an SAE per
# layer), deterministically for a seed and thread count; --base-from redoes
# only the fine-tune; `toy saes` redoes only the SAEs; then `stetho demo` on it
# (the whole study, end to end).
set -u
S="$1"; here=$(cd "$(dirname "$0")" && pwd)
. "$here/util/cli_lib.sh"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
G="$here/../../shared/data/general"; [ -d "$G" ] || G=""
"$S" toy build -o "$T/a" --quick --seed 3 --threads 2 ${G:+--general "$G"} --quiet > "$T/out" 2>&1 || { cat "$T/out"; bad "toy build failed"; }
for f in base/config.json base/model.safetensors base/tokenizer.json ft/model.safetensors logs/base_loss.tsv logs/ft_loss.tsv world.json \
         data/math/train.jsonl data/math/test.jsonl data/general/heldout_text.jsonl \
         data/prompts/domain.jsonl data/prompts/general.jsonl saes/train_report.json \
         saes/layer_0/cfg.json saes/layer_3/sae_weights.safetensors; do
    [ -s "$T/a/$f" ] && ok || bad "missing $f"
done
[ ! -e "$T/a/saes/.train_mix.jsonl" ] && ok || bad "the SAE training mix was left behind"
# the prompt sets: 40 problems of each of the 7 subjects, 280 general prompts
[ "$(wc -l < "$T/a/data/prompts/domain.jsonl")" -eq 280 ] && [ "$(wc -l < "$T/a/data/prompts/general.jsonl")" -eq 280 ] \
  && ok || bad "prompt set sizes"
if command -v jq > /dev/null; then
  [ "$(jq -r .subject "$T/a/data/prompts/domain.jsonl" | sort | uniq -c | awk '$1 == 40' | wc -l)" -eq 7 ] && ok || bad "domain prompts per subject"
  jq -e '(.saes | length) == 4 and all(.saes[]; .explained_variance > 0)' "$T/a/saes/train_report.json" > /dev/null \
    && ok || { cat "$T/a/saes/train_report.json"; bad "SAE train report"; }
  [ "$(jq -r .metadata.hook_name "$T/a/saes/layer_2/cfg.json")" = "blocks.2.hook_resid_post" ] && ok || bad "SAE hook name"
fi
# `toy saes` redoes that step alone, the same SAEs
cp "$T/a/saes/layer_1/sae_weights.safetensors" "$T/l1.safetensors"
"$S" toy saes "$T/a" --quick --seed 3 --threads 2 --quiet > /dev/null 2>&1 && cmp -s "$T/l1.safetensors" "$T/a/saes/layer_1/sae_weights.safetensors" \
  && ok || bad "toy saes did not reproduce the build's SAEs"
"$S" toy saes "$T/nope" > /dev/null 2>&1; [ $? -eq 2 ] && ok || bad "toy saes on a missing dir should exit 2"
# b: no probes; training must not depend on them
"$S" toy build -o "$T/b" --quick --seed 3 --threads 2 ${G:+--general "$G"} --probe 0 --no-saes --quiet > /dev/null 2>&1
cmp -s "$T/a/ft/model.safetensors" "$T/b/ft/model.safetensors" && ok || bad "same seed and threads gave different weights"
[ ! -e "$T/b/logs/base_probe.tsv" ] && ok || bad "--probe 0 still probed"
# accuracy probes at the end of each phase: a header and one row of 7 subjects + total
for p in base ft; do
  [ "$(wc -l < "$T/a/logs/${p}_probe.tsv")" -eq 2 ] && [ "$(tail -1 "$T/a/logs/${p}_probe.tsv" | awk -F'\t' '{print NF, $10}')" = "10 21" ] \
    && ok || { cat "$T/a/logs/${p}_probe.tsv"; bad "$p probe log"; }
done
if command -v jq > /dev/null; then
  jq -e '.ft.accuracy >= 0 and .ft.accuracy <= 1 and (.ft.probes | length) == 1 and .ft.probes[0].problems == 21' "$T/a/world.json" > /dev/null \
    && ok || bad "world.json ft probes"
fi
[ -z "$(ls -A "$T/a/logs" | grep probe- )" ] && ok || bad "probe scratch directories left behind"
# --base-from: the base phase skipped, the loaded base saved unchanged, the fine-tune redone
"$S" toy build -o "$T/c" --quick --seed 3 --threads 2 ${G:+--general "$G"} --base-from "$T/a/base" --probe 0 --no-saes > "$T/out" 2>&1 \
  && grep -q "base phase skipped" "$T/out" && ok || { cat "$T/out"; bad "--base-from"; }
cmp -s "$T/a/base/model.safetensors" "$T/c/base/model.safetensors" && [ -s "$T/c/ft/model.safetensors" ] && ok || bad "--base-from base/ft"
[ ! -e "$T/c/logs/base_loss.tsv" ] && ok || bad "--base-from still pretrained"
"$S" toy build -o "$T/d" --quick --seed 4 ${G:+--general "$G"} --base-from "$T/a/base" --quiet > "$T/out" 2>&1
[ $? -eq 1 ] && grep -q "another tokenizer" "$T/out" && ok || { cat "$T/out"; bad "--base-from with another seed's tokenizer"; }
"$S" toy build -o "$T/d" --quick --base-from "$T/nope" > /dev/null 2>&1; [ $? -eq 2 ] && ok || bad "--base-from missing dir should exit 2"
"$S" toy build -o "$T/d" --quick --ft-lr 2 > /dev/null 2>&1; [ $? -eq 2 ] && ok || bad "--ft-lr 2 should exit 2"
"$S" toy build -o "$T/d" --quick --base-drill-frac 1 > /dev/null 2>&1; [ $? -eq 2 ] && ok || bad "--base-drill-frac 1 should exit 2"
if command -v jq > /dev/null; then
  jq -e '.base.drill_frac == 0.25 and .base.math_frac == 0.75 and .ft.drill_frac == 0' "$T/a/world.json" > /dev/null && ok || bad "world.json drill shares"
  # answer keys: 60% of each subject's templates (round(0.6 n): 23 of 35) in the base, none in the fine-tune
  jq -e '.base.bare_share == 0.75 and (.base.bare_template_names | length) == 23 and (.ft.bare_template_names | length) == 0' \
    "$T/a/world.json" > /dev/null && ok || bad "world.json answer keys"
  [ "$(jq -r .template "$T/a/data/math/train.jsonl" | grep -c -v null)" = "$(wc -l < "$T/a/data/math/train.jsonl")" ] && ok || bad "template field"
fi
# without answer keys the base trains on other documents, so its weights differ
"$S" toy build -o "$T/nk" --quick --seed 3 --threads 2 ${G:+--general "$G"} --probe 0 --no-saes --base-bare-share 0 --quiet > /dev/null 2>&1
[ -f "$T/nk/base/model.safetensors" ] && ! cmp -s "$T/b/base/model.safetensors" "$T/nk/base/model.safetensors" && ok || bad "--base-bare-share 0 changed nothing"
"$S" toy build -o "$T/d" --quick --base-bare-share 2 > /dev/null 2>&1; [ $? -eq 2 ] && ok || bad "--base-bare-share 2 should exit 2"
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
