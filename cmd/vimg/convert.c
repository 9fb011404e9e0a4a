/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg convert [-f FMT] [-O FMT] [-o OPTS] [-c] [-m N] [-W] [-S SIZE] [-n]
 *              [--target-is-zero] [-B BACKING [-F FMT]] [-p] [-q] [-U]
 *              [-t CACHE] [-T CACHE] [--image-opts] [--target-image-opts]
 *              [--bitmaps [--skip-broken-bitmaps]]
 *              [--bitmap NAME [--clear-bitmap]] SRC... DST
 *
 * qemu-img convert's options, checks and messages, over the copy engine
 * (lib/copy.c).  Sources are concatenated.  Without -n the target is
 * created with the total size (and -B as backing file: then only what
 * differs from it is written); a target created here is removed when
 * convert fails.  Like qemu-img (cache=unsafe by default) the target is
 * not fsync'ed unless -t asks for it: it is opened with
 * VIMG_OPEN_NO_FLUSH (qemu's BDRV_O_NO_FLUSH), so format metadata is
 * still written back, but nothing is forced to disk.  Cache modes none
 * and directsync (-t for the target, -T for the sources) open the image
 * with cache.direct=on, as qemu-img does: every file under it (its
 * backing chain too) is opened with O_DIRECT.
 *
 * --bitmaps copies the persistent bitmaps after the data (qemu-img's
 * checks and messages); --bitmap NAME copies only what NAME marks dirty,
 * which with -B PREVIOUS makes an incremental backup, and --clear-bitmap
 * clears NAME once the increment has been written, flushed and closed
 * (convert-bitmaps.c).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cleanup.h"
#include "bitmap.h"
#include "cmd.h"
#include "convert.h"
#include "copy.h"
#include "create.h"
#include "error.h"
#include "node.h"
#include "options.h"
#include "progress.h"
#include "vimg.h"

static const char usage_text[] =
    "Usage: vimg convert [-f FMT] [-O FMT] [-o OPTIONS] [-c] [-m N] [-W]\n"
    "                    [-S SIZE] [-n] [--target-is-zero]\n"
    "                    [-B BACKING [-F FMT]] [-p] [-q] [-U]\n"
    "                    [-t CACHE] [-T CACHE] [--image-opts]\n"
    "                    [--target-image-opts]\n"
    "                    [--bitmaps [--skip-broken-bitmaps]]\n"
    "                    [--bitmap NAME [--clear-bitmap]] SRC... DST\n"
    "\n"
    "Copy SRC (several are concatenated) to DST in format FMT.\n"
    "\n"
    "  -f FMT              format of the sources (probed if absent)\n"
    "  -O FMT              format of the target: raw (default) or qcow2\n"
    "  -o OPTIONS          create options of the target (see vimg create)\n"
    "  -c                  compress the target's clusters (qcow2)\n"
    "  -m N                parallel workers, 1 to 16 (default 8)\n"
    "  -W                  allow out-of-order writes\n"
    "  -S SIZE             zero runs of SIZE bytes become holes (default\n"
    "                      4k; 0 allocates everything)\n"
    "  -n                  do not create the target; it must exist\n"
    "  --target-is-zero    the existing target reads as zeroes (with -n)\n"
    "  -B BACKING          create the target over BACKING; write only what\n"
    "                      differs from it\n"
    "  -F FMT              format of BACKING (required with -B)\n"
    "  -p                  show progress\n"
    "  -q                  quiet\n"
    "  -U, --force-share   open the sources shared with writers\n"
    "  -t CACHE            target cache mode: none, writeback, writethrough,\n"
    "                      directsync, unsafe (default: no flush); none\n"
    "                      and directsync write with O_DIRECT\n"
    "  -T CACHE            source cache mode: none and directsync read\n"
    "                      with O_DIRECT\n"
    "  --image-opts        sources are option strings (driver=qcow2,...)\n"
    "  --target-image-opts DST is an option string (needs -n)\n"
    "  --bitmaps           copy the persistent bitmaps of SRC (qcow2)\n"
    "  --skip-broken-bitmaps  skip inconsistent bitmaps instead of failing\n"
    "  --bitmap NAME       copy only the clusters dirty in SRC's bitmap\n"
    "                      NAME (with -B PREVIOUS: an incremental backup)\n"
    "  --clear-bitmap      clear NAME once the copy is written and flushed\n";

struct conv {
    const char *src_fmt, *out_fmt, *backing, *bfmt, *cache, *src_cache;
    char *opts;
    bool compress, ooo, skip_create, target_is_zero, show_progress, quiet;
    bool force_share, image_opts, target_image_opts, bitmaps, skip_broken;
    const char *bitmap;   /* --bitmap NAME */
    bool clear_bitmap;
    unsigned workers;
    uint64_t sparse;
    char **srcs;
    int nsrc;
    const char *target;

    vimg_node **src;      /* nsrc opened sources */
    uint64_t total;       /* sum of their sizes */
    vimg_node *dst, *diff; /* target; -n -B: the opened BACKING */
    bool created;         /* remove the target on failure */
    uint64_t base;        /* progress: bytes of earlier sources */
    json_t *bitmap_list;  /* --bitmaps: what to copy */
    struct bitmap *only;  /* --bitmap: the dirty ranges */
};

static bool
valid_cache(const char *mode)
{
    static const char *const modes[] = { "none", "writeback", "writethrough",
                                         "directsync", "unsafe", "off" };

    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (!strcmp(mode, modes[i]))
            return true;
    return false;
}

/* Cache modes that bypass the page cache (qemu's cache.direct=on). */
static bool
cache_direct(const char *mode)
{
    return mode && (!strcmp(mode, "none") || !strcmp(mode, "directsync"));
}

static int
parse_sparse(const char *arg, uint64_t *out)
{
    if (vimg_parse_size(arg, out) == -1) {
        cmd_error("Invalid buffer size for sparse output specified. You may "
                  "use k, M, G, T, P or E suffixes for kilobytes, megabytes,"
                  " gigabytes, terabytes, petabytes and exabytes.");
        return -1;
    }
    if (*out % 512 || *out > (16u << 20)) {
        cmd_error("Invalid buffer size for sparse output specified. Valid "
                  "sizes are multiples of 512 up to 16777216. Select 0 to "
                  "disable sparse detection (fully allocates output).");
        return -1;
    }
    return 0;
}

static int
parse_workers(const char *arg, unsigned *out)
{
    char *end;
    long v = strtol(arg, &end, 10);

    if (!*arg || *end || v < 1 || v > 16) {
        cmd_error("Invalid number of coroutines. Allowed number of "
                  "coroutines is between 1 and 16");
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

enum { OPT_TIZ = 256, OPT_IMAGE_OPTS, OPT_TARGET_IMAGE_OPTS, OPT_BITMAPS,
       OPT_SKIP_BROKEN, OPT_BITMAP, OPT_CLEAR_BITMAP };

/* One option; 0 ok, 1 error printed, 2 --help printed. */
static int
parse_one(struct conv *cv, int c, char **argv)
{
    switch (c) {
    case 'f': cv->src_fmt = optarg; break;
    case 'O': cv->out_fmt = optarg; break;
    case 'o':
        if (cmd_append_opts(&cv->opts, optarg) == -1) {
            cmd_error("out of memory");
            return 1;
        }
        break;
    case 'c': cv->compress = true; break;
    case 'm': return parse_workers(optarg, &cv->workers) ? 1 : 0;
    case 'W': cv->ooo = true; break;
    case 'S': return parse_sparse(optarg, &cv->sparse) ? 1 : 0;
    case 'n': cv->skip_create = true; break;
    case 'B': cv->backing = optarg; break;
    case 'F': cv->bfmt = optarg; break;
    case 'p': cv->show_progress = true; break;
    case 'q': cv->quiet = true; break;
    case 'U': cv->force_share = true; break;
    case 't':
        if (!valid_cache(optarg)) {
            cmd_error("Invalid cache option: %s", optarg);
            return 1;
        }
        cv->cache = optarg;
        break;
    case 'T':
        if (!valid_cache(optarg)) {
            cmd_error("Invalid source cache option: %s", optarg);
            return 1;
        }
        cv->src_cache = optarg;
        break;
    case OPT_TIZ: cv->target_is_zero = true; break;
    case OPT_IMAGE_OPTS: cv->image_opts = true; break;
    case OPT_TARGET_IMAGE_OPTS: cv->target_image_opts = true; break;
    case OPT_BITMAPS: cv->bitmaps = true; break;
    case OPT_SKIP_BROKEN: cv->skip_broken = true; break;
    case OPT_BITMAP: cv->bitmap = optarg; break;
    case OPT_CLEAR_BITMAP: cv->clear_bitmap = true; break;
    case 'h': fputs(usage_text, stdout); return 2;
    default: cmd_bad_option(argv); return 1;
    }
    return 0;
}

static int
parse_args(struct conv *cv, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "quiet", no_argument, NULL, 'q' },
        { "force-share", no_argument, NULL, 'U' },
        { "target-is-zero", no_argument, NULL, OPT_TIZ },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "target-image-opts", no_argument, NULL, OPT_TARGET_IMAGE_OPTS },
        { "bitmaps", no_argument, NULL, OPT_BITMAPS },
        { "skip-broken-bitmaps", no_argument, NULL, OPT_SKIP_BROKEN },
        { "bitmap", required_argument, NULL, OPT_BITMAP },
        { "clear-bitmap", no_argument, NULL, OPT_CLEAR_BITMAP },
        { NULL, 0, NULL, 0 } };
    int c, r;

    while ((c = getopt_long(argc, argv, "+hf:O:o:cm:WS:nB:F:pqUt:T:",
                            longopts, NULL)) != -1)
        if ((r = parse_one(cv, c, argv)))
            return r;
    if (argc - optind < 2) {
        cmd_error("Must specify image file name");
        return 1;
    }
    cv->srcs = argv + optind;
    cv->nsrc = argc - optind - 1;
    cv->target = argv[argc - 1];
    return 0;
}

