/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg-io's "read" and "write" commands, with qemu-io's options, checks
 * and messages: read verifies a pattern (-P, -s, -l) and dumps (-v);
 * write fills a buffer with a pattern byte or a file's bytes, or writes
 * zeroes (-z, -u, -n), optionally with FUA (-f) or compressed (-c: whole
 * clusters of a qcow2 image).  Both time the request
 * and print qemu-io's report unless -q.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "cmds.h"
#include "util.h"

struct read_opts {
    bool terse, quiet, verbose;
    bool pflag, sflag, lflag;
    int pattern;
    int64_t poff, plen; /* verified range, relative to the read */
};

static int
read_parse(int argc, char **argv, struct read_opts *o, int64_t *off,
           int64_t *count)
{
    const struct io_cmd *cmd = io_cmd_find("read");
    int c;

    optind = 0;
    while ((c = getopt(argc, argv, "bCl:pP:qs:v")) != -1) {
        switch (c) {
        case 'b':
            io_err("%s: -b (VM state) is not supported\n", argv[0]);
            return -1;
        case 'C': o->terse = true; break;
        case 'l':
            o->lflag = true;
            if (io_arg_num(optarg, &o->plen) == -1)
                return -1;
            break;
        case 'p': break; /* ignored, as by qemu-io */
        case 'P':
            o->pflag = true;
            if ((o->pattern = io_parse_pattern(optarg)) < 0)
                return -1;
            break;
        case 'q': o->quiet = true; break;
        case 's':
            o->sflag = true;
            if (io_arg_num(optarg, &o->poff) == -1)
                return -1;
            break;
        case 'v': o->verbose = true; break;
        default: io_cmd_usage(cmd); return -1;
        }
    }
    if (optind != argc - 2) {
        io_cmd_usage(cmd);
        return -1;
    }
    if (io_arg_num(argv[optind], off) == -1 ||
        io_arg_num(argv[optind + 1], count) == -1)
        return -1;
    if (*count > IO_MAX_BYTES) {
        io_err("length cannot exceed %lld, given %s\n", IO_MAX_BYTES,
               argv[optind + 1]);
        return -1;
    }
    if (!o->pflag && (o->lflag || o->sflag)) {
        io_cmd_usage(cmd);
        return -1;
    }
    if (!o->lflag)
        o->plen = *count - o->poff;
    if (o->plen < 0 || o->plen + o->poff > *count) {
        io_err("pattern verification range exceeds end of read data\n");
        return -1;
    }
    return 0;
}

/* True when every byte of BUF[0..LEN) is PATTERN. */
static bool
all_bytes(const uint8_t *buf, int64_t len, int pattern)
{
    for (int64_t i = 0; i < len; i++)
        if (buf[i] != pattern)
            return false;
    return true;
}

