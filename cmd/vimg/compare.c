/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg compare [-f FMT] [-F FMT] [--image-opts] [-s] [-p] [-q] [-U] A B
 *
 * qemu-img 7.2's compare: walks both chains with block status, skips
 * ranges that read as zero in both, reads only what must be read (the
 * allocated side when the other one reads as zero) in large chunks, and
 * reports the first differing 512-byte sector the way qemu does.  A
 * longer image's tail must read as zero (unless -s, where any size or
 * block status difference fails).
 *
 * Exit: 0 identical, 1 different (or bad usage), 2 open error,
 * 3 block status error, 4 read error.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "cleanup.h"
#include "cmd.h"
#include "io.h"
#include "node.h"
#include "progress.h"
#include "vimg.h"

#define CHUNK (4u << 20) /* bytes read per request */
#define SECTOR 512u

/* qemu's BDRV_BLOCK_* bits, compared as a whole in strict mode. */
#define ST_DATA 0x01u
#define ST_ZERO 0x02u
#define ST_OFFSET 0x04u
#define ST_ALLOCATED 0x10u
#define ST_EOF 0x20u

static const char usage_text[] =
    "Usage: vimg compare [-f FMT] [-F FMT] [--image-opts] [-s] [-p] [-q]\n"
    "                    [-U] FILE1 FILE2\n"
    "\n"
    "  -f FMT            format of FILE1 (probed if absent)\n"
    "  -F FMT            format of FILE2 (probed if absent)\n"
    "  --image-opts      the files are option strings (driver=qcow2,...)\n"
    "  -s                strict: sizes and allocation must match too\n"
    "  -p                show progress\n"
    "  -q                quiet: print nothing, only the exit status\n"
    "  -U, --force-share open read-only and share the images\n"
    "\n"
    "Exit status: 0 identical, 1 different, 2 open error,\n"
    "3 allocation check error, 4 read error.\n";

struct img {
    const char *name;
    vimg_node *h;
    struct node *n;
};

static bool quiet;

