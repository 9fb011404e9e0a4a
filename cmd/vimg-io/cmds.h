/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg-io's command table and the command handlers.  A handler gets the
 * open image and argv (argv[0] is the name the user typed), prints its
 * own results and errors, and returns 0 or -1.  main.c checks the
 * argument count and write permission before calling it.
 */
#ifndef VIMG_IO_CMDS_H
#define VIMG_IO_CMDS_H

#include <stdbool.h>
#include <stdint.h>

#include "vimg.h"

struct io_ctx {
    vimg_node *node; /* the open image */
    bool read_only;  /* opened with -r or -U */
    bool quit;       /* set by "quit": run no more commands */
};

struct io_cmd {
    const char *name;
    const char *altname; /* short alias or NULL */
    int (*fn)(struct io_ctx *ctx, int argc, char **argv);
    int argmin, argmax;  /* argument counts; argmax -1: no limit */
    bool needs_write;    /* refused on a read-only image */
    const char *args;    /* synopsis of the arguments, or NULL */
    const char *oneline; /* one-line summary */
    const char *help;    /* extended help for "help NAME", or NULL */
};

/* The commands, sorted by name; IO_NCMDS entries. */
extern const struct io_cmd io_cmds[];
extern const int io_ncmds;

/* The command called NAME (or by its alias), or NULL. */
const struct io_cmd *io_cmd_find(const char *name);
/* Print "name args -- oneline" to stderr (bad usage of CMD). */
void io_cmd_usage(const struct io_cmd *cmd);
/* Fail with EIO as qemu does when [OFFSET, OFFSET+COUNT) is not inside
 * the image; 0 when it is.  Prints "CMD failed: ..." on failure. */
int io_check_range(struct io_ctx *ctx, const char *cmd, int64_t offset,
                   int64_t count);

/* rw.c */
int io_cmd_read(struct io_ctx *ctx, int argc, char **argv);
int io_cmd_write(struct io_ctx *ctx, int argc, char **argv);

/* misc.c */
int io_cmd_discard(struct io_ctx *ctx, int argc, char **argv);
int io_cmd_flush(struct io_ctx *ctx, int argc, char **argv);
int io_cmd_truncate(struct io_ctx *ctx, int argc, char **argv);
int io_cmd_sleep(struct io_ctx *ctx, int argc, char **argv);
int io_cmd_sigraise(struct io_ctx *ctx, int argc, char **argv);
int io_cmd_quit(struct io_ctx *ctx, int argc, char **argv);
int io_cmd_help(struct io_ctx *ctx, int argc, char **argv);

/* map.c */
int io_cmd_map(struct io_ctx *ctx, int argc, char **argv);
int io_cmd_alloc(struct io_ctx *ctx, int argc, char **argv);
int io_cmd_length(struct io_ctx *ctx, int argc, char **argv);

#endif
