#!/usr/bin/env bash
# CLI tests for `stetho sae inspect|encode` and `stetho project`, on fixtures
# written byte by byte: a 2-dimensional residual stream, a 3-feature SAELens SAE.
set -u
STETHO=${1:?usage: cli_sae.sh path/to/stetho}
T=${STETHO_TMP:-/tmp}/cli-sae-$$
rm -rf "$T"; mkdir -p "$T"
source "$(dirname "$0")/util/cli_lib.sh"
z=$zero

# SAE: W_enc [2,3] = [[1,0,1],[0,1,1]], W_dec [3,2] = [[1,0],[0,1],[1,0]] (feature 2 repeats feature 0's direction)
mkdir -p "$T/saes/layer_0"
H='{"W_enc":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"W_dec":{"dtype":"F32","shape":[3,2],"data_offsets":[24,48]},'
H+='"b_enc":{"dtype":"F32","shape":[3],"data_offsets":[48,60]},"b_dec":{"dtype":"F32","shape":[2],"data_offsets":[60,68]}}'
st "$T/saes/layer_0/sae_weights.safetensors" "$H" "$one$z$one$z$one$one$one$z$z$one$one$z$z$z$z$z$z"
echo '{"architecture":"standard","d_in":2,"d_sae":3,"hook_name":"blocks.0.hook_resid_post"}' > "$T/saes/layer_0/cfg.json"

out=$("$STETHO" sae inspect "$T/saes/layer_0") && ok || bad "sae inspect exit"
grep -q "saelens" <<<"$out" && grep -q "d_sae: *3" <<<"$out" && grep -q "blocks.0.hook_resid_post" <<<"$out" && ok || bad "inspect: $out"

# activations for two tokens: (1, 2) and (-1, 0.5)
A='{"blocks.0.hook_resid_post":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}'
st "$T/acts.safetensors" "$A" "$one$two$neg$half"
"$STETHO" sae encode "$T/saes/layer_0" --input "$T/acts.safetensors" -o "$T/f.safetensors" --top 2 --reconstruct >/dev/null && ok || bad "encode"
out=$("$STETHO" inspect "$T/f.safetensors") || bad "inspect features"
grep -qE "top_indices +I32 +\[2, 2\]" <<<"$out" && grep -qE "reconstruction +F32 +\[2, 2\]" <<<"$out" && ok || bad "encode outputs: $out"
# token 0: pre = (1, 2, 3) -> top 2 = features 2 (3.0) then 1 (2.0): bytes of I32 2 and 1 lead the data section
hl=$(od -An -t u8 -N8 "$T/f.safetensors" | tr -d ' ')
first=$(od -An -t d4 -j $((8 + hl)) -N8 "$T/f.safetensors" | tr -s ' ')
[ "$first" = " 2 1" ] && ok || bad "top features of token 0: '$first'"
"$STETHO" sae encode "$T/saes/layer_0" --input "$T/acts.safetensors" -o "$T/f2.safetensors" --tensor nope 2>/dev/null; [ $? -eq 1 ] && ok || bad "missing --tensor not refused"

