/* JSONL reader: blank lines (including a blank first line, a crash the fuzzer
 * found), CRLF, bad lines reported as file:line and skippable, NUL in strings,
 * over-long lines. */
#include "testutil.h"

#include "stetho/jsonl.h"

#include <jansson.h>
#include <string.h>

static void test_lines(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("jsonl");
    const char *text = "\n{\"text\": \"a\"}\r\n  \nnot json\n[1]\n{\"text\": \"x\\u0000y\"}\n{\"other\": 1}";
    const char *p = tu_path(dir, "d.jsonl");
    tu_write_file(p, text, strlen(text));
    stetho_jsonl_reader r;
    bool got;
    assert_int_equal(stetho_jsonl_open(&r, p), STETHO_OK);
    assert_int_equal(stetho_jsonl_next(&r, &got), STETHO_OK);
    assert_true(got);
    assert_int_equal(r.line_no, 2);
    assert_string_equal(stetho_jsonl_string(&r, "text"), "a");
    assert_int_equal(stetho_jsonl_next(&r, &got), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "d.jsonl:4: invalid JSON"));
    assert_int_equal(stetho_jsonl_next(&r, &got), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), ":5: expected a JSON object"));
    assert_int_equal(stetho_jsonl_next(&r, &got), STETHO_OK);
    assert_int_equal(json_string_length(json_object_get(r.obj, "text")), 3);
    assert_int_equal(stetho_jsonl_next(&r, &got), STETHO_OK);
    assert_null(stetho_jsonl_string(&r, "text"));
    assert_non_null(strstr(stetho_last_error(), ":7: missing string field 'text'"));
    assert_int_equal(stetho_jsonl_next(&r, &got), STETHO_OK);
    assert_false(got);
    stetho_jsonl_close(&r);

    tu_write_file(p, "\n", 1);
    assert_int_equal(stetho_jsonl_open(&r, p), STETHO_OK);
    assert_int_equal(stetho_jsonl_next(&r, &got), STETHO_OK);
    assert_false(got);
    stetho_jsonl_close(&r);

    char big[5000];
    memset(big, 'x', sizeof big);
    tu_write_file(p, big, sizeof big);
    assert_int_equal(stetho_jsonl_open(&r, p), STETHO_OK);
    r.max_line = 1024;
    assert_int_equal(stetho_jsonl_next(&r, &got), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "longer than 1024"));
    stetho_jsonl_close(&r);
    assert_int_equal(stetho_jsonl_open(&r, tu_path(dir, "missing.jsonl")), STETHO_ERR_NOTFOUND);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_lines)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