int
io_cmd_read(struct io_ctx *ctx, int argc, char **argv)
{
    struct read_opts o = {0};
    struct timespec t1, t2;
    CLEANUP_FREE uint8_t *buf = NULL;
    int64_t off, count;
    int r = 0;

    if (read_parse(argc, argv, &o, &off, &count) == -1)
        return -1;
    if (io_check_range(ctx, "read", off, count) == -1)
        return -1;
    buf = malloc(count ? count : 1);
    if (!buf) {
        io_err("read failed: out of memory\n");
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (count && vimg_pread(ctx->node, buf, count, off, 0) == -1) {
        io_lib_err("read");
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t2);
    if (o.pflag && !all_bytes(buf + o.poff, o.plen, o.pattern)) {
        io_err("Pattern verification failed at offset %lld, %lld bytes\n",
               (long long)(off + o.poff), (long long)o.plen);
        r = -1;
    }
    if (o.quiet)
        return r;
    if (o.verbose)
        io_dump(buf, off, count);
    io_report("read", io_tsub(t2, t1), off, count, count, 1, o.terse);
    return r;
}

struct write_opts {
    bool terse, quiet, compressed, zero, pflag;
    unsigned flags; /* VIMG_REQ_* */
    int pattern;
    const char *file; /* -s */
};

/* Check the option combinations as qemu-io does, in its order. */
static int
write_check(const struct write_opts *o)
{
    if ((o->flags & VIMG_REQ_FUA) && o->compressed) {
        io_err("-f and -b or -c cannot be specified at the same time\n");
        return -1;
    }
    if ((o->flags & VIMG_REQ_FAST) && !o->zero) {
        io_err("-n requires -z to be specified\n");
        return -1;
    }
    if ((o->flags & VIMG_REQ_MAY_UNMAP) && !o->zero) {
        io_err("-u requires -z to be specified\n");
        return -1;
    }
    if (o->zero + o->pflag + !!o->file > 1) {
        io_err("Only one of -z, -P, and -s can be specified at the same "
               "time\n");
        return -1;
    }
    return 0;
}

static int
write_parse(int argc, char **argv, struct write_opts *o, int64_t *off,
            int64_t *count)
{
    const struct io_cmd *cmd = io_cmd_find("write");
    int c;

    optind = 0;
    while ((c = getopt(argc, argv, "bcCfnpP:qs:uz")) != -1) {
        switch (c) {
        case 'b':
            io_err("%s: -b (VM state) is not supported\n", argv[0]);
            return -1;
        case 'c': o->compressed = true; break;
        case 'C': o->terse = true; break;
        case 'f': o->flags |= VIMG_REQ_FUA; break;
        case 'n': o->flags |= VIMG_REQ_FAST; break;
        case 'p': break; /* ignored, as by qemu-io */
        case 'P':
            o->pflag = true;
            if ((o->pattern = io_parse_pattern(optarg)) < 0)
                return -1;
            break;
        case 'q': o->quiet = true; break;
        case 's': o->file = optarg; break;
        case 'u': o->flags |= VIMG_REQ_MAY_UNMAP; break;
        case 'z': o->zero = true; break;
        default: io_cmd_usage(cmd); return -1;
        }
    }
    if (optind != argc - 2) {
        io_cmd_usage(cmd);
        return -1;
    }
    if (write_check(o) == -1 || io_arg_num(argv[optind], off) == -1 ||
        io_arg_num(argv[optind + 1], count) == -1)
        return -1;
    if (*count > IO_MAX_BYTES && !(o->flags & VIMG_REQ_FAST)) {
        io_err("length cannot exceed %lld without -n, given %s\n", IO_MAX_BYTES,
               argv[optind + 1]);
        return -1;
    }
    if (o->compressed && (*off % 512 || *count % 512)) {
        io_err("%lld is not a sector-aligned value for '%s'\n",
               (long long)(*off % 512 ? *off : *count),
               *off % 512 ? "offset" : "count");
        return -1;
    }
    return 0;
}

/* Fill BUF[0..LEN) with the bytes of FILE, repeated as needed. */
static int
fill_from_file(uint8_t *buf, size_t len, const char *file)
{
    FILE *f = fopen(file, "r");
    size_t n;

    if (!f) {
        io_err("%s: %s\n", file, strerror(errno));
        return -1;
    }
    n = fread(buf, 1, len, f);
    if (ferror(f)) {
        io_err("%s: %s\n", file, strerror(errno));
        fclose(f);
        return -1;
    }
    fclose(f);
    if (n == 0 && len) {
        io_err("%s: file is empty\n", file);
        return -1;
    }
    for (size_t done = n; done < len; done += n)
        memcpy(buf + done, buf, len - done < n ? len - done : n);
    return 0;
}

static int
do_write(struct io_ctx *ctx, const struct write_opts *o, int64_t off,
         int64_t count)
{
    CLEANUP_FREE uint8_t *buf = NULL;

    if (o->zero)
        return vimg_pwrite_zeroes(ctx->node, off, count, o->flags);
    buf = malloc(count ? count : 1);
    if (!buf) {
        io_err("write failed: out of memory\n");
        return -2;
    }
    if (o->file) {
        if (fill_from_file(buf, count, o->file) == -1)
            return -2;
    } else {
        memset(buf, o->pflag ? o->pattern : 0xcd, count);
    }
    if (!count)
        return 0;
    return vimg_pwrite(ctx->node, buf, count, off,
                       o->flags | (o->compressed ? VIMG_REQ_COMPRESSED : 0));
}

int
io_cmd_write(struct io_ctx *ctx, int argc, char **argv)
{
    struct write_opts o = {0};
    struct timespec t1, t2;
    int64_t off, count;
    int r;

    if (write_parse(argc, argv, &o, &off, &count) == -1)
        return -1;
    if (io_check_range(ctx, "write", off, count) == -1)
        return -1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    r = do_write(ctx, &o, off, count);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    if (r == -1)
        io_lib_err("write");
    if (r < 0)
        return -1;
    if (!o.quiet)
        io_report("wrote", io_tsub(t2, t1), off, count, count, 1, o.terse);
    return 0;
}
