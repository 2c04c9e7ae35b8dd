/* Minerva Math evaluation: lm-eval's prompt byte for byte, task names, the
 * document order and --limit (against lm-eval's own order), results and
 * samples an lm-eval reader accepts, resuming from an interrupted run's
 * generations only when that run had the same model and settings, and the
 * grading rule `stetho grade` uses. */
#include "testutil.h"

#include "stetho/bpe_train.h"
#include "stetho/eval.h"
#include "stetho/grade.h"
#include "stetho/jsonl.h"
#include "stetho/results.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_prompt_bytes(void **state) {
    (void)state;
    const char *p[] = {"What is $1+1$?", "Find $x$."};
    const char *s[] = {"It is $\\boxed{2}$.\nFinal Answer: The final answer is $2$. I hope it is correct.", "$x=3$."};
    char *out = NULL;
    assert_int_equal(stetho_eval_prompt(p, s, 2, "Compute $2^3$.", &out), STETHO_OK);
    assert_string_equal(out, "Problem:\nWhat is $1+1$?\n\nSolution: It is $\\boxed{2}$.\nFinal Answer: The final answer "
                             "is $2$. I hope it is correct.\n\nProblem:\nFind $x$.\n\nSolution: $x=3$.\n\n"
                             "Problem:\nCompute $2^3$.\n\nSolution:");
    free(out);
    assert_int_equal(stetho_eval_prompt(NULL, NULL, 0, "Q", &out), STETHO_OK);
    assert_string_equal(out, "Problem:\nQ\n\nSolution:");
    free(out);
}

/* A data directory: n problems per subject whose answer is the problem index. */
static const char *make_data(int n) {
    const char *dir = tu_tmpdir("eval-data");
    FILE *f = fopen(tu_path(dir, "test.jsonl"), "w");
    for (int s = STETHO_EVAL_N_SUBJECTS - 1; s >= 0; s--) /* file order decides, not subject order */
        for (int i = 0; i < n; i++)
            fprintf(f, "{\"subject\": \"%s\", \"level\": \"Level 1\", \"type\": \"T\", \"problem\": \"What is %d+0?\", "
                       "\"solution\": \"It is $\\\\boxed{%d}$.\"}\n",
                    STETHO_EVAL_SUBJECTS[s], i, i);
    fclose(f);
    f = fopen(tu_path(dir, "minerva_fewshot.json"), "w");
    fprintf(f, "[{\"problem\": \"P1\", \"solution\": \"S1\"}, {\"problem\": \"P2\", \"solution\": \"S2\"}]");
    fclose(f);
    return dir;
}

static const char *make_model_seed(uint64_t seed) {
    const char *dir = tu_tmpdir(seed == 4 ? "eval-model" : "eval-model-other");
    static const char *docs[] = {"Problem: What is 1+0? Solution: It is 1. Final Answer: The final answer is $1$."};
    size_t lens[1] = {strlen(docs[0])};
    stetho_bpe_options o = {.vocab_size = 300};
    stetho_bpe_model *bm = NULL;
    assert_int_equal(stetho_bpe_train(docs, lens, 1, &o, &bm), STETHO_OK);
    tu_model_spec spec = {.n_layers = 2, .hidden = 32, .intermediate = 64, .n_heads = 2, .n_kv_heads = 1,
                          .head_dim = 16, .vocab = stetho_bpe_vocab_size(bm), .seed = seed, .scale = 0.3f,
                          .max_position = 4096}; /* MATH problems without shots fit */
    tu_make_model(dir, &spec);
    assert_int_equal(stetho_bpe_save(bm, dir), STETHO_OK);
    stetho_bpe_free(bm);
    return dir;
}

static const char *make_model(void) { return make_model_seed(4); }

