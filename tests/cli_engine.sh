#!/usr/bin/env bash
# The engine's commands end to end on ../shared's reference Gemma 3 model with a
# byte tokenizer: stetho generate (greedy output independent of threads, --stop
# cuts, --chat, seeded sampling, usage errors) and stetho capture --input.
set -u
S="$1"; here=$(cd "$(dirname "$0")" && pwd)
. "$here/util/cli_lib.sh"
REF="$here/../../shared/reference/models/gemma3-4l-swa2-bf16"
[ -d "$REF" ] || { echo "skipping: ../shared/reference/models not found"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
cp "$REF/config.json" "$REF/model.safetensors" "$T/"
byte_tokenizer "$T"

out1=$("$S" generate "$T" --prompt "Problem: 2 + 3" --max-tokens 12 --quiet) || bad "generate failed"
out2=$("$S" generate "$T" --prompt "Problem: 2 + 3" --max-tokens 12 --quiet --threads 1) || bad "generate --threads 1 failed"
[ -n "$out1" ] && [ "$out1" = "$out2" ] && ok || bad "greedy output differs with the thread count: '$out1' vs '$out2'"
# the summary counts tokens: BOS + 14 bytes, each space a 3-byte ▁
"$S" generate "$T" --prompt "Problem: 2 + 3" --max-tokens 5 2>"$T/err" >/dev/null
grep -q '^\[21 prompt tokens, [0-9]* new tokens' "$T/err" && ok || bad "summary: $(cat "$T/err")"
# --stop: the first character of the greedy output's second half ends it early
full=$("$S" generate "$T" --prompt "abc" --max-tokens 40 --quiet)
stop=${full:20:1}
if [ -n "$stop" ]; then
    cut=$("$S" generate "$T" --prompt "abc" --max-tokens 40 --stop "$stop" --quiet)
    [ "$cut" = "${full%%"$stop"*}" ] && ok || bad "--stop '$stop': got '$cut', want '${full%%"$stop"*}'"
fi
# --chat: renders and generates
"$S" generate "$T" --prompt "hi" --chat --max-tokens 3 --quiet >/dev/null && ok || bad "--chat failed"
# sampling is deterministic per seed
a=$("$S" generate "$T" --prompt "x" --temperature 1 --seed 3 --max-tokens 20 --quiet)
b=$("$S" generate "$T" --prompt "x" --temperature 1 --seed 3 --max-tokens 20 --quiet)
[ "$a" = "$b" ] && ok || bad "sampling with one seed differs"
# usage errors
# --compute bf16: generates, deterministically; a bad mode is a usage error naming it
c1=$("$S" generate "$T" --prompt "Problem: 2 + 3" --max-tokens 12 --quiet --compute bf16) || bad "--compute bf16 failed"
c2=$("$S" generate "$T" --prompt "Problem: 2 + 3" --max-tokens 12 --quiet --compute bf16 --threads 1) || bad "--compute bf16 --threads 1 failed"
[ -n "$c1" ] && [ "$c1" = "$c2" ] && ok || bad "--compute bf16 output empty or thread-dependent"
"$S" generate "$T" --prompt x --compute fp8 >/dev/null 2>"$T/err"; [ $? -eq 2 ] && grep -q "fp8" "$T/err" && ok || bad "--compute fp8 should exit 2 naming it"
"$S" perplexity "$T" --input /dev/null --compute >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "--compute without a value should exit 2"
"$S" generate "$T" >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "missing --prompt should exit 2"
"$S" generate "$T" --prompt x --top-p 0 >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "--top-p 0 should exit 2"
"$S" generate "$T/nope" --prompt x >/dev/null 2>"$T/err"; [ $? -eq 1 ] && grep -q "stetho: error" "$T/err" && ok || bad "missing model"
# capture --input: two prompts concatenated, with offsets
printf '{"text":"ab"}\n{"text":"xyz"}\n' > "$T/p.jsonl"
"$S" capture "$T" --input "$T/p.jsonl" --hooks 'blocks.*.hook_resid_post' -o "$T/acts.safetensors" > "$T/out" &&
    grep -q "2 prompts, 7 tokens" "$T/out" && ok || bad "capture --input: $(cat "$T/out")"
"$S" inspect "$T/acts.safetensors" > "$T/ins" 2>&1
grep -q "prompt_offsets" "$T/ins" && grep -q "blocks.3.hook_resid_post" "$T/ins" && ok || bad "capture --input tensors: $(cat "$T/ins")"
printf '{"text":"ab"}\n{"txt":"x"}\n' > "$T/bad.jsonl"
"$S" capture "$T" --input "$T/bad.jsonl" --hooks 'blocks.0.hook_resid_post' -o "$T/b.safetensors" 2>"$T/err"
[ $? -eq 1 ] && grep -q "bad.jsonl:2" "$T/err" && [ ! -e "$T/b.safetensors" ] && ok || bad "capture --input bad line: $(cat "$T/err")"
echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
