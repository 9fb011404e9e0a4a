/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg-io: drives one image with qemu-io's command language.  This file
 * parses the program's options, opens the image, and runs the commands
 * given with -c, in order, or else reads them from standard input one
 * line at a time.  Every command runs even if an earlier one failed; the
 * exit status is 1 if any failed (or the image could not be opened or
 * closed cleanly), else 0, as with qemu-io.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "cmds.h"
#include "util.h"

#ifndef VIMG_VERSION
#define VIMG_VERSION "0.1.0"
#endif

struct main_opts {
    const char *format;
    bool read_only, force_share, image_opts;
    const char **cmds; /* -c arguments, in order */
    int ncmds;
};

enum { OPT_IMAGE_OPTS = 256, OPT_OBJECT };

static const char short_opts[] = "hVc:d:f:rsnCmki:t:T:U";
static const struct option long_opts[] = {
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {"cmd", required_argument, NULL, 'c'},
    {"format", required_argument, NULL, 'f'},
    {"read-only", no_argument, NULL, 'r'},
    {"force-share", no_argument, NULL, 'U'},
    {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
    {"snapshot", no_argument, NULL, 's'},
    {"copy-on-read", no_argument, NULL, 'C'},
    {"trace", required_argument, NULL, 'T'},
    {"object", required_argument, NULL, OPT_OBJECT},
    {"nocache", no_argument, NULL, 'n'},
    {"misalign", no_argument, NULL, 'm'},
    {"native-aio", no_argument, NULL, 'k'},
    {"aio", required_argument, NULL, 'i'},
    {"cache", required_argument, NULL, 't'},
    {"discard", required_argument, NULL, 'd'},
    {NULL, 0, NULL, 0},
};

static void
usage(FILE *f)
{
    fprintf(f,
            "Usage: vimg-io [OPTIONS]... [-c STRING]... FILE\n"
            "Drive a disk image with qemu-io's command language\n"
            "\n"
            "  --image-opts         treat FILE as an option string\n"
            "                       (driver=qcow2,file.filename=x.qcow2)\n"
            "  -c, --cmd STRING     execute command with its arguments\n"
            "                       from the given string (repeatable)\n"
            "  -f, --format FMT     the image format (raw or qcow2);\n"
            "                       probed when absent\n"
            "  -r, --read-only      open the image read-only\n"
            "  -U, --force-share    force shared permissions (implies -r)\n"
            "  -h, --help           display this help and exit\n"
            "  -V, --version        output version information and exit\n"
            "\n"
            "Without -c, commands are read from standard input, one a line.\n"
            "-n, -t, -i, -k, -m and -d are accepted for compatibility with\n"
            "qemu-io and ignored.\n"
            "See 'vimg-io -c help FILE' for the commands.\n");
}

/* Parse the command line into O; returns -1 to exit 0 (help, version),
 * -2 to exit 1, else 0. */
static int
parse_opts(int argc, char **argv, struct main_opts *o)
{
    int c;

    while ((c = getopt_long(argc, argv, short_opts, long_opts, NULL)) != -1) {
        switch (c) {
        case 'h': usage(stdout); return -1;
        case 'V': printf("vimg-io version %s\n", VIMG_VERSION); return -1;
        case 'c': o->cmds[o->ncmds++] = optarg; break;
        case 'f': o->format = optarg; break;
        case 'r': o->read_only = true; break;
        case 'U': o->force_share = true; break;
        case OPT_IMAGE_OPTS: o->image_opts = true; break;
        case 'n':
        case 'm':
        case 'k':
        case 'i':
        case 't':
        case 'd': break; /* cache and aio tuning: nothing to tune here */
        case 's':
        case 'C':
        case 'T':
        case OPT_OBJECT:
            fprintf(stderr, "vimg-io: option '%s' is not supported\n",
                    argv[optind - 1]);
            return -2;
        default:
            fprintf(stderr, "Try 'vimg-io --help' for more information.\n");
            return -2;
        }
    }
    if (o->image_opts && o->format) {
        fprintf(stderr, "vimg-io: --image-opts and -f are mutually "
                        "exclusive\n");
        return -2;
    }
    if (optind != argc - 1) {
        fprintf(stderr, "vimg-io: %s\n",
                optind == argc ? "no image file given"
                               : "only one image file may be given");
        fprintf(stderr, "Try 'vimg-io --help' for more information.\n");
        return -2;
    }
    return 0;
}

static vimg_node *
open_image(const struct main_opts *o, const char *file)
{
    unsigned flags = 0;
    vimg_node *node;

    /* A probed raw image is accepted for reading only (the library's
     * rule); we warn about it as qemu-io does. */
    if (o->force_share)
        flags |= VIMG_OPEN_FORCE_SHARE | VIMG_OPEN_ALLOW_PROBE_RAW;
    else if (o->read_only)
        flags |= VIMG_OPEN_ALLOW_PROBE_RAW;
    else
        flags |= VIMG_OPEN_RDWR;
    if (o->image_opts)
        node = vimg_open_opts(file, flags);
    else
        node = vimg_open(file, o->format, flags);
    if (!node) {
        fprintf(stderr, "vimg-io: can't open device %s: %s\n", file,
                vimg_get_error());
        return NULL;
    }
    if (!o->image_opts && !o->format && !strcmp(vimg_get_format(node), "raw"))
        fprintf(stderr,
                "WARNING: Image format was not specified for '%s' and "
                "probing guessed raw.\n"
                "         Automatically detecting the format is dangerous "
                "for raw images.\n"
                "         Specify the 'raw' format explicitly to remove "
                "this warning.\n",
                file);
    return node;
}

/* Check the argument count and permissions, then run CMD. */
static int
dispatch(struct io_ctx *ctx, const struct io_cmd *cmd, int argc, char **argv)
{
    int n = argc - 1;

    if (n < cmd->argmin || (cmd->argmax != -1 && n > cmd->argmax)) {
        if (cmd->argmax == -1)
            io_err("bad argument count %d to %s, expected at least %d "
                   "arguments\n",
                   n, argv[0], cmd->argmin);
        else if (cmd->argmin == cmd->argmax)
            io_err("bad argument count %d to %s, expected %d arguments\n", n,
                   argv[0], cmd->argmin);
        else
            io_err("bad argument count %d to %s, expected between %d and "
                   "%d arguments\n",
                   n, argv[0], cmd->argmin, cmd->argmax);
        return -1;
    }
    if (cmd->needs_write && ctx->read_only) {
        io_err("%s failed: Block node is read-only\n", cmd->name);
        return -1;
    }
    return cmd->fn(ctx, argc, argv);
}

/* Split LINE (modified) at blanks and run it; an empty line succeeds. */
static int
run_line(struct io_ctx *ctx, char *line)
{
    CLEANUP_FREE char **argv = calloc(strlen(line) / 2 + 2, sizeof *argv);
    const struct io_cmd *cmd;
    char *save = NULL, *tok;
    int argc = 0;

    if (!argv) {
        io_err("vimg-io: out of memory\n");
        return -1;
    }
    for (tok = strtok_r(line, " \t\r\n", &save); tok;
         tok = strtok_r(NULL, " \t\r\n", &save))
        argv[argc++] = tok;
    if (!argc)
        return 0;
    cmd = io_cmd_find(argv[0]);
    if (!cmd) {
        io_err("command \"%s\" not found\n", argv[0]);
        return -1;
    }
    return dispatch(ctx, cmd, argc, argv);
}

/* Run the -c commands; returns 0 if all succeeded. */
static int
run_cmds(struct io_ctx *ctx, const struct main_opts *o)
{
    int r = 0;

    for (int i = 0; i < o->ncmds && !ctx->quit; i++) {
        CLEANUP_FREE char *line = strdup(o->cmds[i]);

        if (!line || run_line(ctx, line) == -1)
            r = -1;
    }
    return r;
}

/* Read commands from stdin until EOF or "quit"; a prompt on a tty. */
static int
run_stdin(struct io_ctx *ctx)
{
    CLEANUP_FREE char *line = NULL;
    bool tty = isatty(STDIN_FILENO);
    size_t cap = 0;
    int r = 0;

    while (!ctx->quit) {
        if (tty) {
            printf("vimg-io> ");
            fflush(stdout);
        }
        if (getline(&line, &cap, stdin) == -1)
            break;
        if (run_line(ctx, line) == -1)
            r = -1;
        fflush(stdout);
    }
    if (tty && !ctx->quit)
        putchar('\n');
    return r;
}

int
main(int argc, char **argv)
{
    struct main_opts o = {0};
    struct io_ctx ctx = {0};
    CLEANUP_FREE const char **cmds = calloc(argc, sizeof *cmds);
    int r;

    if (!cmds) {
        perror("vimg-io");
        return 1;
    }
    o.cmds = cmds;
    r = parse_opts(argc, argv, &o);
    if (r < 0)
        return r == -1 ? 0 : 1;
    ctx.read_only = o.read_only || o.force_share;
    ctx.node = open_image(&o, argv[optind]);
    if (!ctx.node)
        return 1;
    r = o.ncmds ? run_cmds(&ctx, &o) : run_stdin(&ctx);
    fflush(stdout);
    if (vimg_close(ctx.node) == -1) {
        fprintf(stderr, "vimg-io: close failed: %s\n", vimg_get_error());
        r = -1;
    }
    return r == -1 ? 1 : 0;
}
