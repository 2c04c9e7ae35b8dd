#!/usr/bin/env bash
# CLI tests for `stetho sae train` and `stetho sae eval` on a small generated model:
# train (single hook, --layers, each architecture), what is written (SAELens files
# that `sae inspect` and `sae eval` load back), determinism, the metrics' ranges,
# and refusals (usage errors exit 2, failures exit 1, nothing overwritten).
# The model, its tokenizer and the texts come from `test_sae_train --make-cli-fixture`
# (built beside the stetho binary).
set -u
STETHO=${1:?usage: cli_sae_train.sh path/to/stetho}
T=${STETHO_TMP:-/tmp}/cli-sae-train-$$
rm -rf "$T"; mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
source "$(dirname "$0")/util/cli_lib.sh"
FIXTURE_BIN="$(dirname "$STETHO")/test_sae_train"
if [ ! -x "$FIXTURE_BIN" ]; then echo "skip: $FIXTURE_BIN (the fixture maker) is not built"; exit 77; fi
"$FIXTURE_BIN" --make-cli-fixture "$T/fix" >/dev/null || { echo "FAIL: could not make the fixture"; exit 1; }
M=$T/fix/model
S="$STETHO sae"
TH="--threads 1" # a toy model: threads only add waiting on a shared machine

# --- train one hook
out=$($S train "$M" --hook blocks.1.hook_resid_post --input "$T/fix/train.jsonl" --width 64 --k 8 --batch 128 \
      --seed 3 $TH -o "$T/a" --json "$T/a.json" 2>"$T/a.err") && ok || bad "train exit: $(cat "$T/a.err")"
[ -f "$T/a/cfg.json" ] && [ -f "$T/a/sae_weights.safetensors" ] && [ "$(ls "$T/a" | wc -l)" -eq 2 ] && ok || bad "train outputs: $(ls "$T/a")"
grep -q "held-out (.* tokens of 12 texts): explained_variance 0\.[5-9]" <<<"$out" && ok || bad "held-out report: $out"
grep -q "step .*EV" "$T/a.err" && ok || bad "no progress line: $(cat "$T/a.err")"
grep -q '"explained_variance"' "$T/a.json" && grep -q '"tokens_trained"' "$T/a.json" && ok || bad "report json"
info=$($S inspect "$T/a") && ok || bad "inspect the trained SAE"
grep -q "format: *saelens" <<<"$info" && grep -q "topk (k = 8)" <<<"$info" && grep -q "d_model: *32" <<<"$info" &&
  grep -q "d_sae: *64" <<<"$info" && grep -q "hook: *blocks.1.hook_resid_post" <<<"$info" && ok || bad "inspect: $info"

# the same seed gives the same bytes; another seed does not
$S train "$M" --hook blocks.1.hook_resid_post --input "$T/fix/train.jsonl" --width 64 --k 8 --batch 128 --seed 3 \
  $TH -o "$T/a2" --quiet >/dev/null && cmp -s "$T/a/sae_weights.safetensors" "$T/a2/sae_weights.safetensors" && ok || bad "not deterministic"
$S train "$M" --hook blocks.1.hook_resid_post --input "$T/fix/train.jsonl" --width 64 --k 8 --batch 128 --seed 4 \
  $TH -o "$T/a3" --quiet >/dev/null && ! cmp -s "$T/a/sae_weights.safetensors" "$T/a3/sae_weights.safetensors" && ok || bad "seed ignored"

# --- eval: the metrics are in range; a k-sparse SAE has l0 <= k
js=$($S eval "$M" "$T/a" --input "$T/fix/eval.jsonl" --json $TH) && ok || bad "eval exit"
num() { grep -o "\"$1\": [-0-9.e]*" <<<"$js" | head -1 | awk '{print $2}'; }
for key in l0 mse explained_variance cossim dead_features dense_features ce_loss_score kl_div_score ce_loss_without_sae; do
  [ -n "$(num $key)" ] || bad "eval json lacks $key: $js"
done
awk -v l0="$(num l0)" -v ev="$(num explained_variance)" -v ce="$(num ce_loss_score)" -v kl="$(num kl_div_score)" \
  -v cs="$(num cossim)" 'BEGIN { exit !(l0 > 0 && l0 <= 8 && ev > 0.5 && ev <= 1 && ce > 0.5 && ce <= 1.05 && kl > 0.5 && kl <= 1 && cs > 0.8) }' &&
  ok || bad "metrics out of range: $js"
txt=$($S eval "$M" "$T/a" --input "$T/fix/eval.jsonl" --max-tokens 200 --no-downstream $TH) && ok || bad "eval text"
grep -qE "^  explained_variance +0\." <<<"$txt" && grep -q "from 2 prompts" <<<"$txt" && ! grep -q ce_loss <<<"$txt" && ok || bad "eval text: $txt"

# --- several layers in one pass, each architecture; eval finds every layer's SAE
for arch in relu jumprelu; do
  $S train "$M" --layers 0-1 --input "$T/fix/train.jsonl" --width 48 --arch $arch --batch 64 --tokens 8K $TH \
    -o "$T/$arch" --quiet >"$T/$arch.out" && ok || bad "train --layers --arch $arch"
  [ -f "$T/$arch/layer_0/cfg.json" ] && [ -f "$T/$arch/layer_1/sae_weights.safetensors" ] && ok || bad "layer dirs for $arch"
  grep -q "8000 tokens" "$T/$arch.out" && ok || bad "--tokens 8K: $(cat "$T/$arch.out")"