static void test_run_resume_and_results(void **state) {
    (void)state;
    const char *data = make_data(4);
    const char *mdir = make_model();
    stetho_model m;
    stetho_tokenizer tok;
    assert_int_equal(stetho_model_load(&m, mdir), STETHO_OK);
    assert_int_equal(stetho_tokenizer_load(&tok, mdir), STETHO_OK);
    const char *out = tu_tmpdir("eval-out");
    /* a partial file without the settings header (an older stetho's, or
     * planted): its correct-looking generation must not be reused */
    FILE *f = fopen(tu_path(out, ".samples_minerva_math_algebra.partial.jsonl"), "w");
    fprintf(f, "{\"doc_id\": 1, \"prompt\": \"Problem:\\nWhat is 1+0?\\n\\nSolution:\", \"generation\": \" Final Answer: "
               "The final answer is $1$. I hope it is correct.\"}\n{\"doc_id\": 2, \"pro");
    fclose(f);
    stetho_eval_opts o;
    stetho_eval_opts_default(&o);
    o.data_dir = data;
    o.num_fewshot = 0;
    o.limit = 3;
    o.max_gen_toks = 8;
    o.batch_size = 2;
    stetho_eval_result r;
    stetho_status st = stetho_eval_run(&m, &tok, &o, out, &r);
    if (st) print_message("%s\n", stetho_last_error());
    assert_int_equal(st, STETHO_OK);
    assert_int_equal(r.n_tasks, STETHO_EVAL_N_SUBJECTS);
    for (size_t i = 0; i < r.n_tasks; i++) {
        assert_string_equal(r.tasks[i].task, STETHO_EVAL_TASKS[i]);
        assert_int_equal(r.tasks[i].n, 3);
        assert_int_equal(r.tasks[i].n_original, 4);
    }
    assert_true(r.tasks[0].partial_discarded);
    assert_int_equal(r.tasks[0].n_reused, 0);
    assert_false(tu_exists(tu_path(out, ".samples_minerva_math_algebra.partial.jsonl")));
    stetho_results res;
    assert_int_equal(stetho_results_read(r.results_path, true, &res), STETHO_OK);
    assert_string_equal(res.group, "minerva_math");
    assert_int_equal(res.n_tasks, STETHO_EVAL_N_SUBJECTS);
    const stetho_results_task *alg = stetho_results_task_get(&res, "minerva_math_algebra");
    assert_non_null(alg);
    assert_int_equal(alg->n_samples, 3);
    stetho_results_free(&res);
    stetho_eval_result_free(&r);

    /* 2 shots in front; one subtask; the group is not reported for a subset */
    o.tasks = "minerva_math_num_theory";
    o.num_fewshot = 2;
    o.limit = 1;
    const char *out2 = tu_tmpdir("eval-out2");
    assert_int_equal(stetho_eval_run(&m, &tok, &o, out2, &r), STETHO_OK);
    assert_int_equal(r.n_tasks, 1);
    assert_int_equal(stetho_results_read(r.results_path, true, &res), STETHO_OK);
    assert_null(res.group);
    stetho_results_free(&res);
    stetho_eval_result_free(&r);

    /* bad input */
    o.tasks = "minerva_math_calculus";
    assert_int_equal(stetho_eval_run(&m, &tok, &o, out2, &r), STETHO_ERR_INVALID);
    assert_non_null(strstr(stetho_last_error(), "minerva_math_precalc"));
    o.tasks = "minerva_math";
    o.num_fewshot = 5;
    assert_int_equal(stetho_eval_run(&m, &tok, &o, out2, &r), STETHO_ERR_INVALID);
    o.num_fewshot = 3; /* the data dir's fewshot file has only 2 */
    assert_int_equal(stetho_eval_run(&m, &tok, &o, out2, &r), STETHO_ERR_FORMAT);
    stetho_tokenizer_free(&tok);
    stetho_model_free(&m);
}

/* ---- resuming */

typedef struct {
    char text[8192];
} notes;

static void on_notice(void *user, const char *task, const char *message) {
    notes *nt = user;
    size_t n = strlen(nt->text);
    snprintf(nt->text + n, sizeof nt->text - n, "%s: %s\n", task, message);
}

/* Stop a run right after its last generation, as an interruption would: an
 * injected fault on the first write after the partial file's header and its
 * n lines (the samples file's first line) leaves the partial file complete. */
static void run_interrupted(stetho_model *m, const stetho_tokenizer *tok, const stetho_eval_opts *o, const char *out,
                            int n) {
    stetho_eval_result r;
    stetho_fault_write_after((uint64_t)n + 2);
    stetho_status st = stetho_eval_run(m, tok, o, out, &r);
    stetho_fault_write_after(0);
    assert_int_equal(st, STETHO_ERR_IO);
    stetho_clear_error();
}

/* Set one string field of doc_id's line in a partial file, as an audit
 * planting a fake generation would; the header and other lines stay. */
