# A tiny study fixture for CLI tests (sourced after cli_lib.sh, with T set):
# a 3-layer Llama whose weights are all zero except the embeddings (so every
# layer's residual stream is the token's embedding) and q_proj, a
# word-per-letter tokenizer, SAEs for layers 0 and 2 (layer 1 has none), and
# domain/general prompt sets. Domain letters a, b live on dimension 0, general
# letters c, d on dimension 1, the word boundary on dimension 2 and BOS on
# dimension 3. Writes $T/base, $T/ft, $T/saes, $T/dom.jsonl, $T/gen.jsonl.
z=$zero

# --- a safetensors file built tensor by tensor: begin; add NAME SHAPE N DATA; end FILE
begin() { HDR=""; DAT=""; OFF=0; }
add() { local end=$((OFF + 4 * $3)); HDR+="${HDR:+,}\"$1\":{\"dtype\":\"F32\",\"shape\":$2,\"data_offsets\":[$OFF,$end]}"; DAT+=$4; OFF=$end; }
end() { st "$1" "{$HDR}" "$DAT"; }
zeros() { local s="" i; for ((i = 0; i < $1; i++)); do s+=$z; done; printf '%s' "$s"; }

# model: hidden 4, 1 head of 4, MLP 4, vocab 8, 3 layers; QLAYER sets q_proj of a layer (for the task vector)
make_model() { # make_model DIR Q0 Q1 Q2 (q_proj data of each layer)
  mkdir -p "$1"
  begin
  # embeddings: <unk> 0, <s> e3, </s> 0, ▁ e2, a e0, b 2e0, c e1, d 2e1
  add model.embed_tokens.weight "[8,4]" 32 "$(zeros 4)$z$z$z$one$(zeros 4)$z$z$one$z$one$z$z$z$two$z$z$z$z$one$z$z$z$two$z$z"
  local l q
  for l in 0 1 2; do
    case $l in 0) q=$2;; 1) q=$3;; 2) q=$4;; esac
    add "model.layers.$l.input_layernorm.weight" "[4]" 4 "$(zeros 4)"
    add "model.layers.$l.self_attn.q_proj.weight" "[4,4]" 16 "$q"
    add "model.layers.$l.self_attn.k_proj.weight" "[4,4]" 16 "$(zeros 16)"
    add "model.layers.$l.self_attn.v_proj.weight" "[4,4]" 16 "$(zeros 16)"
    add "model.layers.$l.self_attn.o_proj.weight" "[4,4]" 16 "$(zeros 16)"
    add "model.layers.$l.post_attention_layernorm.weight" "[4]" 4 "$(zeros 4)"
    add "model.layers.$l.mlp.gate_proj.weight" "[4,4]" 16 "$(zeros 16)"
    add "model.layers.$l.mlp.up_proj.weight" "[4,4]" 16 "$(zeros 16)"
    add "model.layers.$l.mlp.down_proj.weight" "[4,4]" 16 "$(zeros 16)"
  done
  add model.norm.weight "[4]" 4 "$(zeros 4)"
  end "$1/model.safetensors"
  echo '{"architectures":["LlamaForCausalLM"],"model_type":"llama","num_hidden_layers":3,"hidden_size":4,"intermediate_size":4,"num_attention_heads":1,"num_key_value_heads":1,"vocab_size":8,"max_position_embeddings":64,"rms_norm_eps":1e-6,"rope_theta":10000.0,"tie_word_embeddings":true,"hidden_act":"silu"}' > "$1/config.json"
  cat > "$1/tokenizer.json" <<'EOF'
{"version":"1.0","truncation":null,"padding":null,
 "added_tokens":[{"id":0,"content":"<unk>","special":true,"normalized":false},
                 {"id":1,"content":"<s>","special":true,"normalized":false},
                 {"id":2,"content":"</s>","special":true,"normalized":false}],
 "normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},
               {"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
 "pre_tokenizer":null,
 "post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},
                   {"Sequence":{"id":"A","type_id":0}}],"pair":[],
                   "special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},
 "decoder":null,
 "model":{"type":"BPE","dropout":null,"unk_token":"<unk>","fuse_unk":true,"byte_fallback":false,
   "vocab":{"<unk>":0,"<s>":1,"</s>":2,"▁":3,"a":4,"b":5,"c":6,"d":7},"merges":[]}}
EOF
  echo '{"bos_token":"<s>","eos_token":"</s>"}' > "$1/tokenizer_config.json"
}
Q0=$(zeros 16)
make_model "$T/base" "$Q0" "$Q0" "$Q0"
# fine-tuned: q_proj changes by 1 in layer 0 (16 ones), by 2 in layer 2, by 0.5 in layer 1
ones16=""; twos16=""; halves16=""; for i in $(seq 16); do ones16+=$one; twos16+=$two; halves16+=$half; done
make_model "$T/ft" "$ones16" "$halves16" "$twos16"

# SAEs (SAELens standard, d_in 4, d_sae 3): W_enc [4, 3] rows = residual dims, W_dec [3, 4]
sae() { # sae DIR LAYER W_ENC W_DEC
  mkdir -p "$1"; begin
  add W_enc "[4,3]" 12 "$3"; add W_dec "[3,4]" 12 "$4"; add b_enc "[3]" 3 "$(zeros 3)"; add b_dec "[4]" 4 "$(zeros 4)"
  end "$1/sae_weights.safetensors"
  echo "{\"architecture\":\"standard\",\"d_in\":4,\"d_sae\":3,\"hook_name\":\"blocks.$2.hook_resid_post\"}" > "$1/cfg.json"
}
# layer 0: f0 = dim 0 (domain letters), f1 = dim 1 (general letters), f2 = dim 2 (word boundary, both sets)
sae "$T/saes/layer_0" 0 "$one$z$z$z$one$z$z$z$one$z$z$z" "$one$z$z$z$z$one$z$z$z$z$one$z"
# layer 2: f0 = dim 2 (both), f1 = dims 0 + 1 (every letter, both sets alike), f2 = dim 3 (BOS only: never counted)
sae "$T/saes/layer_2" 2 "$z$one$z$z$one$z$one$z$z$z$z$one" "$z$z$one$z$one$one$z$z$z$z$z$one"

# prompts: the domain set uses the MATH-style "problem" field, the general one "text"
printf '%s\n' '{"problem":"a b"}' '{"problem":"b a a"}' '{"problem":"a"}' > "$T/dom.jsonl"
printf '%s\n' '{"text":"c d"}' '{"text":"d c c"}' '{"text":"c"}' > "$T/gen.jsonl"

