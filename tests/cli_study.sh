#!/usr/bin/env bash
# CLI tests for `stetho study`: the whole pipeline on the byte-built 3-layer
# fixture (tests/util/tiny_llama.sh): layer choices of every variant against
# what `stetho edit` chooses, the selection in each edit's metadata, summary.json
# and the report, resuming (nothing reruns), a changed config refused without
# --force and then only the changed steps rerun, and bad configs.
set -u
STETHO=${1:?usage: cli_study.sh path/to/stetho}
T=${STETHO_TMP:-/tmp}/cli-study-$$
rm -rf "$T"; mkdir -p "$T"
source "$(dirname "$0")/util/cli_lib.sh"
source "$(dirname "$0")/util/tiny_llama.sh"
Q0=$(zeros 16)
make_model "$T/base" "$Q0" "$Q0" "$Q0"
ones16=""; twos16=""; halves16=""; for i in $(seq 16); do ones16+=$one; twos16+=$two; halves16+=$half; done
make_model "$T/ft" "$ones16" "$halves16" "$twos16"

# MATH-style test set: two problems per subject
mkdir -p "$T/math"
for s in algebra counting_and_probability geometry intermediate_algebra number_theory prealgebra precalculus; do
  for i in 1 2; do
    printf '{"subject": "%s", "level": "Level 1", "type": "T", "problem": "a b %d", "solution": "It is $\\\\boxed{%d}$."}\n' "$s" "$i" "$i"
  done
done > "$T/math/test.jsonl"

cat > "$T/study.yaml" <<'YAML'
models: {base: base, finetuned: ft}
sae_dir: saes
prompts: {domain: dom.jsonl, general: gen.jsonl}
diagnose: {top_features: 2}
variants:
  stethoscope: {top_k: 1}
  scalpel: {features: 1}
  controls: {random: {seeds: [1, 7]}, norm: true, bottom: true, all_layers: true}
  ablation: {single_layer: true, leave_one_out: true}
eval:
  num_fewshot: 0
  max_gen_toks: 4
  batch_size: 4
  data: math
  limit: 2
perplexity: {input: gen.jsonl, max_tokens: 16}
YAML

R="$T/run"
out=$("$STETHO" study "$T/study.yaml" -o "$R" 2>&1) && ok || bad "study exit: $out"
for f in config.json summary.json report.html report.md taskvec/tv.safetensors taskvec/diff.json diagnose/scores.json \
         scalpel/tv.safetensors scalpel/projection.json variants/stethoscope_k1/model/config.json \
         variants/base/eval variants/base/perplexity.json; do
  [ -e "$R/$f" ] && ok || bad "missing $f"
done
grep -q "plan       15 variants" <<<"$out" && ok || bad "variant count: $(grep plan <<<"$out")"

# layer choices match `stetho edit`'s for the same selection
choice() { "$STETHO" edit "$T/base" --task-vector "$R/taskvec/tv.safetensors" "$@" -o "$T/e" --force 2>&1 | sed -n 's/^selected [^:]*: //p' | tr ' ' '\n' | sort -n | paste -sd, -; }
if command -v jq >/dev/null; then
  layers() { jq -r ".variants[] | select(.name == \"$1\") | .layers | @csv" "$R/summary.json"; }
  [ "$(layers stethoscope_k1)" = "$(choice --scores "$R/diagnose/scores.json" --top-k 1)" ] && [ "$(layers stethoscope_k1)" = 0 ] && ok || bad "stethoscope layers $(layers stethoscope_k1)"
  [ "$(layers bottom_k1)" = "$(choice --scores "$R/diagnose/scores.json" --select bottom --top-k 1)" ] && ok || bad "bottom layers"
  [ "$(layers norm_k1)" = "$(choice --select norm --top-k 1)" ] && [ "$(layers norm_k1)" = 2 ] && ok || bad "norm layers $(layers norm_k1)"
  for s in 1 7; do
    [ "$(layers random_k1_s$s)" = "$(choice --select random --seed $s --top-k 1)" ] && ok || bad "random seed $s layers"
  done
  [ "$(layers all_layers)" = "0,1,2" ] && [ "$(layers leave_one_out_l1)" = "0,2" ] && [ "$(layers single_l2)" = 2 ] && ok || bad "all / ablation layers"
  [ "$(jq -r '.variants | length' "$R/summary.json")" = 15 ] && ok || bad "variants in summary"
  [ "$(jq -r '.variants[0].results.minerva_math.n' "$R/summary.json")" = 14 ] && ok || bad "problems per variant"
  [ "$(jq -r '.tasks | length' "$R/summary.json")" = 7 ] && ok || bad "tasks"
  [ "$(jq -r '.variants[] | select(.name == "stethoscope_k1") | .vs | keys | join(",")' "$R/summary.json")" = \
    "all_layers,bottom_k1,finetuned,norm_k1,random_k1_s1,random_k1_s7,scalpel" ] && ok || bad "stethoscope comparisons"
  [ "$(jq -r '.variants[1].vs_base.minerva_math | has("p") and has("mcnemar_p")' "$R/summary.json")" = true ] && ok || bad "vs_base"
  [ "$(jq -r '.ablation.layers | length' "$R/summary.json")" = 3 ] && [ "$(jq -r '.ablation.alpha' "$R/summary.json")" = 1 ] \
    && [ "$(jq -r '.ablation.correlations | length' "$R/summary.json")" = "$(jq -r '.specificity.metrics | length' "$R/summary.json")" ] \
    && ok || bad "ablation rows"
  [ "$(jq -r '.specificity.layers[1].score' "$R/summary.json")" = null ] && ok || bad "unscored layer 1"
  # the scalpel keeps the energy of tau in the 1-dimensional span of the top feature (retained <= 1)
  awk -v r="$(jq -r '.scalpel.retained' "$R/summary.json")" 'BEGIN { exit !(r >= 0 && r <= 1) }' && ok || bad "scalpel retained"
  jq -e '.variants[] | select(.perplexity == null)' "$R/summary.json" >/dev/null && bad "a variant lacks perplexity" || ok