static void plant(const char *path, int doc_id, const char *key, const char *value) {
    size_t len = 0;
    char *text = tu_read_file(path, &len);
    assert_non_null(text);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    bool found = false;
    for (char *line = text, *nl; *line; line = nl + 1) {
        assert_non_null(nl = strchr(line, '\n'));
        *nl = '\0';
        json_t *o = json_loads(line, 0, NULL);
        assert_non_null(o);
        json_t *id = json_object_get(o, "doc_id");
        if (id && json_integer_value(id) == doc_id) {
            json_object_set_new(o, key, json_string(value));
            found = true;
        }
        char *d = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fprintf(f, "%s\n", d);
        free(d);
        json_decref(o);
    }
    fclose(f);
    free(text);
    assert_true(found);
}

/* The verdicts of a finished run's one task, by doc_id. */
static void verdicts(const stetho_eval_result *r, uint8_t *correct, size_t n) {
    stetho_results res;
    assert_int_equal(stetho_results_read(r->results_path, true, &res), STETHO_OK);
    assert_int_equal(res.n_tasks, 1);
    assert_int_equal(res.tasks[0].n_samples, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(res.tasks[0].doc_ids[i], (int64_t)i);
        correct[i] = res.tasks[0].correct[i];
    }
    stetho_results_free(&res);
}

#define PLANTED " Final Answer: The final answer is $2$. I hope it is correct."

/* A partial file is reused only by a run with the same task, model and
 * settings: an audit planted a correct answer for problem 2 in an interrupted
 * run's file, and only the same run may take it. */
static void test_resume_checks_settings(void **state) {
    (void)state;
    const char *data = make_data(4);
    const char *mdir = make_model(), *odir = make_model_seed(5);
    stetho_model m, other;
    stetho_tokenizer tok;
    assert_int_equal(stetho_model_load(&m, mdir), STETHO_OK);
    assert_int_equal(stetho_model_load(&other, odir), STETHO_OK);
    assert_int_equal(stetho_tokenizer_load(&tok, mdir), STETHO_OK);
    notes nt;
    stetho_eval_opts o;
    stetho_eval_opts_default(&o);
    o.data_dir = data;
    o.tasks = "minerva_math_algebra";
    o.num_fewshot = 0;
    o.limit = 3;
    o.max_gen_toks = 8;
    o.batch_size = 2;
    o.notice = on_notice;
    o.user = &nt;
    const char *out = tu_tmpdir("eval-resume");
    const char *pp = tu_path(out, ".samples_minerva_math_algebra.partial.jsonl");
    run_interrupted(&m, &tok, &o, out, 3);
    plant(pp, 2, "generation", PLANTED);
    size_t len = 0;
    char *planted = tu_read_file(pp, &len);
    assert_non_null(planted);

    /* the same run: all three generations reused, the planted one graded right */
    memset(&nt, 0, sizeof nt);
    stetho_eval_result r;
    assert_int_equal(stetho_eval_run(&m, &tok, &o, out, &r), STETHO_OK);
    assert_int_equal(r.tasks[0].n_reused, 3);
    assert_false(r.tasks[0].partial_discarded);
    assert_non_null(strstr(nt.text, "3 of 3 generations reused"));
    uint8_t c[3];
    verdicts(&r, c, 3);
    assert_int_equal(c[2], 1);
    assert_false(tu_exists(pp));
    stetho_eval_result_free(&r);

    /* anything else that changes what the model is asked or how it decodes:
     * the file is discarded whole, and the notice names what differs */
    static const struct {
        const char *what;
        int max_gen_toks, num_fewshot;
        bool chat, other_model;
    } cases[] = {{"max_gen_toks (was 8, now 9)", 9, 0, false, false},
                 {"model (was", 8, 0, false, true},
                 {"num_fewshot (was 0, now 2)", 8, 2, false, false},
                 {"chat (was false, now true)", 8, 0, true, false}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tu_write_file(pp, planted, len);
        o.max_gen_toks = cases[k].max_gen_toks;
        o.num_fewshot = cases[k].num_fewshot;
        o.chat = cases[k].chat;
        memset(&nt, 0, sizeof nt);
        stetho_status st = stetho_eval_run(cases[k].other_model ? &other : &m, &tok, &o, out, &r);
        if (st) print_message("%s\n", stetho_last_error());
        assert_int_equal(st, STETHO_OK);
        assert_true(r.tasks[0].partial_discarded);
        assert_int_equal(r.tasks[0].n_reused, 0);
        if (!strstr(nt.text, cases[k].what)) print_message("notice: %s\n", nt.text);
        assert_non_null(strstr(nt.text, "not resuming"));
        assert_non_null(strstr(nt.text, cases[k].what));
        verdicts(&r, c, 3);
        assert_int_equal(c[2], 0); /* the tiny model's own 8 tokens, not the planted answer */
        stetho_eval_result_free(&r);
    }
    o.max_gen_toks = 8;
    o.num_fewshot = 0;
    o.chat = false;

    /* the same settings, but one line's prompt is not this run's: that line is dropped */
    tu_write_file(pp, planted, len);
    plant(pp, 2, "prompt", "Problem:\nWhat is 7+0?\n\nSolution:");
    memset(&nt, 0, sizeof nt);
    assert_int_equal(stetho_eval_run(&m, &tok, &o, out, &r), STETHO_OK);
    assert_int_equal(r.tasks[0].n_reused, 2);
    assert_false(r.tasks[0].partial_discarded);
    assert_non_null(strstr(nt.text, "other prompts"));
    verdicts(&r, c, 3);
    assert_int_equal(c[2], 0);
    stetho_eval_result_free(&r);

    /* ... or its prompt ids (another tokenizer) */
    tu_write_file(pp, planted, len);
    plant(pp, 2, "prompt_ids", "0123456789abcdef");
    assert_int_equal(stetho_eval_run(&m, &tok, &o, out, &r), STETHO_OK);
    assert_int_equal(r.tasks[0].n_reused, 2);
    stetho_eval_result_free(&r);
    free(planted);
    stetho_tokenizer_free(&tok);
    stetho_model_free(&other);
    stetho_model_free(&m);
}