/* qemu-img's checks between options, in its order. */
static int
check_args(struct conv *cv)
{
    const char *msg = NULL;

    if (cv->skip_broken && !cv->bitmaps)
        msg = "Use of --skip-broken-bitmaps requires --bitmaps";
    else if (cv->bitmaps && cv->nsrc > 1)
        msg = "Copying bitmaps only possible with single source";
    else if (cv->bitmaps && cv->bitmap)
        msg = "--bitmaps and --bitmap are mutually exclusive";
    else if (cv->bitmap && cv->nsrc > 1)
        msg = "--bitmap needs a single source";
    else if (cv->clear_bitmap && !cv->bitmap)
        msg = "--clear-bitmap requires --bitmap";
    else if (cv->clear_bitmap && cv->force_share)
        msg = "--clear-bitmap needs the source's write lock: drop -U";
    else if (cv->image_opts && cv->src_fmt)
        msg = "--image-opts and -f are mutually exclusive";
    else if (cv->target_is_zero && !cv->skip_create)
        msg = "--target-is-zero requires use of -n flag";
    else if (cv->target_image_opts && !cv->skip_create)
        msg = "--target-image-opts requires use of -n flag";
    else if (cv->skip_create && cv->opts)
        msg = "-o has no effect when skipping image creation";
    else if (strcmp(cv->out_fmt, "raw") && strcmp(cv->out_fmt, "qcow2")) {
        cmd_error("Unknown file format '%s'", cv->out_fmt);
        return 1;
    } else if (cv->bitmaps && strcmp(cv->out_fmt, "qcow2")) {
        cmd_error("Format driver '%s' does not support bitmaps",
                  cv->out_fmt);
        return 1;
    } else if (cv->compress && strcmp(cv->out_fmt, "qcow2"))
        msg = "Compression not supported for this file format";
    else if (cv->backing && !strcmp(cv->out_fmt, "raw")) {
        cmd_error("Backing file not supported for file format 'raw'");
        return 1;
    } else if (cv->bfmt && !strcmp(cv->out_fmt, "raw")) {
        cmd_error("Backing file format not supported for file format "
                  "'raw'");
        return 1;
    } else if (cv->backing && !cv->bfmt)
        msg = "Use of backing file requires explicit backing format";
    else if (cv->target_is_zero && cv->backing)
        msg = "Cannot use --target-is-zero when the destination image has "
              "a backing file";
    if (msg) {
        cmd_error("%s", msg);
        return 1;
    }
    return 0;
}

