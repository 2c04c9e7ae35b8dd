/* stetho: the command-line tool. Dispatches to one cmd_<verb>() per subcommand;
 * the subcommands only parse arguments, call the library and print. */
#include "cli.h"
#include "commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *verb;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"inspect", cmd_inspect, "show a checkpoint's architecture and tensors"},
    {"diff", cmd_diff, "compute a task vector (fine-tuned - base) and its statistics"},
    {"edit", cmd_edit, "write base + alpha * task vector on selected layers/modules"},
    {"compare", cmd_compare, "compare two evaluation runs: intervals, z-tests, McNemar, Holm"},
    {"generate", cmd_generate, "continue a prompt (greedy or sampled, KV cache), streaming the text"},
    {"capture", cmd_capture, "run a prompt and write activations (hook_resid_post, ...) and logits"},
    {"sae", cmd_sae, "SAEs: inspect a Gemma Scope / SAELens directory, encode activations"},
    {"diagnose", cmd_diagnose, "score layers by domain specificity of their SAE features (the stethoscope)"},
    {"project", cmd_project, "the scalpel: project a task vector onto SAE decoder directions"},
    {"eval", cmd_eval, "Minerva Math as lm-eval runs it: prompts, greedy generation, scoring, results"},
    {"perplexity", cmd_perplexity, "general-text perplexity (what an edit costs outside its domain)"},
    {"grade", cmd_grade, "grade Minerva Math generations (lm-eval extraction, LaTeX equivalence)"},
    {"demo", cmd_demo, "the tiny world end to end: build, evaluate base and fine-tuned, compare"},
    {"study", cmd_study, "the whole study from one YAML: diagnose, edits and controls, evaluation, comparison, report"},
    {"report", cmd_report, "HTML and Markdown report of a study run (RUN_DIR/summary.json)"},
    {"toy", cmd_toy, "the tiny world: 'toy build' trains its models from scratch"},
    {"tokenize", cmd_tokenize, "text -> token ids with a tokenizer.json"}, {"detokenize", cmd_detokenize, "token ids -> text"},
};

static void usage(FILE *out) {
    fprintf(out, "usage: stetho <command> [options]   (stetho <command> --help for details)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-12s %s\n", commands[i].verb, commands[i].summary);
}

/* Fault injection for tests/cli_faults.sh (SQLite style, through the whole
 * CLI): STETHO_FAULT_WRITE=N fails the Nth write to an output file,
 * STETHO_FAULT_ALLOC=N the Nth allocation. A testing hook, documented in
 * docs/design.md; unset, nothing changes. */
static void faults_from_env(void) {
    const char *w = getenv("STETHO_FAULT_WRITE"), *a = getenv("STETHO_FAULT_ALLOC");
    if (w && *w) stetho_fault_write_after(strtoull(w, NULL, 10));
    if (a && *a) stetho_fault_alloc_after(strtoull(a, NULL, 10));
}

int main(int argc, char **argv) {
    faults_from_env();
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("stetho %s\n", STETHO_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].verb)) return commands[i].fn(argc - 1, argv + 1);
    cli_error("run 'stetho --help' for the list of commands", "unknown command '%s'", argv[1]);
    return CLI_EXIT_USAGE;
}
