#!/usr/bin/env bash
# stetho tokenize / detokenize on a small generated SentencePiece-style tokenizer.json:
# --text and --input, --no-special / --skip-special, round trips, and clean failures
# (usage errors exit 2, bad files and ids exit 1 with "stetho: error:"). With the shared
# data present, also spot-checks Gemma 3 against reference ids.
set -u
STETHO=$1
TMP=$(mktemp -d "${STETHO_TMP:-/tmp}/cli_tokenize.XXXXXX" 2>/dev/null || mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

mkdir -p "$TMP/model"
cat > "$TMP/model/tokenizer.json" <<'EOF'
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
 "decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},
            {"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
 "model":{"type":"BPE","dropout":null,"unk_token":"<unk>","fuse_unk":true,"byte_fallback":true,
   "vocab":{"<unk>":0,"<s>":1,"</s>":2,"<0x0A>":3,"▁":4,"h":5,"e":6,"l":7,"o":8,"▁h":9,"ll":10,
            "▁he":11,"llo":12,"▁hello":13,"w":14,"r":15,"d":16},
   "merges":["▁ h","l l","▁h e","ll o","▁he llo"]}}
EOF
echo '{"bos_token":"<s>","eos_token":"</s>"}' > "$TMP/model/tokenizer_config.json"

# --text: a JSON array, BOS unless --no-special; PATH may be the directory or the file
out=$("$STETHO" tokenize "$TMP/model" --text "hello world") || fail "tokenize --text"
[ "$out" = "[1,13,4,14,8,15,7,16]" ] || fail "tokenize --text gave $out"
out=$("$STETHO" tokenize "$TMP/model/tokenizer.json" --text "hello" --no-special) || fail "tokenize --no-special"
[ "$out" = "[13]" ] || fail "tokenize --no-special gave $out"

# --input: each object comes back with "ids" added, other fields kept
printf '%s\n' '{"id":"a","text":"hello"}' '' '{"text":"hello\nworld","n":3}' > "$TMP/in.jsonl"
"$STETHO" tokenize "$TMP/model" --input "$TMP/in.jsonl" > "$TMP/ids.jsonl" || fail "tokenize --input"
expected='{"id":"a","text":"hello","ids":[1,13]}
{"text":"hello\nworld","n":3,"ids":[1,13,3,14,8,15,7,16]}'
[ "$(cat "$TMP/ids.jsonl")" = "$expected" ] || fail "tokenize --input gave: $(cat "$TMP/ids.jsonl")"

# detokenize: --ids and --input (the round trip gives the texts back)
out=$("$STETHO" detokenize "$TMP/model" --ids 1,13,3,14,8,15,7,16) || fail "detokenize --ids"
[ "$out" = "<s> hello
world" ] || fail "detokenize --ids gave '$out'"
out=$("$STETHO" detokenize "$TMP/model" --ids 1,13 --skip-special) || fail "detokenize --skip-special"
[ "$out" = "hello" ] || fail "detokenize --skip-special gave '$out'"
"$STETHO" detokenize "$TMP/model" --input "$TMP/ids.jsonl" --skip-special > "$TMP/back.jsonl" || fail "detokenize --input"
expected='{"id":"a","text":"hello","ids":[1,13]}
{"text":"hello\nworld","n":3,"ids":[1,13,3,14,8,15,7,16]}'
[ "$(cat "$TMP/back.jsonl")" = "$expected" ] || fail "detokenize --input gave: $(cat "$TMP/back.jsonl")"

# failures: usage errors exit 2, bad data exits 1, both with "stetho: error:"
expect_fail() { # code, then the command
    local want=$1; shift
    "$@" > "$TMP/out" 2> "$TMP/err"
    local rc=$?
    [ $rc -eq "$want" ] || fail "exit $rc (wanted $want): $*; stderr: $(cat "$TMP/err")"
    grep -q "stetho: error:" "$TMP/err" || fail "no error message: $*"
}
expect_fail 2 "$STETHO" tokenize "$TMP/model"
expect_fail 2 "$STETHO" tokenize "$TMP/model" --text a --input "$TMP/in.jsonl"
expect_fail 2 "$STETHO" tokenize --text a
expect_fail 2 "$STETHO" tokenize "$TMP/model" --text a --bogus
expect_fail 2 "$STETHO" detokenize "$TMP/model" --ids 1,x
expect_fail 2 "$STETHO" detokenize "$TMP/model" --ids 1,
expect_fail 2 "$STETHO" detokenize "$TMP/model" --ids 1,17 # an argument out of range: usage
grep -q "not in the vocabulary" "$TMP/err" || fail "id 17: $(cat "$TMP/err")"
expect_fail 1 "$STETHO" tokenize "$TMP/nonexistent" --text a
echo '{"model":{"type":"WordPiece","vocab":{"a":0}}}' > "$TMP/wp.json"
expect_fail 1 "$STETHO" tokenize "$TMP/wp.json" --text a
grep -q "WordPiece" "$TMP/err" || fail "WordPiece: $(cat "$TMP/err")"
echo '{"model": {"type": "BPE", "vocab": {' > "$TMP/trunc.json"
expect_fail 1 "$STETHO" tokenize "$TMP/trunc.json" --text a
echo '{"texte":"x"}' > "$TMP/nofield.jsonl"
expect_fail 1 "$STETHO" tokenize "$TMP/model" --input "$TMP/nofield.jsonl"
echo '{"ids":[1,99]}' > "$TMP/badids.jsonl"
expect_fail 1 "$STETHO" detokenize "$TMP/model" --input "$TMP/badids.jsonl"
grep -q "badids.jsonl:1" "$TMP/err" || fail "bad ids line: $(cat "$TMP/err")"
echo 'not json' > "$TMP/notjson.jsonl"
expect_fail 1 "$STETHO" tokenize "$TMP/model" --input "$TMP/notjson.jsonl"
"$STETHO" tokenize --help | grep -q "usage: stetho tokenize" || fail "tokenize --help"
"$STETHO" detokenize --help | grep -q "usage: stetho detokenize" || fail "detokenize --help"

# Gemma 3 spot check against the reference ids (README: "<bos>" encodes to [2, 2])
SHARED=${STETHO_SHARED:-}
if [ -n "$SHARED" ] && [ -f "$SHARED/tokenizers/gemma3/tokenizer.json" ]; then
    out=$("$STETHO" tokenize "$SHARED/tokenizers/gemma3" --text "<bos>") || fail "gemma3 tokenize"
    [ "$out" = "[2,2]" ] || fail "gemma3 <bos> gave $out"
    out=$("$STETHO" tokenize "$SHARED/tokenizers/gemma3" --text "<bos>" --no-special) || fail "gemma3 tokenize"
    [ "$out" = "[2]" ] || fail "gemma3 <bos> --no-special gave $out"
    out=$("$STETHO" detokenize "$SHARED/tokenizers/gemma3" --ids "$("$STETHO" tokenize "$SHARED/tokenizers/gemma3" \
        --text 'x² + 1 = 0 → 你好' --no-special | tr -d '[]')") || fail "gemma3 round trip"
    [ "$out" = 'x² + 1 = 0 → 你好' ] || fail "gemma3 round trip gave '$out'"
else
    echo "shared data not found: skipping the Gemma 3 spot check"
fi
echo "cli_tokenize: all checks passed"
