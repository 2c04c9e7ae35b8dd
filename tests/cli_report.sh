#!/usr/bin/env bash
# stetho report end to end on a summary.json written here: both files, -o, the
# contents, usage errors, a malformed summary (exit 1, the key named, nothing
# written), and, when Chromium is installed, that a headless browser renders it.
set -u
STETHO=${1:?usage: cli_report.sh path/to/stetho}
T=${STETHO_TMP:-/tmp}/cli-report-$$
rm -rf "$T"; mkdir -p "$T/run"
source "$(dirname "$0")/util/cli_lib.sh"

# one subject plus the group; base 61/300, fine-tuned 90/300 (significant), a
# stethoscope variant with a hostile name; Wilson intervals rounded to 4 places
acc() { printf '{"correct": %s, "n": %s, "acc": %s, "ci": [%s, %s]}' "$@"; }
cmpj() { printf '{"diff": %s, "ci": [%s, %s], "z": %s, "p": %s, "p_holm": %s, "mcnemar_p": %s, "significant": %s, "direction": "%s"}' "$@"; }
summary() {
cat <<JSON
{"stetho_version": "0.1.0", "title": "cli fixture", "created": "2025-06-01T00:00:00Z",
 "model": {"base": "m/base", "finetuned": "m/ft", "family": "gemma3", "n_layers": 3, "d_model": 8},
 "task_vector": {"total_norm": 1.5, "layers": [{"layer": 0, "norm": 0.5, "rel_norm": 0.1, "energy_share": 0.2},
   {"layer": 1, "norm": 0.9, "rel_norm": 0.1, "energy_share": 0.5}, {"layer": 2, "norm": 0.7, "rel_norm": 0.1, "energy_share": 0.3}]},
 "specificity": {"metric": "mass_share", "metrics": ["mass_share"], "layers": [{"layer": 0, "score": 0.1},
   {"layer": 1, "score": 0.4}, {"layer": 2, "score": null}]},
 "scalpel": {"features": 2, "d_model": 8, "retained": 0.3, "expected_random": 0.25,
   "layers": [{"layer": 0, "rank": 2, "retained": 0.3, "expected": 0.25}]},
 "tasks": ["minerva_math_algebra"],
 "variants": [
  {"name": "base", "kind": "base", "label": "base", "layers": null, "selection": null, "alpha": 1,
   "results": {"minerva_math_algebra": $(acc 61 300 0.2033 0.1621 0.2519), "minerva_math": $(acc 61 300 0.2033 0.1621 0.2519)},
   "perplexity": 4.31, "vs_base": null},
  {"name": "ft", "kind": "finetuned", "label": "fine-tuned", "layers": [0, 1, 2], "selection": {"method": "all"}, "alpha": 1,
   "results": {"minerva_math_algebra": $(acc 90 300 0.3 0.2515 0.3535), "minerva_math": $(acc 90 300 0.3 0.2515 0.3535)},
   "perplexity": 4.19,
   "vs_base": {"minerva_math_algebra": $(cmpj 0.0967 0.0270 0.1649 2.69 0.0071 0.0071 0.006 true up),
               "minerva_math": $(cmpj 0.0967 0.0270 0.1649 2.69 0.0071 null 0.006 true up)}},
  {"name": "<img src=x onerror=alert(1)>", "kind": "stethoscope", "label": "top-1 | <b>", "layers": [1],
   "selection": {"method": "top", "k": 1}, "alpha": 1,
   "results": {"minerva_math_algebra": $(acc 64 300 0.2133 0.1711 0.2627), "minerva_math": $(acc 64 300 0.2133 0.1711 0.2627)},
   "perplexity": ${PPL:-4.3},
   "vs_base": {"minerva_math_algebra": $(cmpj 0.01 -0.0559 0.0758 0.30 0.76 0.76 0.8 false up),
               "minerva_math": $(cmpj 0.01 -0.0559 0.0758 0.30 0.76 null 0.8 false up)}}],
 "ablation": null,
 "notes": ["a fixture for tests/cli_report.sh"]}
JSON
}
summary > "$T/run/summary.json"

