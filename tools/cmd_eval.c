/* stetho eval MODEL --tasks minerva_math --output-path DIR: Minerva Math as
 * lm-evaluation-harness runs it (same task names and flags). */
#include "cli_edit.h"
#include "stetho/eval.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *help =
    "usage: stetho eval MODEL --tasks TASKS --output-path DIR [--num-fewshot N] [--limit N]\n"
    "                   [--max-gen-toks N] [--batch-size B] [--chat] [--data DIR]\n"
    "                   [--log-samples] [--threads N] [--compute f32|bf16] [--quiet]\n"
    "                   [(--task-vector TV | --finetuned FT) [--layers SPEC |\n"
    "                    --scores SCORES.json --top-k K | --select METHOD ...]\n"
    "                    [--modules SPEC] [--alpha A] [--allow-missing]]\n"
    "\n"
    "Evaluates MODEL on Minerva Math exactly as lm-evaluation-harness's minerva_math\n"
    "builds its prompts and scores them (docs/eval.md), with stetho's LaTeX\n"
    "equivalence check. Writes DIR/results_<timestamp>.json shaped like lm-eval's and,\n"
    "with --log-samples, DIR/samples_<task>_<timestamp>.jsonl. An interrupted run\n"
    "resumes: rerun the same command (generations are reused only when the model,\n"
    "--num-fewshot, --max-gen-toks and --chat are the same; otherwise it starts\n"
    "afresh and says so).\n"
    "  --tasks T          minerva_math (the 7 subjects and their group),\n"
    "                     minerva_math500, or subtasks: minerva_math_algebra,\n"
    "                     minerva_math_counting_and_prob, minerva_math_geometry,\n"
    "                     minerva_math_intermediate_algebra, minerva_math_num_theory,\n"
    "                     minerva_math_prealgebra, minerva_math_precalc (comma-separated)\n"
    "  --num-fewshot N    Minerva examples before each problem, 0-4 (default 4)\n"
    "  --limit N          first N problems of each task (lm-eval's order)\n"
    "  --max-gen-toks N   new tokens per answer (default 256)\n"
    "  --batch-size B     sequences decoded together (default 8)\n"
    "  --chat             wrap each prompt in the model's chat template\n"
    "  --data DIR         test.jsonl (Hendrycks MATH fields), math500_test.jsonl and\n"
    "                     minerva_fewshot.json (default ../shared/data/math)\n"
    "  --output-path DIR  where results go (created)\n"
    "  --log-samples      also write every problem's prompt, generation and verdict\n"
    "  --threads N        worker threads (default: all cores)\n"
    "  --compute MODE     f32 (default) or bf16: activations rounded to bf16 at bf16 weights\n"
    "  --quiet            no progress bar (notes about resuming are still printed)\n"
    "  --task-vector TV, --finetuned FT\n"
    "                     evaluate MODEL + alpha * tau on a selection without writing a\n"
    "                     checkpoint: the edit 'stetho edit' would write (same options,\n"
    "                     same bytes), applied in memory at load time and recorded in\n"
    "                     the results' model_args\n"
    "  --layers, --scores, --top-k, --select, --seed, --metric, --modules, --alpha,\n"
    "  --allow-missing    choose the edit as for 'stetho edit' (see its --help)\n";

static void on_notice(void *user, const char *task, const char *message) {
    (void)user;
    fprintf(stderr, "stetho: note: %s: %s\n", task, message);
}