/* eval and `stetho grade` use one grading function: a solution whose box is
 * empty has no gold answer, so "$$" (which also normalises to "") is wrong in
 * both, as it is in lm-eval. */
static void test_empty_gold_is_wrong(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("eval-empty-gold");
    FILE *f = fopen(tu_path(dir, "test.jsonl"), "w");
    assert_non_null(f);
    fprintf(f, "{\"subject\": \"algebra\", \"problem\": \"Q0\", \"solution\": \"It is $\\\\boxed{}$.\"}\n"
               "{\"subject\": \"algebra\", \"problem\": \"Q1\", \"solution\": \"It is $\\\\boxed{1}$.\"}\n");
    fclose(f);
    const char *mdir = make_model();
    stetho_model m;
    stetho_tokenizer tok;
    assert_int_equal(stetho_model_load(&m, mdir), STETHO_OK);
    assert_int_equal(stetho_tokenizer_load(&tok, mdir), STETHO_OK);
    stetho_eval_opts o;
    stetho_eval_opts_default(&o);
    o.data_dir = dir;
    o.tasks = "minerva_math_algebra";
    o.num_fewshot = 0;
    o.max_gen_toks = 4;
    const char *out = tu_tmpdir("eval-empty-gold-out");
    const char *pp = tu_path(out, ".samples_minerva_math_algebra.partial.jsonl");
    static const char *const gens[] = {" Final Answer: The final answer is $$. I hope it is correct.",
                                       " Final Answer: The final answer is $1$. I hope it is correct."};
    run_interrupted(&m, &tok, &o, out, 2);
    plant(pp, 0, "generation", gens[0]);
    plant(pp, 1, "generation", gens[1]);
    stetho_eval_result r;
    assert_int_equal(stetho_eval_run(&m, &tok, &o, out, &r), STETHO_OK);
    assert_int_equal(r.tasks[0].n_reused, 2);
    assert_int_equal(r.tasks[0].n_correct, 1);
    uint8_t c[2];
    verdicts(&r, c, 2);
    stetho_eval_result_free(&r);
    static const char *const sols[] = {"It is $\\boxed{}$.", "It is $\\boxed{1}$."};
    for (int i = 0; i < 2; i++) {
        stetho_grade_result g;
        assert_int_equal(stetho_grade_generation(gens[i], sols[i], NULL, &g), STETHO_OK);
        assert_int_equal(g.correct, c[i]);
        assert_int_equal(g.correct, i == 1);
        stetho_grade_result_free(&g);
    }
    stetho_tokenizer_free(&tok);
    stetho_model_free(&m);
}

/* One subject's rows of a JSONL file, in file order. */
typedef struct {
    char **id, **problem, **solution, **target;
    size_t n;
} rows;

