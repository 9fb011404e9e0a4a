/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg rebase [-f FMT] -b BACKING [-F FMT] [-u] [-p] [-q] FILE
 *
 * Changes FILE's backing file.  Safe mode (the default) first copies
 * into FILE every range FILE does not allocate whose content differs
 * between the old and the new backing chain, so FILE reads the same
 * afterwards; -u only rewrites the link.  -b '' removes the backing file
 * (safe mode then copies the whole old chain into FILE: flattening).
 * As with stream-local, the link changes only after the data is durable.
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
#include "options.h"
#include "progress.h"

static const char usage_text[] =
    "Usage: vimg rebase [-f FMT] -b BACKING [-F BACKING_FMT] [-u] [-p] [-q]\n"
    "                   FILE\n"
    "\n"
    "Make BACKING (relative to FILE's folder; '' for none) FILE's backing\n"
    "file, copying into FILE what differs so that FILE reads the same.\n"
    "\n"
    "  -f FMT     format of FILE\n"
    "  -b BACKING the new backing file ('' removes it)\n"
    "  -F FMT     format of BACKING (required with a non-empty -b)\n"
    "  -u         unsafe: only rewrite the link, copy nothing\n"
    "  -p         show progress\n"
    "  -q         quiet\n";

/* Open the new backing file NAME (relative to TOP's folder). */
static struct node *
open_new_backing(struct node *top, const char *name, const char *fmt)
{
    CLEANUP_FREE char *path = node_path_relative(top->filename, name);
    json_t *opts = path ? opts_from_filename(path, fmt) : NULL;
    struct node *n;

    if (!opts)
        return NULL;
    n = node_open(opts, 0);
    json_decref(opts);
    if (!n)
        vimg_error_prefix("Could not open new backing file '%s'", name);
    return n;
}

/* Safe mode: copy into TOP, where TOP allocates nothing, what differs
 * between its current chain and NEW (NULL: no backing file). */
static int
copy_differences(struct node *top, struct node *new_backing)
{
    struct copy_params p = {
        .src = top, .dst = top, .length = top->size,
        /* Where the old chain allocates nothing it reads zeroes, which
         * the new backing file may not: compare there too.  Without a
         * new backing file those ranges read zeroes either way. */
        .min_depth = 1,
        .max_depth = new_backing ? INT_MAX : chain_length(top),
        .diff_against = new_backing, .workers = 8,
    };
    int r;

    p.progress = progress_update;
    r = copy_run(&p);
    if (r == 0)
        r = node_flush(top);
    return r;
}

static int
rebase(struct node *top, const char *name, const char *bfmt, bool unsafe)
{
    CLEANUP_FREE char *recorded = NULL;
    struct node *nb = NULL;
    int r = -1;

    if (!top->drv->change_backing) {
        vimg_error(ENOTSUP, "format '%s' has no backing file",
                   top->drv->name);
        return -1;
    }
    if (*name && !(recorded = strdup(name))) {
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    if (!unsafe && *name && !(nb = open_new_backing(top, name, bfmt)))
        return -1;
    if (!unsafe && copy_differences(top, nb) == -1)
        goto out;
    r = top->drv->change_backing(top, recorded, recorded ? bfmt : NULL);
out:
    node_unref(nb);
    return r;
}

int
cmd_rebase(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "quiet", no_argument, NULL, 'q' },
        { "progress", no_argument, NULL, 'p' },
        { "format", required_argument, NULL, 'f' },
        { NULL, 0, NULL, 0 } };
    const char *fmt = NULL, *bfile = NULL, *bfmt = NULL, *file;
    bool unsafe = false, quiet = false, progress = false;
    struct node *top;
    int c, r;

    while ((c = getopt_long(argc, argv, "+f:b:F:upqt:T:h", longopts,
                            NULL)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'b': bfile = optarg; break;
        case 'F': bfmt = optarg; break;
        case 'u': unsafe = true; break;
        case 'p': progress = true; break;
        case 'q': quiet = true; break;
        case 't': case 'T': break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return cmd_bad_option(argv);
        }
    }
    if (optind != argc - 1)
        return cmd_usage_error("expecting one filename");
    if (!bfile)
        return cmd_usage_error("Must specify backing file (-b)");
    file = argv[optind];
    if (*bfile && !bfmt) {
        cmd_error("Could not change the backing file to '%s': backing "
                  "format must be specified", bfile);
        return 1;
    }
    top = node_of(vimg_open(file, fmt, unsafe ? VIMG_OPEN_RDWR |
                                                    VIMG_OPEN_NO_BACKING
                                              : 0));
    if (top && !unsafe)
        top = chain_reopen(top, 1);
    if (!top)
        goto err;
    progress_start(NULL, (progress ? PROGRESS_SHOW : 0) |
                             (quiet ? PROGRESS_QUIET : 0));
    r = rebase(top, bfile, bfmt, unsafe);
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