static void on_progress(void *user, const char *task, size_t done, size_t total, size_t correct, double elapsed) {
    (void)user;
    double rate = elapsed > 0 ? (double)done / elapsed : 0;
    double eta = rate > 0 ? (double)(total - done) / rate : 0;
    fprintf(stderr, "\r%-34s %5zu/%-5zu %5.1f%%  acc %5.1f%%  %6.2f problems/s  ETA %5.0fs ", task, done, total,
            total ? 100.0 * done / total : 100.0, done ? 100.0 * correct / done : 0.0, rate, eta);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

/* Append to a NUL-terminated buffer of cap bytes, truncating. */
static void append(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t cap, const char *fmt, ...) {
    size_t used = strlen(buf);
    if (used + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, cap - used, fmt, ap);
    va_end(ap);
}

/* MODEL, or MODEL with the edit applied in memory; what was evaluated is
 * appended to lm-eval's model_args (lists joined by ';', since lm-eval splits
 * model_args on commas). Returns an exit code. */
static int load_model(const cli_edit_args *ea, const char *path, stetho_model *m, char *margs, size_t cap) {
    stetho_status st;
    if (!ea->any) {
        st = stetho_model_load(m, path);
        return st ? cli_fail(st, "MODEL must be a Hugging Face model directory (config.json + safetensors)") : 0;
    }
    stetho_checkpoint base, delta;
    stetho_selection sel;
    const char *meta;
    int rc = cli_edit_open(ea, path, &base, &delta, &sel, &meta);
    if (rc) return rc;
    stetho_edit_opts eo = {.alpha = ea->alpha, .allow_missing = ea->allow_missing};
    st = stetho_model_load_edit(m, path, &delta, ea->ftp != NULL, &sel, &eo);
    if (st) rc = cli_fail(st, NULL);
    append(margs, cap, ",%s=%s,alpha=%.17g,modules=", ea->tv ? "task_vector" : "finetuned", ea->tv ? ea->tv : ea->ftp,
           ea->alpha);
    for (const char *p = ea->modules; *p; p++) append(margs, cap, "%c", *p == ',' ? ';' : *p);
    append(margs, cap, ",layers=");
    for (int l = 0, first = 1; l < sel.n_layers; l++)
        if (sel.layers[l]) append(margs, cap, "%s%d", first ? "" : ";", l), first = 0;
    if (sel.non_layer) append(margs, cap, ";non_layer");
    free(sel.layers);
    free((char *)meta);
    stetho_checkpoint_close(&delta);
    stetho_checkpoint_close(&base);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *out = NULL, *val = NULL;
    bool bad = false, quiet = false;
    cli_edit_args ea;
    cli_edit_args_init(&ea);
    stetho_eval_opts o;
    stetho_eval_opts_default(&o);
    o.log_samples = false;
    long l;
    for (int i = 1; i < argc && !bad; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (!strcmp(a, "--chat") || !strcmp(a, "--apply_chat_template")) {
            o.chat = true;
        } else if (!strcmp(a, "--log-samples") || !strcmp(a, "--log_samples")) {
            o.log_samples = true;
        } else if (!strcmp(a, "--quiet")) {
            quiet = true;
        } else if (cli_opt(argc, argv, &i, "--tasks", &o.tasks, &bad, "eval") ||
                   cli_opt(argc, argv, &i, "--data", &o.data_dir, &bad, "eval") ||
                   cli_opt(argc, argv, &i, "--output-path", &out, &bad, "eval") ||
                   cli_opt(argc, argv, &i, "--output_path", &out, &bad, "eval") ||
                   cli_opt(argc, argv, &i, "-o", &out, &bad, "eval")) {
        } else if (cli_opt(argc, argv, &i, "--num-fewshot", &val, &bad, "eval") ||
                   cli_opt(argc, argv, &i, "--num_fewshot", &val, &bad, "eval")) {
            if (!bad && !(bad = !cli_parse_int("eval", "--num-fewshot", val, 0, 4, &l))) o.num_fewshot = (int)l;
        } else if (cli_opt(argc, argv, &i, "--limit", &val, &bad, "eval")) {
            if (!bad && !(bad = !cli_parse_int("eval", "--limit", val, 1, 100000000, &l))) o.limit = l;
        } else if (cli_opt(argc, argv, &i, "--max-gen-toks", &val, &bad, "eval") ||
                   cli_opt(argc, argv, &i, "--max_gen_toks", &val, &bad, "eval")) {
            if (!bad && !(bad = !cli_parse_int("eval", "--max-gen-toks", val, 1, 1 << 20, &l))) o.max_gen_toks = (int)l;
        } else if (cli_opt(argc, argv, &i, "--batch-size", &val, &bad, "eval") ||
                   cli_opt(argc, argv, &i, "--batch_size", &val, &bad, "eval")) {
            if (!bad && !(bad = !cli_parse_int("eval", "--batch-size", val, 1, 4096, &l))) o.batch_size = (int)l;
        } else if (cli_compute_opt(argc, argv, &i, &bad, "eval") || cli_edit_opt(argc, argv, &i, &ea, &bad, "eval")) {
        } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad, "eval")) {
            if (!bad && !(bad = !cli_parse_int("eval", "--threads", val, 1, 1024, &l))) stetho_set_threads((int)l);
        } else if (a[0] == '-' && a[1]) {
            return cli_usage("eval", "unknown option '%s'", a);
        } else if (!model_path) {
            model_path = a;
        } else {
            return cli_usage("eval", "unexpected argument '%s'", a);
        }
    }
    if (bad) return CLI_EXIT_USAGE;
    if (!model_path) return cli_usage("eval", "need MODEL");
    if (!out) return cli_usage("eval", "need --output-path DIR");
    if (ea.any) {
        if (!ea.tv && !ea.ftp) return cli_usage("eval", "the edit options need --task-vector TV or --finetuned FT");
        int urc = cli_edit_check(&ea, "eval");
        if (urc) return urc;
    }
    char margs[4400];
    snprintf(margs, sizeof margs, "pretrained=%s", model_path);
    if (!quiet && isatty(2)) o.progress = on_progress;
    else if (!quiet) o.progress = NULL;
    o.notice = on_notice;
    /* a typo in --tasks should not cost a model load */
    stetho_status st = stetho_eval_check_tasks(o.tasks);
    if (st) return cli_fail(st, "see 'stetho eval --help' for the task names");
    stetho_model m;
    stetho_tokenizer tok;
    int lrc = load_model(&ea, model_path, &m, margs, sizeof margs);
    if (lrc) return lrc;
    if (stetho_get_compute() == STETHO_COMPUTE_BF16) append(margs, sizeof margs, ",compute=bf16");
    o.model_args = margs;
    if ((st = stetho_tokenizer_load(&tok, model_path))) {
        stetho_model_free(&m);
        return cli_fail(st, "evaluation needs the model directory's tokenizer.json");
    }
    stetho_eval_result r;
    st = stetho_eval_run(&m, &tok, &o, out, &r);
    int rc = 0;
    if (st) {
        const char *msg = stetho_last_error();
        rc = cli_fail(st, strstr(msg, "test.jsonl") ? "point --data at a directory with test.jsonl (MATH fields)" : NULL);
    } else {
        uint64_t k = 0, n = 0;
        printf("%-36s %8s %8s %9s\n", "task", "correct", "n", "accuracy");
        for (size_t i = 0; i < r.n_tasks; i++) {
            printf("%-36s %8llu %8llu %8.2f%%\n", r.tasks[i].task, (unsigned long long)r.tasks[i].n_correct,
                   (unsigned long long)r.tasks[i].n, r.tasks[i].n ? 100.0 * r.tasks[i].n_correct / r.tasks[i].n : 0.0);
            k += r.tasks[i].n_correct;
            n += r.tasks[i].n;
        }
        if (r.n_tasks > 1) printf("%-36s %8llu %8llu %8.2f%%\n", "(all)", (unsigned long long)k, (unsigned long long)n, n ? 100.0 * k / n : 0.0);
        printf("wrote %s\n", r.results_path);
        stetho_eval_result_free(&r);
    }
    stetho_tokenizer_free(&tok);
    stetho_model_free(&m);
    return rc;
}