done
$S inspect "$T/jumprelu/layer_0" | grep -q "jumprelu" && ok || bad "jumprelu layer_0"
txt=$($S eval "$M" "$T/relu" --input "$T/fix/eval.jsonl" --max-tokens 300 $TH) && ok || bad "eval a layer directory"
grep -q "^blocks.0.hook_resid_post" <<<"$txt" && grep -q "^blocks.1.hook_resid_post" <<<"$txt" && ok || bad "eval layers: $txt"
# a budget beyond the data reads it again
$S train "$M" --hook blocks.0.hook_mlp_out --input "$T/fix/train.jsonl" --width 32 --batch 256 --tokens 40K $TH \
  -o "$T/long" 2>"$T/long.err" >/dev/null && grep -q "pass 2" "$T/long.err" && ok || bad "second pass: $(cat "$T/long.err")"

# --- refusals
$S train "$M" --hook blocks.1.hook_resid_post --input "$T/fix/train.jsonl" --width 64 -o "$T/a" $TH 2>"$T/e"; rc=$?
[ $rc -eq 1 ] && grep -q "already holds an SAE" "$T/e" && cmp -s "$T/a/sae_weights.safetensors" "$T/a2/sae_weights.safetensors" && ok || bad "overwrite: rc=$rc $(cat "$T/e")"
$S train "$M" --hook blocks.1.hook_resid_post --input "$T/fix/train.jsonl" --width 64 --arch gated -o "$T/x" 2>/dev/null; [ $? -eq 2 ] && ok || bad "--arch gated: want 2"
$S train "$M" --hook blocks.1.hook_resid_post --input "$T/fix/train.jsonl" -o "$T/x" 2>/dev/null; [ $? -eq 2 ] && ok || bad "no --width: want 2"
$S train "$M" --hook blocks.1.hook_resid_post --input "$T/fix/train.jsonl" --width 8 --k 9 -o "$T/x" 2>/dev/null; [ $? -eq 2 ] && ok || bad "k > width: want 2"
err=$($S train "$M" --hook blocks.5.hook_resid_post --input "$T/fix/train.jsonl" --width 8 -o "$T/x" 2>&1); [ $? -eq 2 ] && grep -q "layers 0-1" <<<"$err" && ok || bad "layer 5: $err"
err=$($S train "$M" --layers 0,7 --input "$T/fix/train.jsonl" --width 8 -o "$T/x" 2>&1); [ $? -eq 2 ] && grep -q "layer 7" <<<"$err" && ok || bad "--layers 0,7: $err"
printf '{"text": "fine"}\n{"txt": "no text field"}\n' > "$T/bad.jsonl"
err=$($S train "$M" --hook blocks.0.hook_resid_post --input "$T/bad.jsonl" --width 8 --k 2 -o "$T/x" $TH 2>&1); [ $? -eq 1 ] && grep -q "bad.jsonl:2" <<<"$err" && [ ! -e "$T/x/cfg.json" ] && ok || bad "missing text field: $err"
err=$($S eval "$M" "$T/fix" --input "$T/fix/eval.jsonl" 2>&1); [ $? -eq 1 ] && ok || bad "eval without an SAE: $err"
mkdir -p "$T/wide" && cp "$T/a/sae_weights.safetensors" "$T/wide/" && sed 's/blocks.1.hook_resid_post/blocks.9.hook_resid_post/' "$T/a/cfg.json" > "$T/wide/cfg.json"
err=$($S eval "$M" "$T/wide" --input "$T/fix/eval.jsonl" 2>&1); [ $? -eq 1 ] && grep -q "outside the model's layers" <<<"$err" && ok || bad "eval hook outside: $err"
$S eval "$M" "$T/wide" --input "$T/fix/eval.jsonl" --hook blocks.0.hook_resid_post --no-downstream $TH >/dev/null && ok || bad "--hook override"

# an SAE of another model (the tiny world's: d_model 128 against this model's 32)
WS=$(dirname "$0")/../world/saes/layer_1
if [ -f "$WS/cfg.json" ]; then
  err=$($S eval "$M" "$WS" --input "$T/fix/eval.jsonl" --no-downstream $TH 2>&1); rc=$?
  [ $rc -eq 1 ] && grep -q "d_model 128 does not match the model's hidden size 32" <<<"$err" &&
    grep -q "trained on another model" <<<"$err" && ! grep -q "set the hook" <<<"$err" && ok || bad "d_model mismatch: rc=$rc $err"
fi
# --l1: a larger sparsity coefficient gives a sparser ReLU SAE on the same data
for c in 0.01 3; do
  $S train "$M" --hook blocks.1.hook_resid_post --input "$T/fix/train.jsonl" --width 48 --arch relu --l1 $c --batch 64 \
    --tokens 12K --seed 5 $TH -o "$T/l1-$c" --quiet >/dev/null || bad "train --l1 $c"
done
l0() { $S eval "$M" "$T/l1-$1" --input "$T/fix/eval.jsonl" --json --no-downstream $TH | jq -r '.. | objects | select(has("l0")) | .l0' | head -1; }
lo=$(l0 0.01); hi=$(l0 3)
awk -v a="$lo" -v b="$hi" 'BEGIN { exit !(a + 0 > b + 0 && b + 0 >= 0) }' && ok || bad "--l1: l0 at 0.01 = $lo, at 3 = $hi (want fewer active at 3)"

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