out=$("$STETHO" report "$T/run") && ok || bad "report exit $?"
grep -q "wrote $T/run/report.html" <<<"$out" && grep -q "wrote $T/run/report.md" <<<"$out" && ok || bad "output: $out"
[ -s "$T/run/report.html" ] && [ -s "$T/run/report.md" ] && ok || bad "report files missing"
[ "$(ls "$T/run" | wc -l)" -eq 3 ] && ok || bad "unexpected files: $(ls "$T/run")"
md=$T/run/report.md
grep -qF "| fine-tuned | 30.0 ▲ [25.1, 35.4] | +9.7 ▲ [+2.7, +16.5] |" "$md" && ok || bad "fine-tuned row: $(grep fine-tuned "$md")"
grep -qF '| \<img src=x onerror=alert(1)\> | top-1 \| \<b\> |' "$md" && ok || bad "escaped name in Markdown"
grep -q "<img" "$T/run/report.html" && bad "raw <img> in the HTML" || ok
grep -qF "&lt;img src=x onerror=alert(1)&gt;" "$T/run/report.html" && ok || bad "escaped name in HTML"
grep -qi "<script" "$T/run/report.html" && bad "a script in the HTML" || ok

# -o / --output: another directory, created
"$STETHO" report "$T/run" -o "$T/out" >/dev/null && [ -s "$T/out/report.html" ] && [ -s "$T/out/report.md" ] && ok || bad "-o"
cmp -s "$T/out/report.md" "$md" && ok || bad "-o wrote a different report"
"$STETHO" report --output "$T/out2" "$T/run" >/dev/null && [ -s "$T/out2/report.md" ] && ok || bad "--output"

# usage errors (exit 2) and --help
"$STETHO" report --help | grep -q summary.json && ok || bad "--help"
"$STETHO" report 2>/dev/null; [ $? -eq 2 ] && ok || bad "no RUN_DIR must be a usage error"
"$STETHO" report "$T/run" "$T/run" 2>/dev/null; [ $? -eq 2 ] && ok || bad "two RUN_DIRs"
"$STETHO" report "$T/run" --bogus 2>/dev/null; [ $? -eq 2 ] && ok || bad "unknown option"
"$STETHO" report "$T/run" -o 2>/dev/null; [ $? -eq 2 ] && ok || bad "-o without a value"

# a run directory without summary.json
mkdir -p "$T/empty"
"$STETHO" report "$T/empty" 2>"$T/err"; rc=$?
[ $rc -eq 1 ] && grep -q "summary.json" "$T/err" && [ -z "$(ls "$T/empty")" ] && ok || bad "missing summary: $rc $(cat "$T/err")"

# malformed: a perplexity of "high"; exit 1, the key path named, nothing written
mkdir -p "$T/badrun"
PPL='"high"' summary > "$T/badrun/summary.json"
"$STETHO" report "$T/badrun" 2>"$T/err"; rc=$?
[ $rc -eq 1 ] && ok || bad "malformed: exit $rc"
grep -q "variants\[2\].perplexity: expected a number, got a string" "$T/err" && grep -q "hint:" "$T/err" && ok || bad "message: $(cat "$T/err")"
[ "$(ls "$T/badrun")" = "summary.json" ] && ok || bad "malformed run left files: $(ls "$T/badrun")"
# an earlier report is left alone when the summary turns bad
cp "$T/run/report.md" "$T/badrun/report.md"
"$STETHO" report "$T/badrun" 2>/dev/null; cmp -s "$T/badrun/report.md" "$md" && ok || bad "old report changed"

# a real browser: render and screenshot when Chromium is here (CI may not have it)
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -n "$browser" ]; then
    timeout 120 "$browser" --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2400 \
        --screenshot="$T/shot.png" "file://$T/run/report.html" >/dev/null 2>&1
    [ -s "$T/shot.png" ] && [ "$(head -c 8 "$T/shot.png" | od -An -c | tr -d ' ')" = '211PNG\r\n032\n' ] && ok || bad "headless screenshot"
else
    echo "note: no chromium here; the browser check is skipped"
fi

rm -rf "$T"
echo "cli_report: $passes passed, $fails failed"
[ $fails -eq 0 ]
