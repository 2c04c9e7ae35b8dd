#include "cli.h"
int cmd_edit(int argc, char **argv) { (void)argc; (void)argv; return 1; }
