#!/usr/bin/env bash
# stetho eval and stetho perplexity on the shipped tiny world (world/): the
# results and samples files' shape, resuming an interrupted run to the same
# results (and refusing another model's partial file), an unknown task
# rejected before the model loads, perplexity of a few lines, and malformed
# JSONL named by file:line; an edit evaluated in memory.
set -u
S="$1"; here=$(cd "$(dirname "$0")" && pwd)
. "$here/util/cli_lib.sh"
W="$here/../world"
[ -f "$W/base/model.safetensors" ] && [ -f "$W/data/math/test.jsonl" ] || { echo "skipping: no shipped world at $W"; exit 77; }
T=$(mktemp -d "${STETHO_TMP:-/tmp}/cli-eval.XXXXXX" 2>/dev/null || mktemp -d); trap 'rm -rf "$T"' EXIT
# the world has no minerva_fewshot.json: 0 shots
E=(--tasks minerva_math_algebra --limit 2 --max-gen-toks 32 --num-fewshot 0 --data "$W/data/math" --log-samples --threads 1)

# a clean run: the lm-eval shapes
"$S" eval "$W/base" "${E[@]}" -o "$T/a" > "$T/out" 2>&1 || { cat "$T/out"; bad "eval failed"; }
res=$(ls "$T"/a/results_*.json 2>/dev/null | head -1); sam=$(ls "$T"/a/samples_minerva_math_algebra_*.jsonl 2>/dev/null | head -1)
[ -n "$res" ] && [ -n "$sam" ] && ok || bad "results or samples file missing: $(ls -A "$T/a")"
[ -z "$(ls -A "$T/a" | grep -v '^results_\|^samples_')" ] && ok || bad "left behind: $(ls -A "$T/a")"
grep -q '^minerva_math_algebra  *[0-9]  *2 ' "$T/out" && ok || bad "summary table: $(cat "$T/out")"
if command -v python3 > /dev/null && [ -n "$res" ]; then
    python3 - "$res" "$sam" <<'PY' && ok || bad "results/samples shape"
import json, math, sys
r = json.load(open(sys.argv[1]))
t = r["results"]["minerva_math_algebra"]
assert set(t) >= {"alias", "exact_match,none", "exact_match_stderr,none"}, t
assert 0 <= t["exact_match,none"] <= 1
assert r["n-samples"]["minerva_math_algebra"] == {"original": 300, "effective": 2}, r["n-samples"]
assert r["n-shot"]["minerva_math_algebra"] == 0
c = r["configs"]["minerva_math_algebra"]
assert c["output_type"] == "generate_until" and c["generation_kwargs"]["until"] == ["Problem:"]
assert c["generation_kwargs"]["max_gen_toks"] == 32 and c["generation_kwargs"]["do_sample"] is False
assert r["config"]["limit"] == 2 and r["config"]["model_args"].startswith("pretrained=")
assert r["groups"] == {} and "versions" in r and "higher_is_better" in r
lines = [json.loads(l) for l in open(sys.argv[2])]
assert [l["doc_id"] for l in lines] == [0, 1]
for l in lines:
    assert set(l) >= {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics",
                      "exact_match", "extracted", "normalized", "gold"}, sorted(l)
    assert l["arguments"]["gen_args_0"]["arg_0"].startswith("Problem:\n") and l["arguments"]["gen_args_0"]["arg_0"].endswith("\n\nSolution:")
    assert l["exact_match"] in (0, 1) and l["metrics"] == ["exact_match"]
    assert l["resps"] == [l["filtered_resps"]]
assert sum(l["exact_match"] for l in lines) / 2 == t["exact_match,none"]
PY
    # doc_id i is the data file's i-th algebra problem
    python3 - "$sam" "$W/data/math/test.jsonl" <<'PY' && ok || bad "samples doc order"
import json, sys
alg = [d for d in map(json.loads, open(sys.argv[2])) if d["subject"] == "algebra"]
for l in map(json.loads, open(sys.argv[1])):
    assert l["doc"]["problem"] == alg[l["doc_id"]]["problem"]
