#!/bin/bash
# stetho compare end to end on small lm-eval-shaped fixtures written here: the
# table, --json, paired McNemar, the Number Theory figure, and the error paths.
set -u
STETHO=$1
T=${STETHO_TMP:-/tmp}/cli_compare.$$
rm -rf "$T"; mkdir -p "$T/a/model" "$T/b" "$T/other" "$T/mism"
fail() { echo "FAIL: $*"; exit 1; }
command -v python3 >/dev/null || { echo "python3 needed to check --json output"; exit 77; }

# results_<ts>.json for two tasks; $1 dir, $2 nt correct, $3 alg correct, $4 ts
results() {
    cat > "$1/results_$4.json" <<JSON
{"results": {"minerva_math": {"alias": "minerva_math", "exact_match,none": $(python3 -c "print(($2+$3)/570)")},
 "minerva_math_num_theory": {"alias": " - minerva_math_num_theory", "exact_match,none": $(python3 -c "print($2/540)"), "exact_match_stderr,none": 0.02},
 "minerva_math_algebra": {"alias": " - minerva_math_algebra", "exact_match,none": $(python3 -c "print($3/30)"), "exact_match_stderr,none": "N/A"}},
 "groups": {"minerva_math": {"exact_match,none": 0.3}},
 "n-samples": {"minerva_math_num_theory": {"original": 540, "effective": 540}, "minerva_math_algebra": {"original": 30, "effective": 30}}}
JSON
}
# samples: $1 file, $2 n, $3 python expression of i giving 0/1
samples() {
    python3 -c "
import json
for i in range($2): print(json.dumps({'doc_id': i, 'exact_match': int($3)}))" > "$1"
}
results "$T/a/model" 160 10 2025-01-01T00-00-00.000000
results "$T/a/model" 0 0 2024-01-01T00-00-00.000000     # older: must not be picked
samples "$T/a/model/samples_minerva_math_num_theory_2025-01-01T00-00-00.000000.jsonl" 540 "i < 160"
samples "$T/a/model/samples_minerva_math_algebra_2025-01-01T00-00-00.000000.jsonl" 30 "i % 3 == 0"
results "$T/b" 213 20 2025-02-01T00-00-00.000000
samples "$T/b/samples_minerva_math_num_theory_2025-02-01T00-00-00.000000.jsonl" 540 "i < 140 or 160 <= i < 233"
samples "$T/b/samples_minerva_math_algebra_2025-02-01T00-00-00.000000.jsonl" 30 "i % 3 != 2"

out=$("$STETHO" compare "$T/a" "$T/b") || fail "compare exited $?"
echo "$out"
echo "$out" | grep -q "minerva_math_num_theory .*0.2963 .*0.3944 .*+0.0981" || fail "num theory row"
echo "$out" | grep "minerva_math_num_theory" | grep -q " 3.41 " || fail "unpooled z 3.41"
echo "$out" | grep "minerva_math_num_theory" | grep -q "20/73" || fail "McNemar discordant counts"
echo "$out" | grep "minerva_math_num_theory" | grep -q " +$" || fail "improvement mark"

"$STETHO" compare "$T/a" "$T/b" --json > "$T/out.json" || fail "--json exited $?"
python3 - "$T/out.json" <<'PY' || fail "--json content"
import json, sys, math
d = json.load(open(sys.argv[1]))
r = {x["task"]: x for x in d["rows"]}
nt = r["minerva_math_num_theory"]
assert abs(nt["z_unpooled"] - 3.41) < 0.005, nt["z_unpooled"]
assert round(nt["p_unpooled"], 4) == 0.0006 or round(nt["p_unpooled"], 4) == 0.0007, nt["p_unpooled"]
assert nt["mcnemar"]["only_a"] == 20 and nt["mcnemar"]["only_b"] == 73
# exact binomial, independently
n, m = 93, 20
p = min(1, 2 * sum(math.comb(n, i) for i in range(m + 1)) / 2**n)
assert abs(nt["mcnemar"]["p_exact"] - p) < 1e-12 * max(p, 1e-300) + 1e-15, (nt["mcnemar"]["p_exact"], p)
assert nt["mark"] == "+" and r["minerva_math"]["overall"]
assert r["minerva_math"]["a"]["correct"] == 170 and r["minerva_math"]["b"]["correct"] == 233
PY

# --no-samples: unpaired
"$STETHO" compare "$T/a" "$T/b" --no-samples | grep "minerva_math_num_theory" | grep -q unpaired || fail "--no-samples"

# errors: another task set
cat > "$T/other/results_1.json" <<'JSON'
{"results": {"gsm8k": {"exact_match,none": 0.5}}, "n-samples": {"gsm8k": {"original": 2, "effective": 2}}}
JSON
"$STETHO" compare "$T/a" "$T/other" 2> "$T/err"; rc=$?
[ $rc -eq 1 ] || fail "no common task: exit $rc"
grep -q "share no task" "$T/err" && grep -q gsm8k "$T/err" && grep -q minerva_math_algebra "$T/err" || fail "no-common message: $(cat "$T/err")"

# mismatched doc_ids
results "$T/mism" 213 20 3
samples "$T/mism/samples_minerva_math_num_theory_3.jsonl" 540 "i < 213"
python3 -c "
import json
for i in range(30): print(json.dumps({'doc_id': i + 100 * (i == 5), 'exact_match': int(i % 3 != 2)}))" > "$T/mism/samples_minerva_math_algebra_3.jsonl"
"$STETHO" compare "$T/a" "$T/mism" 2> "$T/err"; rc=$?
[ $rc -eq 1 ] || fail "mismatched ids: exit $rc"
grep -q "task minerva_math_algebra" "$T/err" && grep -q "doc_id 5" "$T/err" || fail "mismatch message: $(cat "$T/err")"

# malformed file, missing file, usage
echo '{"results": [' > "$T/other/results_2.json"
"$STETHO" compare "$T/other/results_2.json" "$T/b" 2> "$T/err"; rc=$?
[ $rc -eq 1 ] && grep -q "results_2.json" "$T/err" || fail "malformed: exit $rc $(cat "$T/err")"
"$STETHO" compare "$T/nope" "$T/b" 2> "$T/err"; [ $? -eq 1 ] || fail "missing file"
"$STETHO" compare "$T/a" 2> /dev/null; [ $? -eq 2 ] || fail "one argument must be a usage error"
"$STETHO" compare "$T/a" "$T/b" --alpha 2 2> /dev/null; [ $? -eq 2 ] || fail "bad --alpha"
"$STETHO" compare --help | grep -q McNemar || fail "--help"
rm -rf "$T"
echo "cli_compare: ok"
