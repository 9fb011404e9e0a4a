/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg stream-local [-f FMT] [-b BASE] [-p] [-q] FILE
 *
 * The offline form of live streaming: copies into FILE everything its
 * chain holds below it, down to (not including) BASE, then records BASE
 * (or nothing) as FILE's backing file.
 *
 * Crash safety: while data is copied, FILE still has its old backing
 * file and every copied cluster holds what the chain held there, so FILE
 * reads the same at every moment; the link changes only after all of it
 * is durable, in one header write.  Run again after a crash, it copies
 * what is still missing and finishes.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain.h"
#include "cleanup.h"
#include "cmd.h"
#include "copy.h"
#include "error.h"
#include "io.h"
#include "progress.h"

static const char usage_text[] =
    "Usage: vimg stream-local [-f FMT] [-b BASE] [-p] [-q] FILE\n"
    "\n"
    "Copy into FILE the data of its backing chain down to BASE (not\n"
    "included; the whole chain without -b), then make BASE (or nothing)\n"
    "FILE's backing file.  Safe to interrupt and run again.\n"
    "\n"
    "  -f FMT     format of FILE\n"
    "  -b BASE    stop at BASE, which stays FILE's backing file\n"
    "  -p         show progress\n"
    "  -q         quiet\n";

/* Copy, then relink FILE to the layer at BASE_DEPTH (recorded as
 * BASE_NAME) or, with no base, to nothing. */
static int
do_stream(struct node *top, int base_depth, const char *base_name)
{
    struct node *base = base_depth > 0 ? chain_layer(top, base_depth) : NULL;
    struct copy_params p = {
        .src = top, .dst = top, .length = top->size,
        .min_depth = 1, .max_depth = base ? base_depth : chain_length(top),
        .workers = 8,
    };
    int r = -1;

    p.progress = progress_update;
    if (!top->drv->change_backing) {
        vimg_error(ENOTSUP, "format '%s' has no backing file",
                   top->drv->name);
        goto out;
    }
    if (copy_run(&p) == -1 || node_flush(top) == -1)
        goto out;
    if (base_depth == 1)
        r = 0; /* the base already is the backing file */
    else
        r = top->drv->change_backing(top, base ? base_name : NULL,
                                     base ? base->drv->name : NULL);
out:
    return r;
}

int
cmd_stream_local(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "quiet", no_argument, NULL, 'q' },
        { "progress", no_argument, NULL, 'p' },
        { "format", required_argument, NULL, 'f' },
        { NULL, 0, NULL, 0 } };
    const char *fmt = NULL, *base_arg = NULL, *file;
    CLEANUP_FREE char *base_name = NULL;
    bool quiet = false, progress = false;
    struct node *top;
    int c, base_depth = -1, r;

    while ((c = getopt_long(argc, argv, "+f:b:pqh", longopts, NULL)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'b': base_arg = optarg; break;
        case 'p': progress = true; break;
        case 'q': quiet = true; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return cmd_bad_option(argv);
        }
    }
    if (optind != argc - 1)
        return cmd_usage_error("expecting one filename");
    file = argv[optind];
    top = node_of(vimg_open(file, fmt, 0));
    if (!top)
        goto err;
    if (base_arg) {
        base_depth = chain_find(top, base_arg);
        if (base_depth == -1 ||
            !(base_name = chain_backing_name(top, base_arg))) {
            node_unref(top);
            goto err;
        }
    }
    top = chain_reopen(top, 1);
    if (!top)
        goto err;
    progress_start(NULL, (progress ? PROGRESS_SHOW : 0) |
                             (quiet ? PROGRESS_QUIET : 0));
    r = do_stream(top, base_depth, base_name);
    progress_finish(r == 0);
    if (node_unref(top) == -1)
        r = -1;
    if (r == -1)
        goto err;
    return 0;
err:
    cmd_error("%s", vimg_get_error());
    return 1;
}