# task vector on a one-layer model: q_proj [2, 2] reads the residual, o_proj [2, 2] writes it
M='{"model.layers.0.self_attn.q_proj.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},'
M+='"model.layers.0.self_attn.o_proj.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[16,32]},'
M+='"model.layers.0.input_layernorm.weight":{"dtype":"F32","shape":[2],"data_offsets":[32,40]}}'
mkdir -p "$T/base"
st "$T/base/model.safetensors" "$M" "$z$z$z$z$z$z$z$z$one$one"
st "$T/tv.safetensors" "$M" "$one$two$one$two$one$one$two$two$half$half"
echo '{"0": [0, 2]}' > "$T/feats.json"
out=$("$STETHO" project --task-vector "$T/tv.safetensors" --sae-dir "$T/saes" --features-file "$T/feats.json" -o "$T/p.safetensors" --json "$T/p.json") && ok || bad "project exit: $out"
# span = e0 (rank 1): q' = q P keeps column 0 -> (1,0,1,0); o' = P o keeps row 0 -> (1,1,0,0)
grep -qE "^0 +2 +1 +2 " <<<"$out" && ok || bad "project table (k 2, rank 1): $out"
# the --json report: q (1,2,1,2) keeps 2 of its 10, o (1,1,2,2) 2 of 10; the norm (0.25 + 0.25)
# is left out, so 4 of the whole 20.5 remain (0.1951219)
near() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; exit !(d < 1e-6 && d > -1e-6) }'; }
if command -v jq >/dev/null; then
  j() { jq -r "$1" "$T/p.json"; }
  near "$(j .energy_retained_projected)" 0.2 && near "$(j .random_subspace_expectation)" 0.5 \
    && near "$(j .energy_retained_total)" 0.1951219 && near "$(j .tau_energy_total)" 20.5 \
    && ok || bad "project json totals: $(cat "$T/p.json")"
  [ "$(j '.layers | length')" = 1 ] && [ "$(j '.layers[0] | [.layer, .k, .rank, .d_model] | @csv')" = "0,2,1,2" ] \
    && near "$(j '.layers[0].energy_retained')" 0.2 && near "$(j '.layers[0].random_expectation')" 0.5 \
    && ok || bad "project json layers: $(j .layers)"
  [ "$(j '[.tensors[] | .module] | sort | @csv')" = '"o_proj","q_proj"' ] \
    && [ "$(j '[.tensors[] | .energy_before] | add')" = 20 ] && near "$(j '.tensors[0].energy_retained')" 0.2 \
    && ok || bad "project json tensors: $(j .tensors)"
else
  grep -q '"random_subspace_expectation": 0.5' "$T/p.json" && grep -q '"energy_retained_total"' "$T/p.json" \
    && grep -q '"tensors"' "$T/p.json" && ok || bad "project json"
fi
out=$("$STETHO" diff "$T/base" "$T/p.safetensors" --stats-only --allow-missing 2>&1) || true
"$STETHO" edit "$T/base" --task-vector "$T/p.safetensors" -o "$T/edited" >/dev/null && ok || bad "edit with projected tv"
hl=$(od -An -t u8 -N8 "$T/p.safetensors" | tr -d ' ')
vals=$(od -An -t f4 -j $((8 + hl)) -N32 "$T/p.safetensors" | tr -s ' ' | tr '\n' ' ')
[ "$(echo $vals)" = "1 0 1 0 1 1 0 0" ] && ok || bad "projected values: $vals"

