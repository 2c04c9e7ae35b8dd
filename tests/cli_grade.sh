#!/usr/bin/env bash
# CLI tests for `stetho grade`: added fields, accuracy line, --output written via a
# temp file, malformed lines reported as file:line (stop by default, --skip-bad).
set -u
STETHO=${1:?usage: cli_grade.sh path/to/stetho}
T=${STETHO_TMP:-/tmp}/cli-grade-$$
rm -rf "$T"; mkdir -p "$T"
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

F='Final Answer: The final answer is'
H='I hope it is correct.'
cat > "$T/gen.jsonl" <<JSON
{"id": 1, "generation": " So it is 1/2.\n$F \$0.5\$. $H", "solution": "Thus $\\\\boxed{\\\\frac{1}{2}}$."}
{"id": 2, "generation": "$F \$\\\\left(-\\\\infty, 3\\\\right]\$. $H", "answer": "(-\\\\infty,3]"}
{"id": 3, "generation": "$F \$(0,3]\$. $H", "answer": "[0,3]"}

{"id": 4, "generation": "no final answer here", "answer": "7"}
JSON
out=$("$STETHO" grade --input "$T/gen.jsonl" 2>"$T/err") || bad "grade exit $?"
[ "$(grep -c . <<<"$out")" = 4 ] || bad "expected 4 output lines: $out"
grep -q '"id":1,.*"extracted":"\$0.5\$","normalized":"0.5","gold":"\\\\frac{1}{2}","correct":true' <<<"$out" || bad "line 1: $out"
grep -q '"id":2,.*"correct":true' <<<"$out" || bad "line 2 (interval with \\left): $out"
grep -q '"id":3,.*"correct":false' <<<"$out" || bad "line 3 (other bracket must be wrong): $out"
grep -q '"id":4,.*"extracted":"\[invalidanswer\]".*"correct":false' <<<"$out" || bad "line 4: $out"
grep -qx 'accuracy: 2/4 = 50.0%' "$T/err" || bad "accuracy line: $(cat "$T/err")"

# --output: file written, nothing on stdout, no temp file left
out=$("$STETHO" grade --input "$T/gen.jsonl" --output "$T/graded.jsonl" 2>/dev/null) || bad "grade --output exit"
[ -z "$out" ] && [ "$(wc -l <"$T/graded.jsonl")" = 4 ] && [ ! -e "$T/graded.jsonl.tmp" ] || bad "--output file"

# malformed lines: stop with file:line and no output file; --skip-bad counts them
{ head -1 "$T/gen.jsonl"; echo '{"generation": "x"'; echo '{"generation": 5, "answer": "1"}'; echo '{"answer": "1"}'; } > "$T/bad.jsonl"
"$STETHO" grade --input "$T/bad.jsonl" --output "$T/bad-out.jsonl" 2>"$T/err"; rc=$?
[ $rc = 1 ] || bad "malformed line: exit $rc"
grep -q "bad.jsonl:2" "$T/err" || bad "malformed line not named: $(cat "$T/err")"
[ ! -e "$T/bad-out.jsonl" ] && [ ! -e "$T/bad-out.jsonl.tmp" ] || bad "partial output left behind"
out=$("$STETHO" grade --input "$T/bad.jsonl" --skip-bad 2>"$T/err") || bad "--skip-bad exit $?"
grep -q "bad.jsonl:3" "$T/err" && grep -q "bad.jsonl:4" "$T/err" || bad "--skip-bad messages: $(cat "$T/err")"
grep -q 'accuracy: 1/1 = 100.0% (3 malformed lines skipped)' "$T/err" || bad "--skip-bad count: $(cat "$T/err")"

# usage errors
"$STETHO" grade 2>/dev/null; [ $? = 2 ] || bad "missing --input must exit 2"
"$STETHO" grade --input "$T/none.jsonl" 2>"$T/err"; [ $? = 1 ] && grep -q "none.jsonl" "$T/err" || bad "missing file"
"$STETHO" grade --help | grep -q "skip-bad" || bad "--help"

rm -rf "$T"
[ $fails = 0 ] && echo "cli_grade: all passed" || exit 1
