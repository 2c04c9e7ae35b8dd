#!/usr/bin/env bash
# CLI tests for inspect / diff / edit: outputs, exit codes (0 ok, 1 failure,
# 2 usage), one-line errors, and no partial output on failure. Fixtures are tiny
# safetensors files written byte by byte below.
set -u
STETHO=${1:?usage: cli_checkpoint.sh path/to/stetho}
T=${STETHO_TMP:-/tmp}/cli-checkpoint-$$
rm -rf "$T"; mkdir -p "$T"
source "$(dirname "$0")/util/cli_lib.sh"
H='{"__metadata__":{"format":"pt"},'
H+='"model.layers.0.self_attn.q_proj.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
H+='"model.layers.0.mlp.up_proj.weight":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},'
H+='"model.layers.1.self_attn.q_proj.weight":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},'
H+='"model.norm.weight":{"dtype":"F32","shape":[2],"data_offsets":[24,32]}}'
cfg='{"architectures":["LlamaForCausalLM"],"model_type":"llama","num_hidden_layers":2,"hidden_size":2,"intermediate_size":2,"num_attention_heads":1,"vocab_size":4}'
mkdir -p "$T/base" "$T/ft"
st "$T/base/model.safetensors" "$H" "$one$one$one$one$one$one$one$one"
st "$T/ft/model.safetensors" "$H" "$two$one$one$one$one$two$half$one"
echo "$cfg" > "$T/base/config.json"; echo "$cfg" > "$T/ft/config.json"
echo '{"bos_token":"<s>"}' > "$T/base/tokenizer_config.json"

# --- inspect
out=$("$STETHO" inspect "$T/base") && ok || bad "inspect exit $?"
grep -q "LlamaForCausalLM" <<<"$out" && grep -q "model.layers.1.self_attn.q_proj.weight" <<<"$out" && ok || bad "inspect text: $out"
out=$("$STETHO" inspect "$T/base/model.safetensors" --json) && ok || bad "inspect --json exit"
grep -q '"n_parameters": 8' <<<"$out" && grep -q '"module": "q_proj"' <<<"$out" && ok || bad "inspect json: $out"

# --- diff
out=$("$STETHO" diff "$T/base" "$T/ft" -o "$T/tv.safetensors" --json "$T/report.json") && ok || bad "diff exit"
[ -f "$T/tv.safetensors" ] && [ -f "$T/report.json" ] && ok || bad "diff outputs missing"
grep -qE '^0 +0\.7071 +- +- +- +- +0\.0000 ' <<<"$out" && ok || bad "diff table (layer 0: q 0.7071, up 0): $out"
grep -q '"energy_share"' "$T/report.json" && ok || bad "report json"
"$STETHO" inspect "$T/tv.safetensors" | grep -q "stetho_task_vector" && ok || bad "tv metadata"

# --- edit: layer 1 only; layer 0 must stay the base's
"$STETHO" edit "$T/base" --task-vector "$T/tv.safetensors" --layers 1 -o "$T/e1" >/dev/null && ok || bad "edit exit"
[ -f "$T/e1/config.json" ] && [ -f "$T/e1/tokenizer_config.json" ] && ok || bad "edit did not copy aux files"
out=$("$STETHO" diff "$T/base" "$T/e1" --stats-only) && ok || bad "diff --stats-only"
grep -qE '^0 +0\.0000 +- +- +- +- +0\.0000' <<<"$out" && ok || bad "layer 0 changed: $out"
"$STETHO" inspect "$T/e1" | grep -q '"layers":\[1\]' && ok || bad "edit metadata lacks layers"
# full edit from the fine-tuned model reproduces it exactly (f32)
"$STETHO" edit "$T/base" --finetuned "$T/ft" -o "$T/full" >/dev/null && ok || bad "edit --finetuned"
out=$("$STETHO" diff "$T/ft" "$T/full" --stats-only) && grep -q '||tau|| = 0,' <<<"$out" && ok || bad "alpha=1 != ft: $out"
"$STETHO" edit "$T/base" --finetuned "$T/ft" --alpha 0 --out-shard-size 10 -o "$T/a0" >/dev/null && ok || bad "alpha 0"
[ -f "$T/a0/model.safetensors.index.json" ] && ok || bad "no shard index"
out=$("$STETHO" diff "$T/base" "$T/a0" --stats-only) && grep -q '||tau|| = 0,' <<<"$out" && ok || bad "alpha=0 != base"