# refusals
"$STETHO" project --task-vector "$T/tv.safetensors" --sae-dir "$T/saes" -o "$T/x.safetensors" 2>/dev/null; [ $? -eq 2 ] && ok || bad "no selection: want exit 2"
# outputs: an existing -o or --json needs --force; an input is never overwritten, --force or not
P=("$STETHO" project --task-vector "$T/tv.safetensors" --sae-dir "$T/saes" --features-file "$T/feats.json")
sum_tv=$(cksum < "$T/tv.safetensors"); sum_p=$(cksum < "$T/p.safetensors"); sum_j=$(cksum < "$T/p.json")
err=$("${P[@]}" -o "$T/p.safetensors" 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "p.safetensors already exists" <<<"$err" && grep -q "hint: add --force" <<<"$err" && ok || bad "existing -o: rc=$rc $err"
err=$("${P[@]}" -o "$T/p2.safetensors" --json "$T/p.json" 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "p.json already exists" <<<"$err" && [ ! -e "$T/p2.safetensors" ] && ok || bad "existing --json: rc=$rc $err"
[ "$(cksum < "$T/p.safetensors")" = "$sum_p" ] && [ "$(cksum < "$T/p.json")" = "$sum_j" ] && ok || bad "a refused project changed its outputs"
for force in "" --force; do
  err=$("${P[@]}" -o "$T/tv.safetensors" $force 2>&1); rc=$?
  [ $rc -eq 2 ] && grep -q "tv.safetensors is also the --task-vector input" <<<"$err" && ok || bad "-o = task vector ${force}: rc=$rc $err"
  err=$("${P[@]}" -o "$T/p3.safetensors" --json "$T/feats.json" $force 2>&1); rc=$?
  [ $rc -eq 2 ] && grep -q "feats.json is also the --features-file input" <<<"$err" && ok || bad "--json = features file ${force}: rc=$rc $err"
done
# the same file by another name (a hard link, a ./ path) is still the input
ln "$T/tv.safetensors" "$T/tv-link.safetensors"
err=$("${P[@]}" -o "$T/tv-link.safetensors" --force 2>&1); [ $? -eq 2 ] && ok || bad "hard link to the task vector: $err"
err=$(cd "$T" && "$STETHO" project --task-vector tv.safetensors --sae-dir saes --features-file feats.json -o ./tv.safetensors --force 2>&1)
[ $? -eq 2 ] && ok || bad "./tv.safetensors: $err"
sum_b=$(cksum < "$T/base/model.safetensors") # a checkpoint directory as the task vector: its shards are inputs
err=$("$STETHO" project --task-vector "$T/base" --sae-dir "$T/saes" --features-file "$T/feats.json" -o "$T/base/model.safetensors" --force 2>&1)
[ $? -eq 2 ] && grep -q "is a file of the --task-vector input" <<<"$err" && ok || bad "-o = a shard of the task vector: $err"
[ "$(cksum < "$T/tv.safetensors")" = "$sum_tv" ] && [ "$(cksum < "$T/base/model.safetensors")" = "$sum_b" ] && [ -s "$T/feats.json" ] \
  && ok || bad "an input was changed"
err=$("${P[@]}" -o "$T/p4.safetensors" --json "$T/./p4.safetensors" 2>&1); [ $? -eq 2 ] && grep -q "name the same file" <<<"$err" && ok || bad "-o = --json: $err"
# --force replaces both, each through a temporary name (none left behind)
"${P[@]}" -o "$T/p.safetensors" --json "$T/p.json" --force >/dev/null && grep -q '"tensors"' "$T/p.json" && ok || bad "--force"
ls "$T" | grep -qE "\.(tmp|staged)" && bad "temporary files left: $(ls "$T")" || ok
# a failing write of the report leaves neither output (the projection was staged)
for n in $(seq 50); do
  STETHO_FAULT_WRITE=$n "${P[@]}" -o "$T/w.safetensors" --json "$T/w.json" >/dev/null 2>&1 && break
  [ ! -e "$T/w.safetensors" ] && [ ! -e "$T/w.json" ] && ! ls "$T" | grep -qE "\.(tmp|staged)" && ok || bad "write fault $n left output: $(ls "$T")"
done
[ -e "$T/w.safetensors" ] && [ -e "$T/w.json" ] && ok || bad "project never succeeded under write faults"
echo '{"0": [7]}' > "$T/bad.json"
err=$("$STETHO" project --task-vector "$T/tv.safetensors" --sae-dir "$T/saes" --features-file "$T/bad.json" -o "$T/x.safetensors" 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "feature index 7" <<<"$err" && [ ! -e "$T/x.safetensors" ] && ok || bad "bad feature: rc=$rc $err"
echo '{"5": [0]}' > "$T/nolayer.json"
err=$("$STETHO" project --task-vector "$T/tv.safetensors" --sae-dir "$T/saes" --features-file "$T/nolayer.json" -o "$T/x.safetensors" 2>&1)
grep -q "layer 5" <<<"$err" && ok || bad "layer outside: $err"
err=$("$STETHO" sae inspect "$T" 2>&1); [ $? -eq 1 ] && grep -q "no SAE found" <<<"$err" && ok || bad "sae inspect on a non-SAE: $err"

echo "$passes passed, $fails failed"
rm -rf "$T"
[ $fails -eq 0 ]