static void rows_add(rows *r, const char *id, const char *problem, const char *solution, const char *target) {
    size_t n = r->n + 1;
    assert_non_null(r->id = realloc(r->id, n * sizeof *r->id));
    assert_non_null(r->problem = realloc(r->problem, n * sizeof *r->problem));
    assert_non_null(r->solution = realloc(r->solution, n * sizeof *r->solution));
    assert_non_null(r->target = realloc(r->target, n * sizeof *r->target));
    r->id[r->n] = id ? strdup(id) : NULL;
    r->problem[r->n] = problem ? strdup(problem) : NULL;
    r->solution[r->n] = solution ? strdup(solution) : NULL;
    r->target[r->n] = target ? strdup(target) : NULL;
    r->n = n;
}

static void rows_free(rows *r) {
    for (size_t i = 0; i < r->n; i++) free(r->id[i]), free(r->problem[i]), free(r->solution[i]), free(r->target[i]);
    free(r->id), free(r->problem), free(r->solution), free(r->target);
    memset(r, 0, sizeof *r);
}

static int subject_index(const char *subject) {
    for (int s = 0; s < STETHO_EVAL_N_SUBJECTS; s++)
        if (subject && !strcmp(subject, STETHO_EVAL_SUBJECTS[s])) return s;
    fail_msg("unknown subject %s", subject ? subject : "(none)");
    return -1;
}

/* Rows of a MATH-shaped JSONL file (test.jsonl or the gold vectors) by subject. */
static void read_rows(const char *path, const char *target_key, rows by_subject[STETHO_EVAL_N_SUBJECTS]) {
    stetho_jsonl_reader r;
    assert_int_equal(stetho_jsonl_open(&r, path), STETHO_OK);
    bool got;
    while (stetho_jsonl_next(&r, &got) == STETHO_OK && got) {
        const char *subject = json_string_value(json_object_get(r.obj, "subject"));
        rows_add(&by_subject[subject_index(subject)], json_string_value(json_object_get(r.obj, "unique_id")),
                 json_string_value(json_object_get(r.obj, "problem")),
                 json_string_value(json_object_get(r.obj, "solution")),
                 target_key ? json_string_value(json_object_get(r.obj, target_key)) : NULL);
    }
    assert_true(r.line_no > 0);
    stetho_jsonl_close(&r);
}

/* The shared MATH test set: lm-eval's subject sizes, and doc_id i is lm-eval's
 * i-th problem of its subject. lm-eval reads EleutherAI/hendrycks_math one
 * subject at a time, its files sorted by name as text, so a problem's position
 * is the rank of its file name among its subject's. The reference is
 * ../shared/reference/answers/gold_vectors_public (rows written by lm-eval's
 * own code, in its order; half of the 5000). Two links are checked: eval's
 * doc_id i is the data file's i-th problem of the subject (problem and
 * solution byte for byte, the first LIMIT of each subject: the same code reads
 * them all, and generating for all 5000 would take this tiny model ~20 s), and
 * every reference row sits at its rank in the data file with the same
 * solution byte for byte (and, within LIMIT, eval's target is lm-eval's
 * answer). */
