#!/usr/bin/env bash
# CLI tests for `stetho diagnose` and the layer selections of `stetho edit`
# (--scores/--top-k, --select random|norm|bottom|all|only:L|except:L), on fixtures
# written byte by byte: a 3-layer Llama whose weights are all zero except the
# embeddings (so every layer's residual stream is the token's embedding), a
# word-per-letter tokenizer, and SAEs for layers 0 and 2 (layer 1 has none).
# Domain letters a, b live on dimension 0, general letters c, d on dimension 1,
# the word boundary on dimension 2 and BOS on dimension 3.
set -u
STETHO=${1:?usage: cli_diagnose.sh path/to/stetho}
T=${STETHO_TMP:-/tmp}/cli-diagnose-$$
rm -rf "$T"; mkdir -p "$T"
source "$(dirname "$0")/util/cli_lib.sh"

source "$(dirname "$0")/util/tiny_llama.sh"

# --- diagnose
out=$("$STETHO" diagnose "$T/base" --sae-dir "$T/saes" --domain "$T/dom.jsonl" --general "$T/gen.jsonl" \
      --probe-folds 3 --quiet -o "$T/scores.json" 2>&1) && ok || bad "diagnose exit: $out"
[ -f "$T/scores.json" ] && [ -f "$T/scores.tsv" ] && [ -f "$T/scores.svg" ] && ok || bad "diagnose outputs missing"
grep -q "unscored layers (no SAE): 1" <<<"$out" && ok || bad "unscored layer not listed: $out"
# 12 domain tokens: the BOS of each of the 3 prompts is left out
grep -q "3 domain prompts (12 tokens), 3 general prompts (12 tokens), BOS excluded" <<<"$out" && ok || bad "token counts: $out"
if command -v jq >/dev/null; then
  j() { jq -r "$1" "$T/scores.json"; }
  [ "$(j .metric)" = specific_mass ] && [ "$(j .n_layers)" = 3 ] && [ "$(j .d_model)" = 4 ] && ok || bad "scores header"
  [ "$(j '.unscored_layers | @csv')" = 1 ] && [ "$(j '.ranking | @csv')" = "0,2" ] && ok || bad "ranking $(j .ranking)"
  # layer 0: domain mass 8 on f0 (a = 1 x4, b = 2 x2) of 8 + 6 (boundaries): 8/14
  s0=$(j '.layers[0].score'); awk -v s="$s0" 'BEGIN { exit !(s > 0.5714285 && s < 0.5714286) }' && ok || bad "layer 0 score $s0"
  [ "$(j '.layers[2].score')" = 0 ] && [ "$(j '.layers[1].scored')" = false ] && ok || bad "layers 1/2"
  [ "$(j '.layers[0].top_features[0].index')" = 0 ] && ok || bad "planted feature is not layer 0's top"
  # f0: freq 6/12 on domain, 0 on general; log ratio ln((6.5/13)/(0.5/13)) = ln 13
  [ "$(j '.layers[0].features.freq_domain[0]')" = 0.5 ] && [ "$(j '.layers[0].features.freq_general[0]')" = 0 ] && ok || bad "freqs"
  lr=$(j '.layers[0].features.log_ratio[0]'); awk -v s="$lr" 'BEGIN { exit !(s > 2.56494 && s < 2.56496) }' && ok || bad "log ratio $lr"
  [ "$(j '.layers[0].scores.probe')" = 1 ] && [ "$(j '.layers[2].scores.probe')" = 0.5 ] && ok || bad "probe $(j '.layers[0].scores.probe') $(j '.layers[2].scores.probe')"
  [ "$(j '.domain.tokens')" = 12 ] && [ "$(j '.bos_excluded')" = true ] && ok || bad "domain block"
else
  grep -q '"metric": "specific_mass"' "$T/scores.json" && ok || bad "scores metric"
fi
head -1 "$T/scores.tsv" | grep -q "^layer	scored	rank	score	specific_mass" && ok || bad "tsv header"
grep -q "^1	no	NA" "$T/scores.tsv" && ok || bad "tsv unscored row"
grep -q "<svg" "$T/scores.svg" && grep -q "Layer specificity (specific_mass)" "$T/scores.svg" && ok || bad "svg"
if command -v xmllint >/dev/null; then xmllint --noout "$T/scores.svg" && ok || bad "svg is not well-formed XML"; fi
# --metric changes the ranking score; existing outputs are refused without --force
"$STETHO" diagnose "$T/base" --sae-dir "$T/saes" --domain "$T/dom.jsonl" --general "$T/gen.jsonl" --quiet -o "$T/scores.json" >/dev/null 2>&1
[ $? -eq 1 ] && ok || bad "existing output not refused"
"$STETHO" diagnose "$T/base" --sae-dir "$T/saes" --domain "$T/dom.jsonl" --general "$T/gen.jsonl" --quiet --metric topk_contrast \
  --force -o "$T/s2.json" >/dev/null 2>&1 && grep -q '"metric": "topk_contrast"' "$T/s2.json" && ok || bad "--metric"