else
  echo "cli_study: jq not found, summary field checks skipped"
fi
# every layer edit records its selection in the checkpoint's metadata
meta=$("$STETHO" inspect "$R/variants/stethoscope_k1/model")
grep -q '"selection":{"method":"top","k":1,"layers":\[0\]' <<<"$meta" && grep -q '"study_variant":{"name":"stethoscope_k1","kind":"stethoscope"' <<<"$meta" && ok || bad "stethoscope metadata: $meta"
"$STETHO" inspect "$R/variants/random_k1_s7/model" | grep -q '"method":"random","k":1,"seed":"7"' && ok || bad "random metadata"
grep -q "stethoscope top-1" "$R/report.md" && grep -q "<html" "$R/report.html" && ok || bad "report"

# --- a rerun resumes: every step is up to date, outputs untouched
before=$(stat -c %Y "$R/variants/base/perplexity.json")
out=$("$STETHO" study "$T/study.yaml" -o "$R" 2>&1) && ok || bad "rerun exit: $out"
grep -q "taskvec    up to date" <<<"$out" && grep -q "diagnose   up to date" <<<"$out" && ! grep -q "^.*eval .*correct" <<<"$out" \
  && ok || bad "rerun redid work: $out"
[ "$(stat -c %Y "$R/variants/base/perplexity.json")" = "$before" ] && ok || bad "rerun rewrote outputs"

# --- another config in the same run directory: refused, then --force reruns only what changed
sed -i 's/limit: 2/limit: 1/' "$T/study.yaml"
out=$("$STETHO" study "$T/study.yaml" -o "$R" 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "different config" <<<"$out" && grep -q -- "--force" <<<"$out" && ok || bad "other config not refused ($rc): $out"
out=$("$STETHO" study "$T/study.yaml" -o "$R" --force 2>&1) && ok || bad "--force exit: $out"
grep -q "diagnose   up to date" <<<"$out" && grep -q "base minerva_math_algebra: ./1 correct" <<<"$out" && ok || bad "--force did not rerun eval only: $out"
if command -v jq >/dev/null; then
  [ "$(jq -r '.variants[0].results.minerva_math.n' "$R/summary.json")" = 7 ] && ok || bad "limit 1 not applied"
fi

# --- bad configs: named errors, nothing created
printf 'models: {base: base, finetuned: ft}\nsae_dir: saes\nprompts: {domain: dom.jsonl, general: gen.jsonl}\neval: {limt: 3}\n' > "$T/bad.yaml"
out=$("$STETHO" study "$T/bad.yaml" -o "$T/bad-run" 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "eval.limt" <<<"$out" && [ ! -e "$T/bad-run" ] && ok || bad "unknown key ($rc): $out"
printf 'models: {base: base, finetuned: ft}\nsae_dir: saes\nprompts: {domain: dom.jsonl, general: gen.jsonl}\nvariants: {stethoscope: {top_k: 5}, scalpel: false}\neval: {data: math, limit: 1}\n' > "$T/bigk.yaml"
out=$("$STETHO" study "$T/bigk.yaml" -o "$T/bigk-run" 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "top_k 5 exceeds the model's 3 layers" <<<"$out" && [ ! -e "$T/bigk-run" ] && ok || bad "K > layers ($rc): $out"
out=$("$STETHO" study "$T/study.yaml" 2>&1); [ $? -eq 2 ] && ok || bad "missing -o not a usage error"

rm -rf "$T"
echo "cli_study: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
