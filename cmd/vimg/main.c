/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg: qemu-img-style image tool.  Dispatches to one subcommand per
 * file, from the table in commands.def.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
#define CMD(name, fn, summary) { #name, fn, summary },
#include "commands.def"
#undef CMD
};

const char *cmd_name = NULL;

static void
usage(FILE *f)
{
    fprintf(f, "Usage: vimg COMMAND [OPTIONS...]\n"
               "       vimg COMMAND --help\n"
               "       vimg --version\n\nCommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nSee vimg(1) for details.\n");
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("vimg version " VIMG_VERSION "\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (!strcmp(argv[1], commands[i].name)) {
            cmd_name = commands[i].name;
            opterr = 0; /* cmd_bad_option prints one line instead */
            return commands[i].fn(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "vimg: unknown command '%s' (see 'vimg --help')\n",
            argv[1]);
    return 1;
}