/* "Could not open 'F': ..." unless the library already said so. */
static void
open_error(const char *file)
{
    const char *e = vimg_get_error();

    if (!strncmp(e, "Could not open", 14))
        cmd_error("%s", e);
    else
        cmd_error("Could not open '%s': %s", file, e);
}

/* Open FILE (an option string when OPTS) with cache.direct=on, unless
 * the options set cache.direct themselves; the children inherit it. */
static vimg_node *
open_direct(const char *file, const char *fmt, bool opts, unsigned flags)
{
    json_t *tree = opts ? opts_parse_dotted(file, NULL)
                        : opts_from_filename(file, fmt);
    CLEANUP_FREE char *text = NULL;
    json_t *cache;

    if (!tree)
        return NULL;
    cache = json_object_get(tree, "cache");
    if (!cache) {
        cache = json_object();
        json_object_set_new(tree, "cache", cache);
    }
    if (json_is_object(cache) && !json_object_get(cache, "direct"))
        json_object_set_new(cache, "direct", json_true());
    text = json_dumps(tree, JSON_COMPACT);
    json_decref(tree);
    if (!text) {
        vimg_error(ENOMEM, "out of memory");
        return NULL;
    }
    /* As vimg_open: a probed raw image is fine for reading. */
    if (!(flags & VIMG_OPEN_RDWR))
        flags |= VIMG_OPEN_ALLOW_PROBE_RAW;
    return vimg_open_json(text, flags);
}

