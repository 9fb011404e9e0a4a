/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The table of vimg-io commands: names, aliases, argument counts and
 * help texts, worded as qemu-io words them.  Kept sorted by name, which
 * is the order "help" lists them in.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cmds.h"
#include "util.h"

static const char read_help[] =
    " reads a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the file\n"
    "\n"
    " Reads a segment of the currently open file, optionally dumping it to "
    "the\n"
    " standard output stream (with -v option) for subsequent inspection.\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -l, -- length for pattern verification (only with -P)\n"
    " -p, -- ignored for backwards compatibility\n"
    " -P, -- use a pattern to verify read data\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -s, -- start offset for pattern verification (only with -P)\n"
    " -v, -- dump buffer to standard output\n";

static const char write_help[] =
    " writes a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open file\n"
    "\n"
    " Writes into a segment of the currently open file, using a buffer\n"
    " filled with a set pattern (0xcdcdcdcd).\n"
    " -c, -- write compressed data with blk_write_compressed\n"
    " -f, -- use Force Unit Access semantics\n"
    " -n, -- with -z, don't allow slow fallback\n"
    " -p, -- ignored for backwards compatibility\n"
    " -P, -- use different pattern to fill file\n"
    " -s, -- use a pattern file to fill the write buffer\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -u, -- with -z, allow unmapping\n"
    " -z, -- write zeroes\n";

static const char discard_help[] =
    " discards a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'discard 512 1k' - discards 1 kilobyte from 512 bytes into the file\n"
    "\n"
    " Discards a segment of the currently open file.\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -q, -- quiet mode, do not show I/O statistics\n";

static const char truncate_help[] =
    " truncates (or grows) the image to the given size\n"
    "\n"
    " Example:\n"
    " 'truncate 2M' - makes the image 2 MiB long\n";

static const char sigraise_help[] =
    " raises the given signal\n"
    "\n"
    " Example:\n"
    " 'sigraise 15' - raises SIGTERM\n"
    "\n"
    " Invokes raise(signal), where \"signal\" is the mandatory integer "
    "argument\n"
    " given to sigraise.\n";

const struct io_cmd io_cmds[] = {
    {"alloc", NULL, io_cmd_alloc, 1, 2, false, "offset [count]",
     "checks if offset is allocated in the file", NULL},
    {"discard", "d", io_cmd_discard, 2, -1, true, "[-Cq] off len",
     "discards a number of bytes at a specified offset", discard_help},
    {"flush", "f", io_cmd_flush, 0, 0, false, NULL,
     "flush all in-core file state to disk", NULL},
    {"help", "?", io_cmd_help, 0, 1, false, "[command]",
     "help for one or all commands", NULL},
    {"length", "l", io_cmd_length, 0, 0, false, NULL,
     "gets the length of the current file", NULL},
    {"map", NULL, io_cmd_map, 0, 0, false, "",
     "prints the allocated areas of a file", NULL},
    {"quit", "q", io_cmd_quit, 0, 0, false, NULL, "exit the program", NULL},
    {"read", "r", io_cmd_read, 2, -1, false,
     "[-Cqv] [-P pattern [-s off] [-l len]] off len",
     "reads a number of bytes at a specified offset", read_help},
    {"sigraise", NULL, io_cmd_sigraise, 1, 1, false, "signal",
     "raises a signal", sigraise_help},
    {"sleep", NULL, io_cmd_sleep, 1, 1, false, NULL,
     "waits for the given value in milliseconds", NULL},
    {"truncate", "t", io_cmd_truncate, 1, 1, true, "off",
     "truncates the current file at the given offset", truncate_help},
    {"write", "w", io_cmd_write, 2, -1, true,
     "[-cCfnquz] [-P pattern | -s source_file] off len",
     "writes a number of bytes at a specified offset", write_help},
};

const int io_ncmds = sizeof io_cmds / sizeof io_cmds[0];

const struct io_cmd *
io_cmd_find(const char *name)
{
    for (int i = 0; i < io_ncmds; i++)
        if (!strcmp(io_cmds[i].name, name) ||
            (io_cmds[i].altname && !strcmp(io_cmds[i].altname, name)))
            return &io_cmds[i];
    return NULL;
}

void
io_cmd_usage(const struct io_cmd *cmd)
{
    io_err("%s %s -- %s\n", cmd->name, cmd->args ? cmd->args : "",
           cmd->oneline);
}

int
io_check_range(struct io_ctx *ctx, const char *cmd, int64_t offset,
               int64_t count)
{
    int64_t size = vimg_get_size(ctx->node);

    if (size < 0) {
        io_lib_err(cmd);
        return -1;
    }
    if (offset > size || size - offset < count) {
        io_errno_err(cmd, EIO);
        return -1;
    }
    return 0;
}