# --- the scores feed `stetho project --scores` unchanged
"$STETHO" diff "$T/base" "$T/ft" -o "$T/tv.safetensors" >/dev/null && ok || bad "diff"
out=$("$STETHO" project --task-vector "$T/tv.safetensors" --sae-dir "$T/saes" --scores "$T/scores.json" --features 1 -o "$T/p.safetensors" 2>&1) \
  && grep -qE "^0 +1 +1 +4 " <<<"$out" && grep -qE "^2 +1 +1 +4 " <<<"$out" && ok || bad "project --scores: $out"

# --- edit --scores --top-k: the stethoscope puts tau in layer 0 only, and says so in the metadata
out=$("$STETHO" edit "$T/base" --task-vector "$T/tv.safetensors" --scores "$T/scores.json" --top-k 1 -o "$T/top1" 2>&1) && ok || bad "edit --top-k: $out"
grep -q "selected 1 layer (top 1 by specific_mass): 0" <<<"$out" && ok || bad "edit message: $out"
# ||tau|| per layer between two checkpoints (the ||tau|| column of diff's table)
taus() { "$STETHO" diff "$T/base" "$1" --stats-only | awk '$1 ~ /^[0-9]+$/ { printf "%s%s", sep, $10; sep = " " }'; }
[ "$(taus "$T/top1")" = "4 0 0" ] && ok || bad "top1 layers: $(taus "$T/top1")"
meta=$("$STETHO" inspect "$T/top1")
# FNV-1a 64 of the scores file, computed here independently
h=-3750763034362895579 # 0xcbf29ce484222325
for b in $(od -An -v -tu1 "$T/scores.json"); do h=$(( (h ^ b) * 1099511628211 )); done
hash=$(printf '%016x' "$h")
grep -q '"selection":{"method":"top","k":1,"layers":\[0\],"order":\[0\],"n_layers":3' <<<"$meta" && ok || bad "selection metadata: $meta"
grep -q "\"fnv1a64\":\"$hash\"" <<<"$meta" && grep -q '"metric":"specific_mass"' <<<"$meta" && ok || bad "scores hash $hash not in: $meta"
grep -q '"layers":\[0\],"all_layers":false,"non_layer_tensors":false' <<<"$meta" && ok || bad "edit record layers: $meta"