PY
fi

# interrupted after the first generation (the 3rd write: header, line 1, line 2
# fails), then resumed: the same samples byte for byte, the same results
STETHO_FAULT_WRITE=3 "$S" eval "$W/base" "${E[@]}" -o "$T/b" > /dev/null 2>&1
[ $? -eq 1 ] && [ -s "$T/b/.samples_minerva_math_algebra.partial.jsonl" ] && ok || bad "interrupted run left no partial file"
"$S" eval "$W/base" "${E[@]}" -o "$T/b" > /dev/null 2> "$T/err" || { cat "$T/err"; bad "resumed run failed"; }
grep -q "note: minerva_math_algebra: resuming from .*1 of 2 generations reused" "$T/err" && ok || bad "resume note: $(cat "$T/err")"
[ ! -e "$T/b/.samples_minerva_math_algebra.partial.jsonl" ] && ok || bad "partial file left after success"
cmp -s "$sam" "$(ls "$T"/b/samples_*.jsonl | head -1)" && ok || bad "resumed samples differ"
strip() { grep -v '"date"\|timestamp' "$1"; }
[ "$(strip "$res")" = "$(strip "$(ls "$T"/b/results_*.json | head -1)")" ] && ok || bad "resumed results differ"
# another model's partial file is not reused, and the note says why
STETHO_FAULT_WRITE=3 "$S" eval "$W/base" "${E[@]}" -o "$T/c" > /dev/null 2>&1
"$S" eval "$W/ft" "${E[@]}" -o "$T/c" > /dev/null 2> "$T/err" || bad "eval of ft over base's partial failed"
grep -q "not resuming from .*model (was" "$T/err" && ok || bad "other model's partial: $(cat "$T/err")"

# an edit evaluated in memory (--task-vector, as 'stetho edit' takes it): the
# same weights as the checkpoint 'stetho edit' writes, byte for byte, since a
# partial run of one resumes from the other (the resume header holds the
# weights' fingerprint), while base's partial run is refused by it
"$S" diff "$W/base" "$W/ft" -o "$T/tv.safetensors" > /dev/null 2>&1 || bad "diff for the edit"
"$S" edit "$W/base" --task-vector "$T/tv.safetensors" --layers 4,6 --alpha 0.5 -o "$T/ed" > /dev/null || bad "edit"
EDIT=(--task-vector "$T/tv.safetensors" --layers 4,6 --alpha 0.5)
STETHO_FAULT_WRITE=3 "$S" eval "$W/base" "${EDIT[@]}" "${E[@]}" -o "$T/m" > /dev/null 2>&1
[ $? -eq 1 ] && [ -s "$T/m/.samples_minerva_math_algebra.partial.jsonl" ] && ok || bad "interrupted in-memory eval left no partial file"
"$S" eval "$T/ed" "${E[@]}" -o "$T/m" > /dev/null 2> "$T/err" || bad "eval of the written edit failed"
grep -q "resuming from .*1 of 2 generations reused" "$T/err" && ok || bad "written edit vs in-memory partial: $(cat "$T/err")"
STETHO_FAULT_WRITE=3 "$S" eval "$W/base" "${E[@]}" -o "$T/n" > /dev/null 2>&1
"$S" eval "$W/base" "${EDIT[@]}" "${E[@]}" -o "$T/n" > "$T/out" 2> "$T/err" || { cat "$T/err"; bad "in-memory eval failed"; }
grep -q "not resuming from .*model (was" "$T/err" && ok || bad "base's partial reused by the edit: $(cat "$T/err")"
res=$(ls "$T"/n/results_*.json 2>/dev/null | head -1)
grep -q '"model_args": "pretrained=[^"]*,task_vector=[^"]*tv.safetensors,alpha=0.5,modules=all,layers=4;6"' "$res" \
  && ok || bad "model_args: $(grep model_args "$res")"