static void __attribute__((format(printf, 1, 2)))
say(const char *fmt, ...)
{
    va_list ap;

    if (quiet)
        return;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

/* qemu's bdrv_block_status_above(bs, NULL, ...) with want_zero: the
 * status bits of the first layer that decides [off, off+*len). */
static int
chain_status(struct node *top, uint64_t off, uint64_t *len, unsigned *st)
{
    uint64_t count = *len;
    struct node *n = top;
    struct extent x;

    for (;;) {
        if (off >= n->size) { /* past a short backing file: zeroes */
            *st = ST_ZERO | ST_ALLOCATED;
            break;
        }
        count = MIN(count, n->size - off);
        if (node_block_status_layer(n, true, off, count, &x) == -1)
            return -1;
        count = x.length;
        *st = ((x.flags & EXT_DATA) ? ST_DATA : 0) |
              ((x.flags & EXT_ZERO) ? ST_ZERO : 0) |
              ((x.flags & EXT_OFFSET) ? ST_OFFSET : 0);
        if (*st & (ST_DATA | ST_ZERO)) {
            *st |= ST_ALLOCATED;
            break;
        }
        if (!n->backing) {
            *st |= ST_ZERO;
            break;
        }
        n = n->backing;
    }
    *len = count;
    if (off + count == top->size)
        *st |= ST_EOF;
    return 0;
}

static int
read_chunk(struct img *im, void *buf, uint64_t len, uint64_t off)
{
    if (node_pread(im->n, buf, len, off) == 0)
        return 0;
    cmd_error("Error while reading offset %" PRIu64 " of %s: %s", off,
              im->name, vimg_get_error());
    return 4;
}

/* Index of the first 512-byte sector of BUF holding a non-zero byte, or
 * -1 (qemu's find_nonzero). */
static int64_t
find_nonzero(const uint8_t *buf, uint64_t n)
{
    static const uint8_t zero[SECTOR];

    for (uint64_t i = 0; i < n; i += SECTOR)
        if (memcmp(buf + i, zero, MIN((uint64_t)SECTOR, n - i)))
            return i;
    return -1;
}

/* Fail unless [off, off+len) of IM reads as zeroes (qemu's
 * check_empty_sectors). */
static int
check_empty(struct img *im, uint8_t *buf, uint64_t off, uint64_t len)
{
    int64_t idx;
    int r = read_chunk(im, buf, len, off);

    if (r)
        return r;
    idx = find_nonzero(buf, len);
    if (idx >= 0) {
        say("Content mismatch at offset %" PRIu64 "!\n", off + idx);
        return 1;
    }
    return 0;
}

/* Both images hold data in [off, off+len): compare by sectors. */
static int
compare_data(struct img *a, struct img *b, uint8_t *b1, uint8_t *b2,
             uint64_t off, uint64_t len)
{
    int r;

    if ((r = read_chunk(a, b1, len, off)) || (r = read_chunk(b, b2, len, off)))
        return r;
    if (!memcmp(b1, b2, len))
        return 0;
    for (uint64_t i = 0; i < len; i += SECTOR) {
        if (memcmp(b1 + i, b2 + i, MIN((uint64_t)SECTOR, len - i))) {
            say("Content mismatch at offset %" PRIu64 "!\n", off + i);
            return 1;
        }
    }
    return 0;
}

static int
status_of(struct img *im, uint64_t off, uint64_t *len, unsigned *st)
{
    if (chain_status(im->n, off, len, st) == 0)
        return 0;
    cmd_error("Sector allocation test failed for %s: %s", im->name,
              vimg_get_error());
    return 3;
}

/* The common part [0, MIN(sizes)). */
static int
compare_common(struct img *a, struct img *b, bool strict, uint8_t *b1,
               uint8_t *b2, uint64_t total, uint64_t base)
{
    uint64_t off = 0;

    while (off < total) {
        uint64_t l1 = a->n->size - off, l2 = b->n->size - off, chunk;
        unsigned s1, s2;
        bool a1, a2;
        int r;

        if ((r = status_of(a, off, &l1, &s1)) ||
            (r = status_of(b, off, &l2, &s2)))
            return r;
        chunk = MIN(MIN(l1, l2), total - off);
        if (strict && s1 != s2) {
            say("Strict mode: Offset %" PRIu64 " block status mismatch!\n",
                off);
            return 1;
        }
        a1 = s1 & ST_ALLOCATED;
        a2 = s2 & ST_ALLOCATED;
        if ((s1 & ST_ZERO) && (s2 & ST_ZERO)) {
            /* nothing to read */
        } else if (a1 == a2 && a1) {
            chunk = MIN(chunk, (uint64_t)CHUNK);
            /* Where one side is known to be zero, only the other one
             * needs reading: the first non-zero sector is the first
             * differing one. */
            if (s1 & ST_ZERO)
                r = check_empty(b, b1, off, chunk);
            else if (s2 & ST_ZERO)
                r = check_empty(a, b1, off, chunk);
            else
                r = compare_data(a, b, b1, b2, off, chunk);
            if (r)
                return r;
        } else if (a1 != a2) {
            chunk = MIN(chunk, (uint64_t)CHUNK);
            r = check_empty(a1 ? a : b, b1, off, chunk);
            if (r)
                return r;
        }
        off += chunk;
        progress_report(off, base);
    }
    return 0;
}

/* The tail of the longer image must read as zeroes. */
static int
compare_tail(struct img *over, uint8_t *buf, uint64_t off)
{
    uint64_t end = over->n->size;

    say("Warning: Image size mismatch!\n");
    while (off < end) {
        uint64_t chunk = end - off;
        unsigned st;
        int r;

        if ((r = status_of(over, off, &chunk, &st)))
            return r;
        if ((st & ST_ALLOCATED) && !(st & ST_ZERO)) {
            chunk = MIN(chunk, (uint64_t)CHUNK);
            if ((r = check_empty(over, buf, off, chunk)))
                return r;
        }
        off += chunk;
        progress_report(off, end);
    }
    return 0;
}

static int
compare(struct img *a, struct img *b, bool strict)
{
    uint64_t s1 = a->n->size, s2 = b->n->size;
    uint64_t total = MIN(s1, s2), base = MAX(s1, s2);
    /* Page-aligned: the kernel copies into aligned buffers much faster. */
    CLEANUP_FREE uint8_t *b1 = aligned_alloc(4096, CHUNK);
    CLEANUP_FREE uint8_t *b2 = aligned_alloc(4096, CHUNK);
    int r;

    if (!b1 || !b2) {
        cmd_error("out of memory");
        return 4;
    }
    progress_report(0, base ? base : 1);
    if (strict && s1 != s2) {
        say("Strict mode: Image size mismatch!\n");
        return 1;
    }
    r = compare_common(a, b, strict, b1, b2, total, base);
    if (r == 0 && s1 != s2)
        r = compare_tail(s1 > s2 ? a : b, b1, total);
    if (r == 0)
        say("Images are identical.\n");
    return r;
}

static int
open_img(struct img *im, const char *name, const char *fmt, bool image_opts,
         unsigned flags)
{
    im->name = name;
    im->h = cmd_open_image(name, fmt, image_opts, flags);
    if (!im->h)
        return -1;
    im->n = node_of(im->h);
    return 0;
}

int
cmd_compare(int argc, char **argv)
{
    enum { OPT_IMAGE_OPTS = 256 };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "force-share", no_argument, NULL, 'U' },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { NULL, 0, NULL, 0 } };
    const char *fmt1 = NULL, *fmt2 = NULL;
    bool image_opts = false, strict = false, show = false;
    struct img a = { 0 }, b = { 0 };
    unsigned flags = 0;
    int c, r;

    quiet = false;
    while ((c = getopt_long(argc, argv, "f:F:T:spqUh", longopts, NULL)) !=
           -1) {
        switch (c) {
        case 'f': fmt1 = optarg; break;
        case 'F': fmt2 = optarg; break;
        case 'T': break; /* source cache mode: reads are not cached */
        case 's': strict = true; break;
        case 'p': show = true; break;
        case 'q': quiet = true; break;
        case 'U': flags |= VIMG_OPEN_FORCE_SHARE; break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return cmd_bad_option(argv);
        }
    }
    if (optind != argc - 2)
        return cmd_usage_error("Expecting two image file names");
    if (image_opts && (fmt1 || fmt2))
        return cmd_usage_error("--image-opts and -f/-F are exclusive");
    if (open_img(&a, argv[optind], fmt1, image_opts, flags) == -1)
        return 2;
    if (open_img(&b, argv[optind + 1], fmt2, image_opts, flags) == -1) {
        vimg_close(a.h);
        return 2;
    }
    progress_start(NULL, (show && !quiet ? PROGRESS_SHOW : 0) |
                             (quiet ? PROGRESS_QUIET : 0));
    r = compare(&a, &b, strict);
    progress_finish(r == 0);
    fflush(stdout);
    vimg_close(b.h);
    vimg_close(a.h);
    return r;
}