# --- controls and ablations
sel() { "$STETHO" edit "$T/base" --task-vector "$T/tv.safetensors" "$@" 2>&1 | grep "^selected"; }
[ "$(sel --scores "$T/scores.json" --select bottom --top-k 1 -o "$T/bot")" = "selected 1 layer (bottom 1 by specific_mass): 2" ] && ok || bad "bottom"
# norm: ||tau|| is 8 in layer 2, 4 in layer 0, 2 in layer 1
[ "$(sel --select norm --top-k 2 -o "$T/norm")" = "selected 2 layers (norm 2 by ||tau||): 2 0" ] && ok || bad "norm: $(sel --select norm --top-k 2 -o "$T/norm2")"
"$STETHO" inspect "$T/norm" | grep -q '"tau_norms":\[4' && ok || bad "norm values in metadata"
a=$(sel --select random --seed 7 --top-k 2 -o "$T/r1"); b=$(sel --select random --seed 7 --top-k 2 -o "$T/r2")
[ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "random not reproducible: '$a' vs '$b'"
"$STETHO" inspect "$T/r1" | grep -q '"method":"random","k":2,"seed":"7"' && ok || bad "random metadata"
[ "$(sel --select only:1 -o "$T/only1")" = "selected 1 layer (only:1): 1" ] && ok || bad "only:1"
[ "$(sel --select except:1 -o "$T/ex1")" = "selected 2 layers (except:1): 0 2" ] && ok || bad "except:1"
[ "$(sel --select all -o "$T/all")" = "selected 3 layers (all): 0 1 2" ] && ok || bad "all"
[ "$(taus "$T/ex1")" = "4 0 8" ] && ok || bad "except:1 edit: $(taus "$T/ex1")"

# --- refusals
expect() { # expect CODE PATTERN cmd...
  local code=$1 pat=$2; shift 2
  local err; err=$("$@" 2>&1 >/dev/null); local rc=$?
  if [ $rc -ne "$code" ]; then bad "exit $rc (want $code): $* :: $err"; return; fi
  if ! grep -q "^stetho: error: .*$pat" <<<"$err"; then bad "message for $*: $err"; return; fi
  ok
}
E=("$STETHO" edit "$T/base" --task-vector "$T/tv.safetensors")
expect 2 "only 2 of the 3 layers have a score" "${E[@]}" --scores "$T/scores.json" --top-k 3 -o "$T/x"
expect 2 "both choose layers" "${E[@]}" --scores "$T/scores.json" --top-k 1 --layers 0 -o "$T/x"
expect 2 "needs --top-k" "${E[@]}" --select random -o "$T/x"
expect 2 "give --scores" "${E[@]}" --select top --top-k 1 -o "$T/x"
expect 2 "seed goes with" "${E[@]}" --select norm --top-k 1 --seed 3 -o "$T/x"
expect 2 "unknown layer selection" "${E[@]}" --select best --top-k 1 -o "$T/x"
expect 2 "model has layers 0-2" "${E[@]}" --select only:3 -o "$T/x"
expect 1 "no score for metric 'nope'" "${E[@]}" --scores "$T/scores.json" --metric nope --top-k 1 -o "$T/x"
[ ! -e "$T/x" ] && ok || bad "a refused edit left output"
# scores of another model (one with 4 layers)
sed 's/"n_layers": 3/"n_layers": 4/' "$T/scores.json" > "$T/other.json"
expect 1 "scores for another model" "${E[@]}" --scores "$T/other.json" --top-k 1 -o "$T/x"
# ... nor does `project --scores`: layer count, then width (the task vector has no config: read off its matrices)
P=("$STETHO" project --task-vector "$T/tv.safetensors" --sae-dir "$T/saes" --features 1)
expect 1 "model with 4 layers .*but .*tv.safetensors has 3: scores for another model" "${P[@]}" --scores "$T/other.json" -o "$T/x.safetensors"
sed 's/"d_model": 4/"d_model": 8/' "$T/scores.json" > "$T/wide.json"
expect 1 "hidden size 8, but .*tv.safetensors has 4: scores for another model" "${P[@]}" --scores "$T/wide.json" -o "$T/x.safetensors"
[ ! -e "$T/x.safetensors" ] && ok || bad "a refused project left output"
D=("$STETHO" diagnose "$T/base" --quiet --sae-dir "$T/saes")
: > "$T/empty.jsonl"
expect 2 "no prompts" "${D[@]}" --domain "$T/empty.jsonl" --general "$T/gen.jsonl" -o "$T/y.json"
expect 1 "dom.jsonl:1: no string field 'text'" "${D[@]}" --field text --domain "$T/dom.jsonl" --general "$T/gen.jsonl" -o "$T/y.json"
mkdir -p "$T/badsae"; cp -r "$T/saes/layer_0" "$T/badsae/"
sed 's/"d_in":4/"d_in":3/' "$T/saes/layer_0/cfg.json" > "$T/badsae/layer_0/cfg.json"
begin; add W_enc "[3,3]" 9 "$(zeros 9)"; add W_dec "[3,3]" 9 "$(zeros 9)"; add b_enc "[3]" 3 "$(zeros 3)"; add b_dec "[3]" 3 "$(zeros 3)"
end "$T/badsae/layer_0/sae_weights.safetensors"
expect 1 "SAE d_model is 3 but the model's hidden size is 4" "$STETHO" diagnose "$T/base" --quiet --sae-dir "$T/badsae" --domain "$T/dom.jsonl" --general "$T/gen.jsonl" -o "$T/y.json"
expect 2 "unknown --metric" "${D[@]}" --metric best --domain "$T/dom.jsonl" --general "$T/gen.jsonl" -o "$T/y.json"
# K or --top-features beyond the SAEs' 3 features: an error naming d_sae and the layer (the defaults are capped)
expect 2 "K = 4 is larger than the 3 features (d_sae) of the layer 0 SAE" "${D[@]}" --k 4 --domain "$T/dom.jsonl" --general "$T/gen.jsonl" -o "$T/y.json"
expect 2 "top_features = 5 is larger than the 3 features (d_sae) of the layer 0 SAE" "${D[@]}" --top-features 5 --domain "$T/dom.jsonl" --general "$T/gen.jsonl" -o "$T/y.json"
err=$("${D[@]}" --k 4 --domain "$T/dom.jsonl" --general "$T/gen.jsonl" -o "$T/y.json" 2>&1); grep -q "hint: lower --k" <<<"$err" && ok || bad "K hint: $err"
[ ! -e "$T/y.json" ] && [ ! -e "$T/y.tsv" ] && ok || bad "a failed diagnose left output"

echo "$passes passed, $fails failed"
[ -n "${KEEP:-}" ] || rm -rf "$T"
[ $fails -eq 0 ]