# --- errors: message format, exit codes, nothing left behind
expect() { # expect CODE PATTERN cmd...
  local code=$1 pat=$2; shift 2
  local err; err=$("$@" 2>&1 >/dev/null); local rc=$?
  if [ $rc -ne "$code" ]; then bad "exit $rc (want $code): $* :: $err"; return; fi
  if ! grep -q "^stetho: error: .*$pat" <<<"$err"; then bad "message for $*: $err"; return; fi
  ok
}
expect 2 "missing PATH" "$STETHO" inspect
expect 2 "unknown command" "$STETHO" frobnicate
expect 1 "no such file" "$STETHO" inspect "$T/nope"
expect 2 "unknown option" "$STETHO" diff "$T/base" "$T/ft" --bogus
expect 2 "dtype" "$STETHO" diff "$T/base" "$T/ft" -o "$T/x.safetensors" --dtype f8
expect 1 "already exists" "$STETHO" edit "$T/base" --finetuned "$T/ft" -o "$T/e1"
expect 2 "out of range" "$STETHO" edit "$T/base" --finetuned "$T/ft" --layers 5 -o "$T/e5"
expect 2 "bad layer selection" "$STETHO" edit "$T/base" --finetuned "$T/ft" --layers 1-x -o "$T/e5"
expect 2 "unknown module" "$STETHO" edit "$T/base" --finetuned "$T/ft" --modules ffn -o "$T/e5"
expect 2 "exactly one" "$STETHO" edit "$T/base" -o "$T/e5"
expect 2 "overwrite an input" "$STETHO" edit "$T/base" --finetuned "$T/ft" -o "$T/base" --force
[ ! -e "$T/e5" ] && ok || bad "partial output after a refused edit"

# mismatched pair: the tensor is named and nothing is written
H2='{"model.layers.0.self_attn.q_proj.weight":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}}'
st "$T/other.safetensors" "$H2" "$one$one"
expect 1 "model.layers.0.self_attn.q_proj.weight' has shape \[2\]" "$STETHO" diff "$T/base" "$T/other.safetensors" -o "$T/m.safetensors"
[ ! -e "$T/m.safetensors" ] && ok || bad "partial diff output"

# malformed files: one-line error naming the file, exit 1, never a crash
st "$T/trunc.safetensors" "$H" "$one$one"
st "$T/dtype.safetensors" '{"a":{"dtype":"X9","shape":[1],"data_offsets":[0,4]}}' "$one"
st "$T/overflow.safetensors" '{"a":{"dtype":"F32","shape":[9223372036854775807,4],"data_offsets":[0,4]}}' "$one"
printf 'abc' > "$T/tiny.safetensors"
{ le64 99999999; printf '{}'; } > "$T/pastend.safetensors"
st "$T/notjson.safetensors" '{"a":' ""
for f in trunc dtype overflow tiny pastend notjson; do
  err=$("$STETHO" inspect "$T/$f.safetensors" 2>&1 >/dev/null); rc=$?
  [ $rc -eq 1 ] && [ "$(wc -l <<<"$err")" -le 2 ] && grep -q "$f.safetensors" <<<"$err" && ok || bad "$f: rc=$rc $err"
done

# a sharded index naming a missing shard
mkdir -p "$T/sharded"; cp "$T/base/config.json" "$T/sharded/"
echo '{"weight_map":{"model.norm.weight":"model-00002-of-00002.safetensors"}}' > "$T/sharded/model.safetensors.index.json"
expect 1 "missing" "$STETHO" inspect "$T/sharded"

ls "$T" | grep -q '\.tmp\.' && bad "temporary files left: $(ls "$T")" || ok
echo "$passes passed, $fails failed"
rm -rf "$T"
[ $fails -eq 0 ]