static vimg_node *
open_image(const char *file, const char *fmt, bool opts, unsigned flags,
           bool direct)
{
    vimg_node *n;

    if (direct)
        n = open_direct(file, fmt, opts, flags);
    else
        n = opts ? vimg_open_opts(file, flags) : vimg_open(file, fmt, flags);
    if (!n)
        open_error(file);
    return n;
}

static int
open_sources(struct conv *cv)
{
    unsigned flags = cv->force_share ? VIMG_OPEN_FORCE_SHARE : 0;

    if (cv->clear_bitmap)
        flags |= VIMG_OPEN_RDWR;
    else if (!cv->force_share)
        flags |= VIMG_OPEN_NO_SHARE; /* as qemu-img: no writer meanwhile */

    cv->src = calloc(cv->nsrc, sizeof *cv->src);
    if (!cv->src) {
        cmd_error("out of memory");
        return -1;
    }
    for (int i = 0; i < cv->nsrc; i++) {
        cv->src[i] = open_image(cv->srcs[i], cv->src_fmt, cv->image_opts,
                                flags, cache_direct(cv->src_cache));
        if (!cv->src[i])
            return -1;
        cv->total += (uint64_t)vimg_get_size(cv->src[i]);
    }
    if (cv->bitmaps &&
        !(cv->bitmap_list = convert_bitmaps_check_source(
              cv->src[0], cv->skip_broken)))
        return -1;
    if (cv->bitmap && !(cv->only = convert_bitmap_load(cv->src[0],
                                                       cv->bitmap)))
        return -1;
    return 0;
}

/* Refuse to create over a file that a source reads (its chain, its
 * data file): creating would truncate it before any lock is taken. */
static int
check_not_a_source(struct conv *cv)
{
    struct stat t, s;

    if (stat(cv->target, &t) == -1)
        return 0;
    for (int i = 0; i < cv->nsrc; i++) {
        for (struct node *n = node_of(cv->src[i]); n; n = n->backing) {
            struct node *files[] = { n->file, n->data_file, n };

            for (size_t k = 0; k < 3; k++) {
                struct node *f = files[k];

                if (!f || f->drv->kind != DRV_PROTOCOL || !f->filename ||
                    stat(f->filename, &s) == -1)
                    continue;
                if (s.st_dev == t.st_dev && s.st_ino == t.st_ino) {
                    cmd_error("%s: error while converting %s: Failed to get "
                              "\"write\" lock: the target is a source image",
                              cv->target, cv->out_fmt);
                    return -1;
                }
            }
        }
    }
    return 0;
}

/* Create options: -o, then the size (unless -o has one) and -B/-F. */
static json_t *
prepare_create(struct conv *cv)
{
    CLEANUP_FREE char *opts = cv->opts ? strdup(cv->opts) : NULL;
    json_t *user = opts_parse_dotted(cv->opts ? cv->opts : "", NULL);
    char size[32];
    json_t *prep;
    int r = 0;

    if (!user) {
        cmd_error("%s", vimg_get_error());
        return NULL;
    }
    snprintf(size, sizeof size, "%llu", (unsigned long long)cv->total);
    if (!json_object_get(user, "size"))
        r |= cmd_append_opt_kv(&opts, "size", size);
    json_decref(user);
    if (cv->backing)
        r |= cmd_append_opt_kv(&opts, "backing_file", cv->backing) |
             cmd_append_opt_kv(&opts, "backing_fmt", cv->bfmt);
    if (r) {
        cmd_error("out of memory");
        return NULL;
    }
    prep = create_prepare(cv->out_fmt, cv->target, opts, 0);
    if (!prep) {
        cmd_error("%s: error while converting %s: %s", cv->target,
                  cv->out_fmt, vimg_get_error());
        return NULL;
    }
    json_object_set_new(prep, "size", json_integer((json_int_t)cv->total));
    return prep;
}

