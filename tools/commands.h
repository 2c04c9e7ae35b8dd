/* The subcommand table: one line per verb. Add yours here and in stetho.c. */
#ifndef STETHO_COMMANDS_H
#define STETHO_COMMANDS_H

int cmd_inspect(int argc, char **argv);
int cmd_diff(int argc, char **argv);
int cmd_edit(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_capture(int argc, char **argv);
int cmd_sae(int argc, char **argv);
int cmd_project(int argc, char **argv);
int cmd_diagnose(int argc, char **argv);
int cmd_grade(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_toy(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_study(int argc, char **argv);
int cmd_tokenize(int argc, char **argv), cmd_detokenize(int argc, char **argv);

#endif
