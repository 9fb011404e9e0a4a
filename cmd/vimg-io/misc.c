/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg-io's small commands: discard, flush, truncate, sleep, sigraise, quit and
 * help.  Output and messages follow qemu-io 7.2.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cmds.h"
#include "util.h"

int
io_cmd_discard(struct io_ctx *ctx, int argc, char **argv)
{
    const struct io_cmd *cmd = io_cmd_find("discard");
    bool terse = false, quiet = false;
    struct timespec t1, t2;
    int64_t off, count;
    int c;

    optind = 0;
    while ((c = getopt(argc, argv, "Cq")) != -1) {
        switch (c) {
        case 'C': terse = true; break;
        case 'q': quiet = true; break;
        default: io_cmd_usage(cmd); return -1;
        }
    }
    if (optind != argc - 2) {
        io_cmd_usage(cmd);
        return -1;
    }
    if (io_arg_num(argv[optind], &off) == -1 ||
        io_arg_num(argv[optind + 1], &count) == -1)
        return -1;
    if (count > IO_MAX_BYTES) {
        io_err("length cannot exceed %lld, given %s\n", IO_MAX_BYTES,
               argv[optind + 1]);
        return -1;
    }
    if (io_check_range(ctx, "discard", off, count) == -1)
        return -1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (count && vimg_discard(ctx->node, off, count, 0) == -1) {
        io_lib_err("discard");
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t2);
    if (!quiet)
        io_report("discard", io_tsub(t2, t1), off, count, count, 1, terse);
    return 0;
}

int
io_cmd_flush(struct io_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    if (vimg_flush(ctx->node) == -1) {
        io_lib_err("flush");
        return -1;
    }
    return 0;
}

int
io_cmd_truncate(struct io_ctx *ctx, int argc, char **argv)
{
    int64_t size;

    (void)argc;
    if (io_arg_num(argv[1], &size) == -1)
        return -1;
    if (vimg_truncate(ctx->node, size) == -1) {
        io_lib_err("truncate");
        return -1;
    }
    return 0;
}

int
io_cmd_sleep(struct io_ctx *ctx, int argc, char **argv)
{
    struct timespec ts;
    char *end;
    long ms;

    (void)ctx;
    (void)argc;
    errno = 0;
    ms = strtol(argv[1], &end, 0);
    if (errno || ms < 0 || *end || end == argv[1]) {
        io_err("%s is not a valid number\n", argv[1]);
        return -1;
    }
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = ms % 1000 * 1000000L;
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
    return 0;
}

int
io_cmd_sigraise(struct io_ctx *ctx, int argc, char **argv)
{
    char *end;
    long sig;

    (void)ctx;
    (void)argc;
    errno = 0;
    sig = strtol(argv[1], &end, 0);
    if (errno || sig <= 0 || sig >= NSIG || *end || end == argv[1]) {
        io_err("%s is not a valid signal number\n", argv[1]);
        return -1;
    }
    /* Unflushed output would be lost if the signal kills us. */
    fflush(stdout);
    raise((int)sig);
    return 0;
}

int
io_cmd_quit(struct io_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    ctx->quit = true;
    return 0;
}

/* "NAME [ARGS ]-- ONELINE", NAME as the user typed it. */
static void
help_oneline(const char *name, const struct io_cmd *cmd)
{
    printf("%s ", name);
    if (cmd->args)
        printf("%s ", cmd->args);
    printf("-- %s\n", cmd->oneline);
}

int
io_cmd_help(struct io_ctx *ctx, int argc, char **argv)
{
    const struct io_cmd *cmd;

    (void)ctx;
    if (argc == 1) {
        for (int i = 0; i < io_ncmds; i++)
            help_oneline(io_cmds[i].name, &io_cmds[i]);
        printf("\nUse 'help commandname' for extended help.\n");
        return 0;
    }
    cmd = io_cmd_find(argv[1]);
    if (!cmd) {
        io_err("command \"%s\" not found\n", argv[1]);
        return -1;
    }
    help_oneline(argv[1], cmd);
    if (cmd->help)
        printf("\n%s\n", cmd->help);
    return 0;
}