static int
create_target(struct conv *cv)
{
    json_t *prep;
    int r;

    if (check_not_a_source(cv) == -1 || !(prep = prepare_create(cv)))
        return -1;
    cv->created = true;
    r = create_image(cv->out_fmt, cv->target, prep);
    json_decref(prep);
    if (r == -1) {
        cmd_error("%s: error while converting %s: %s", cv->target,
                  cv->out_fmt, vimg_get_error());
        return -1;
    }
    return 0;
}

static int
open_target(struct conv *cv)
{
    /* --clear-bitmap must not clear before the increment is durable. */
    bool unsafe = (!cv->cache || !strcmp(cv->cache, "unsafe")) &&
                  !cv->clear_bitmap;

    cv->dst = open_image(cv->target, cv->out_fmt, cv->target_image_opts,
                         VIMG_OPEN_RDWR | (unsafe ? VIMG_OPEN_NO_FLUSH : 0),
                         cache_direct(cv->cache));
    if (!cv->dst)
        return -1;
    if (cv->skip_create && (uint64_t)vimg_get_size(cv->dst) < cv->total) {
        cmd_error("output file is smaller than input file");
        return -1;
    }
    if (cv->skip_create && cv->backing &&
        !(cv->diff = open_image(cv->backing, cv->bfmt, false, 0, false)))
        return -1;
    return 0;
}

/* Progress across the concatenated sources. */
static void
on_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct conv *cv = opaque;

    (void)total;
    progress_report(cv->base + done, cv->total);
}

static int
copy_all(struct conv *cv)
{
    struct node *dst = node_of(cv->dst);
    struct copy_params p = {
        .dst = dst,
        .min_depth = 0,
        .max_depth = INT_MAX,
        .sparse_size = cv->sparse,
        .compress = cv->compress,
        .workers = cv->workers,
        .out_of_order = cv->ooo,
        .progress = on_progress,
        .opaque = cv,
    };

    /* An increment holds every dirty cluster as the source reads it. */
    if (cv->backing && !cv->only)
        p.diff_against = cv->diff ? node_of(cv->diff) : dst->backing;
    p.only_dirty = cv->only;
    /* A target we created reads as zero, unless it has a backing file
     * (then the diff decides) or -S 0 asks for full allocation. */
    p.target_is_zero = cv->target_is_zero ||
                       (!cv->skip_create && !cv->backing && cv->sparse);
    for (int i = 0; i < cv->nsrc; i++) {
        p.src = node_of(cv->src[i]);
        p.length = (uint64_t)vimg_get_size(cv->src[i]);
        p.dst_off = cv->base;
        if (copy_run(&p) == -1) {
            cmd_error("error while converting: %s", vimg_get_error());
            return -1;
        }
        cv->base += p.length;
    }
    if (cv->bitmap_list &&
        convert_bitmaps_copy(cv->src[0], cv->dst, cv->bitmap_list) == -1)
        return -1;
    return 0;
}

/* Close everything; remove a target created here when !OK. */
static int
finish(struct conv *cv, bool ok)
{
    progress_finish(ok);
    if (cv->dst && vimg_close(cv->dst) == -1 && ok) {
        cmd_error("%s: %s", cv->target, vimg_get_error());
        ok = false;
    }
    /* The increment is written, flushed and closed: now it may go. */
    if (ok && cv->clear_bitmap &&
        convert_bitmap_clear(cv->src[0], cv->bitmap) == -1)
        ok = false;
    json_decref(cv->bitmap_list);
    bitmap_free(cv->only);
    vimg_close(cv->diff);
    for (int i = 0; cv->src && i < cv->nsrc; i++)
        vimg_close(cv->src[i]);
    free(cv->src);
    if (!ok && cv->created)
        unlink(cv->target);
    free(cv->opts);
    return ok ? 0 : 1;
}

int
cmd_convert(int argc, char **argv)
{
    struct conv cv = { .out_fmt = "raw", .workers = 8, .sparse = 4096 };
    bool ok = false;
    int r;

    if ((r = parse_args(&cv, argc, argv)) || (r = check_args(&cv))) {
        free(cv.opts);
        return r == 2 ? 0 : 1;
    }
    /* From here a SIGUSR1 prints the progress instead of killing us. */
    progress_start(NULL, (cv.show_progress ? PROGRESS_SHOW : 0) |
                             (cv.quiet ? PROGRESS_QUIET : 0));
    ok = open_sources(&cv) == 0 &&
         (cv.skip_create || create_target(&cv) == 0) &&
         open_target(&cv) == 0 && copy_all(&cv) == 0;
    return finish(&cv, ok);
}
