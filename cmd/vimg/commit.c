/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg commit [-f FMT] [-b BASE] [-d] [-p] [-q] [-t CACHE] FILE
 *
 * Copies what FILE's chain holds above BASE (default: FILE's backing
 * file) into BASE, growing BASE if it is smaller, then empties FILE
 * unless -d (or -b, which implies -d, as in qemu-img).  Layers between
 * FILE and BASE are not changed; like qemu-img's, they no longer read as
 * before once BASE has taken their data.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "chain.h"
#include "cmd.h"
#include "copy.h"
#include "error.h"
#include "io.h"
#include "progress.h"

static const char usage_text[] =
    "Usage: vimg commit [-f FMT] [-b BASE] [-d] [-p] [-q] [-t CACHE] FILE\n"
    "\n"
    "Copy FILE's data into its backing file (or into BASE, further down\n"
    "the chain), then empty FILE.\n"
    "\n"
    "  -f FMT     format of FILE\n"
    "  -b BASE    commit into BASE (implies -d)\n"
    "  -d         do not empty FILE afterwards\n"
    "  -p         show progress\n"
    "  -q         quiet\n"
    "  -t CACHE   cache mode (accepted for compatibility)\n";

static int
do_commit(struct node *top, int base_depth, bool empty)
{
    struct node *base = chain_layer(top, base_depth);
    struct copy_params p = {
        .src = top, .dst = base, .length = top->size,
        .min_depth = 0, .max_depth = base_depth, .workers = 8,
    };

    p.progress = progress_update;
    if (base->size < top->size &&
        node_truncate(base, top->size, PREALLOC_OFF) == -1)
        goto err;
    if (copy_run(&p) == -1 || node_flush(base) == -1)
        goto err;
    if (empty) {
        if (!top->drv->make_empty) {
            vimg_error(ENOTSUP, "format '%s' cannot be emptied",
                       top->drv->name);
            goto err;
        }
        if (top->drv->make_empty(top) == -1)
            goto err;
    }
    return 0;
err:
    return -1;
}

int
cmd_commit(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "quiet", no_argument, NULL, 'q' },
        { "progress", no_argument, NULL, 'p' },
        { "format", required_argument, NULL, 'f' },
        { NULL, 0, NULL, 0 } };
    const char *fmt = NULL, *base_name = NULL, *file;
    bool keep = false, quiet = false, progress = false;
    struct node *top;
    int c, base_depth = 1, r;

    while ((c = getopt_long(argc, argv, "+f:b:dpqt:r:h", longopts, NULL)) !=
           -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'b': base_name = optarg; keep = true; break;
        case 'd': keep = true; break;
        case 'p': progress = true; break;
        case 'q': quiet = true; break;
        case 't': case 'r': break;
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
    if (!top->backing) {
        node_unref(top);
        cmd_error("Image does not have a backing file");
        return 1;
    }
    if (base_name && (base_depth = chain_find(top, base_name)) == -1) {
        node_unref(top);
        goto err;
    }
    top = chain_reopen(top, (1ul << base_depth) | (keep ? 0 : 1));
    if (!top)
        goto err;
    progress_start(NULL, (progress ? PROGRESS_SHOW : 0) |
                             (quiet ? PROGRESS_QUIET : 0));
    r = do_commit(top, base_depth, !keep);
    progress_finish(r == 0);
    if (node_unref(top) == -1)
        r = -1;
    if (r == -1)
        goto err;
    if (!quiet)
        printf("Image committed.\n");
    return 0;
err:
    cmd_error("%s", vimg_get_error());
    return 1;
}