[ -z "$(ls -A "$T/n" | grep -v '^results_\|^samples_')" ] && ok || bad "in-memory eval left: $(ls -A "$T/n")"
"$S" eval "$W/base" --layers 4 "${E[@]}" -o "$T/o" > /dev/null 2> "$T/err"; rc=$?
[ $rc -eq 2 ] && grep -q "need --task-vector TV or --finetuned FT" "$T/err" && ok || bad "--layers alone: exit $rc, $(cat "$T/err")"
"$S" eval "$W/base" --task-vector "$T/tv.safetensors" --layers 99 "${E[@]}" -o "$T/o" > /dev/null 2> "$T/err"; rc=$?
[ $rc -eq 2 ] && ok || bad "--layers 99: exit $rc, $(cat "$T/err")"

# an unknown task fails as a usage error before anything loads (the model path
# does not even exist), naming the valid tasks
start=$(date +%s%N)
"$S" eval "$T/no-such-model" --tasks minerva_math_calculus -o "$T/d" > /dev/null 2> "$T/err"; rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ $rc -eq 2 ] && grep -q "unknown task 'minerva_math_calculus'" "$T/err" && grep -q "minerva_math_precalc" "$T/err" \
  && ok || bad "unknown task: exit $rc, $(cat "$T/err")"
[ "$ms" -lt 2000 ] && ok || bad "unknown task took ${ms} ms"
[ ! -e "$T/d" ] && ok || bad "unknown task created the output directory"
"$S" eval "$W/base" --tasks minerva_math -o "$T/d" --limit 0 > /dev/null 2>&1; [ $? -eq 2 ] && ok || bad "--limit 0 should exit 2"
"$S" eval "$W/base" --tasks minerva_math > /dev/null 2>&1; [ $? -eq 2 ] && ok || bad "missing --output-path should exit 2"
"$S" eval --help | grep -q "docs/eval.md" && ok || bad "eval --help"

# perplexity: 3 held-out lines give a finite number, the text and --json agree
head -3 "$W/data/general/heldout_text.jsonl" > "$T/three.jsonl"
out=$("$S" perplexity "$W/base" --input "$T/three.jsonl" --threads 1 2>&1) || bad "perplexity failed: $out"
ppl=$(sed -n 's/^perplexity \([0-9.]*\) (mean NLL [0-9.]* nats over [0-9]* tokens of 3 documents)$/\1/p' <<< "$out")
[ -n "$ppl" ] && awk -v p="$ppl" 'BEGIN { exit !(p > 1 && p < 768) }' && ok || bad "perplexity output: $out"
js=$("$S" perplexity "$W/base" --input "$T/three.jsonl" --json --threads 1) && grep -q "\"documents\": 3" <<< "$js" \
  && [ "$(sed 's/.*"perplexity": \([0-9.]*\),.*/\1/' <<< "$js" | awk '{ printf "%.4f", $1 }')" = "$ppl" ] \
  && ok || bad "perplexity --json: $js vs $ppl"
# windows shorter than the documents still give a finite number
"$S" perplexity "$W/base" --input "$T/three.jsonl" --max-tokens 64 --threads 1 | grep -q '^perplexity [0-9]' && ok || bad "--max-tokens 64"
# malformed lines: named by file:line, exit 1
{ head -1 "$T/three.jsonl"; echo '{"text": "cut'; } > "$T/bad.jsonl"
"$S" perplexity "$W/base" --input "$T/bad.jsonl" > /dev/null 2> "$T/err"; rc=$?
[ $rc -eq 1 ] && grep -q "bad.jsonl:2" "$T/err" && ok || bad "malformed JSON: exit $rc, $(cat "$T/err")"
{ head -1 "$T/three.jsonl"; echo '{"txt": "no text field"}'; } > "$T/bad2.jsonl"
"$S" perplexity "$W/base" --input "$T/bad2.jsonl" > /dev/null 2> "$T/err"; rc=$?
[ $rc -eq 1 ] && grep -q 'bad2.jsonl:2: missing string field "text"' "$T/err" && ok || bad "no text field: exit $rc, $(cat "$T/err")"
"$S" perplexity "$W/base" > /dev/null 2>&1; [ $? -eq 2 ] && ok || bad "missing --input should exit 2"

echo "cli_eval: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