static void test_shared_order(void **state) {
    (void)state;
    const char *shared = tu_shared("data/math/test.jsonl");
    const char *gshared = tu_shared("reference/answers/gold_vectors_public.jsonl");
    if (!shared || !gshared) {
        print_message("skipping: ../shared/data/math or ../shared/reference/answers not found\n");
        skip();
    }
    const char *mdir = make_model();
    stetho_model m;
    stetho_tokenizer tok;
    assert_int_equal(stetho_model_load(&m, mdir), STETHO_OK);
    assert_int_equal(stetho_tokenizer_load(&tok, mdir), STETHO_OK);
    stetho_eval_opts o;
    stetho_eval_opts_default(&o);
    o.data_dir = tu_path(shared, "data/math");
    o.limit = 80;
    o.max_gen_toks = 1;  /* the order is under test, not the answers */
    o.batch_size = 16;
    o.num_fewshot = 0;
    stetho_eval_result r;
    const char *out = tu_tmpdir("eval-shared");
    stetho_status st = stetho_eval_run(&m, &tok, &o, out, &r);
    if (st) print_message("%s\n", stetho_last_error());
    assert_int_equal(st, STETHO_OK);
    static const uint64_t sizes[STETHO_EVAL_N_SUBJECTS] = {1187, 474, 479, 903, 540, 871, 546};
    assert_int_equal(r.n_tasks, STETHO_EVAL_N_SUBJECTS);
    for (int s = 0; s < STETHO_EVAL_N_SUBJECTS; s++) {
        assert_string_equal(r.tasks[s].task, STETHO_EVAL_TASKS[s]);
        assert_int_equal(r.tasks[s].n_original, sizes[s]); /* 540: the paper's Number Theory denominator */
        assert_int_equal(r.tasks[s].n, (uint64_t)o.limit);
    }
    stetho_results res;
    assert_int_equal(stetho_results_read(r.results_path, true, &res), STETHO_OK);

    rows data[STETHO_EVAL_N_SUBJECTS], gold[STETHO_EVAL_N_SUBJECTS];
    memset(data, 0, sizeof data);
    memset(gold, 0, sizeof gold);
    read_rows(tu_path(shared, "data/math/test.jsonl"), NULL, data);
    read_rows(tu_path(gshared, "reference/answers/gold_vectors_public.jsonl"), "normalized", gold);
    size_t checked = 0, checked_eval = 0;
    for (int s = 0; s < STETHO_EVAL_N_SUBJECTS; s++) {
        /* what eval showed the model, by doc_id */
        const stetho_results_task *t = stetho_results_task_get(&res, STETHO_EVAL_TASKS[s]);
        assert_non_null(t);
        assert_non_null(t->samples_path);
        rows shown;
        memset(&shown, 0, sizeof shown);
        stetho_jsonl_reader jr;
        assert_int_equal(stetho_jsonl_open(&jr, t->samples_path), STETHO_OK);
        bool got;
        while (stetho_jsonl_next(&jr, &got) == STETHO_OK && got) {
            json_t *doc = json_object_get(jr.obj, "doc");
            assert_int_equal(json_integer_value(json_object_get(jr.obj, "doc_id")), (json_int_t)shown.n);
            rows_add(&shown, NULL, json_string_value(json_object_get(doc, "problem")),
                     json_string_value(json_object_get(doc, "solution")),
                     json_string_value(json_object_get(jr.obj, "target")));
        }
        stetho_jsonl_close(&jr);
        assert_int_equal(shown.n, (size_t)o.limit);
        /* doc_id i is the data file's i-th problem of the subject ... */
        assert_int_equal(data[s].n, sizes[s]);
        for (size_t i = 0; i < shown.n; i++) {
            assert_string_equal(shown.problem[i], data[s].problem[i]);
            assert_string_equal(shown.solution[i], data[s].solution[i]);
        }
        /* ... and lm-eval's: the gold rows sit at their file name's rank, in order */
        size_t last = 0;
        for (size_t g = 0; g < gold[s].n; g++) {
            const char *name = strrchr(gold[s].id[g], '/');
            assert_non_null(name);
            size_t rank = 0;
            for (size_t i = 0; i < data[s].n; i++) {
                const char *other = strrchr(data[s].id[i], '/');
                assert_non_null(other);
                rank += strcmp(other, name) < 0;
            }
            assert_true(g == 0 || rank > last);
            last = rank;
            assert_true(rank < data[s].n);
            assert_string_equal(data[s].id[rank], gold[s].id[g]);
            assert_string_equal(data[s].solution[rank], gold[s].solution[g]);
            checked++;
            if (rank >= shown.n) continue;
            if (strcmp(shown.solution[rank], gold[s].solution[g]))
                fail_msg("%s: doc_id %zu is not lm-eval's %s", STETHO_EVAL_TASKS[s], rank, gold[s].id[g]);
            assert_string_equal(shown.target[rank], gold[s].target[g]);
            checked_eval++;
        }
        rows_free(&shown);
        rows_free(&data[s]);
        rows_free(&gold[s]);
    }
    print_message("lm-eval order: %zu reference problems at their rank in the data file, %zu of them checked "
                  "through eval's samples\n", checked, checked_eval);
    assert_int_equal(checked, 2485);
    stetho_results_free(&res);
    stetho_eval_result_free(&r);
    stetho_tokenizer_free(&tok);
    stetho_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompt_bytes),
        cmocka_unit_test(test_run_resume_and_results),
        cmocka_unit_test(test_resume_checks_settings),
        cmocka_unit_test(test_empty_gold_is_wrong),
        cmocka_unit_test(test_shared_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
