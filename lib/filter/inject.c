/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The "inject" filter: forwards everything to its "file" child and makes
 * the Nth request of one kind fail, for reliability tests (stack it
 * under a format: driver=qcow2,file.driver=inject,file.file.filename=X).
 *
 * Options: fail-op=read|write|flush|discard|zero|truncate, fail-nth=N
 * (1-based count of that operation; default 1), errno=EIO|ENOSPC
 * (default EIO), once=on|off (fail only the Nth, or the Nth and every
 * later one; default on), short-write=on (fail-op=write: the failing
 * write stores the first half of its bytes, then fails), log=PATH.
 *
 * The log gets one line per request that reached the file, in the order
 * they completed: "W <off> <len> <fnv1a-64 of the bytes, hex>" for
 * writes (a short write logs the half that was written), "Z <off>
 * <len>" for zeroes, "D <off> <len>" for discards, "T <size>" for
 * truncates and "F" after each flush of the file completed: a write log
 * with flush barriers that a crash harness can replay.
 *
 * Like the file protocol (lib/proto/file.c), a failed flush is sticky:
 * every later write-type request and flush fails with EIO, since the
 * data it should have made durable may be gone.  Reads still work.
 *
 * A filter is a pass-through node: lib/io.c handles it like a protocol
 * (it grows when written past its end), lib/node.c passes its parent's
 * permissions through to its file.  Locking: s->lock protects the
 * counters, the sticky flag and the log's line order.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "error.h"
#include "io.h"
#include "node.h"
#include "options.h"

enum inject_op { OP_READ, OP_WRITE, OP_FLUSH, OP_DISCARD, OP_ZERO,
                 OP_TRUNCATE, OP_COUNT, OP_NONE = OP_COUNT };

static const char *const op_names[OP_COUNT] = {
    "read", "write", "flush", "discard", "zero", "truncate",
};

struct inject_state {
    pthread_mutex_t lock;
    enum inject_op fail_op; /* OP_NONE: never fail */
    uint64_t fail_nth;
    int errnum;
    bool once, short_write;
    int log_fd;          /* -1: no log */
    bool flush_failed;   /* sticky, by lock */
    uint64_t count[OP_COUNT]; /* requests seen, by lock */
};

static int
parse_op(const char *s, enum inject_op *op)
{
    *op = OP_NONE;
    if (!s)
        return 0;
    for (int i = 0; i < OP_COUNT; i++)
        if (!strcmp(s, op_names[i])) {
            *op = i;
            return 0;
        }
    vimg_error(EINVAL, "inject: fail-op must be read, write, flush, "
               "discard, zero or truncate, not '%s'", s);
    return -1;
}

static int
parse_errno(const char *s, int *errnum)
{
    if (!s || !strcmp(s, "EIO"))
        *errnum = EIO;
    else if (!strcmp(s, "ENOSPC"))
        *errnum = ENOSPC;
    else {
        vimg_error(EINVAL, "inject: errno must be EIO or ENOSPC, not '%s'",
                   s);
        return -1;
    }
    return 0;
}

static int
inject_parse(struct inject_state *s, json_t *opts)
{
    static const char *const keys[] = {
        "driver", "node-name", "file", "read-only", "cache", "fail-op",
        "fail-nth", "errno", "once", "short-write", "log", NULL
    };

    if (opts_check_keys(opts, keys, "the 'inject' filter") == -1 ||
        parse_op(opts_get_str(opts, "fail-op"), &s->fail_op) == -1 ||
        parse_errno(opts_get_str(opts, "errno"), &s->errnum) == -1 ||
        opts_get_size(opts, "fail-nth", 1, &s->fail_nth) == -1 ||
        opts_get_bool(opts, "once", true, &s->once) == -1 ||
        opts_get_bool(opts, "short-write", false, &s->short_write) == -1)
        return -1;
    if (s->fail_nth == 0) {
        vimg_error(EINVAL, "inject: fail-nth counts from 1");
        return -1;
    }
    if (s->short_write && s->fail_op != OP_WRITE) {
        vimg_error(EINVAL, "inject: short-write needs fail-op=write");
        return -1;
    }
    return 0;
}

static int
inject_open(struct node *n, json_t *opts)
{
    struct inject_state *s = n->state;
    const char *log = opts_get_str(opts, "log");

    s->log_fd = -1;
    if (inject_parse(s, opts) == -1)
        return -1;
    if (log) {
        s->log_fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
                         0644);
        if (s->log_fd == -1) {
            vimg_error(errno, "inject: cannot open log '%s': %m", log);
            return -1;
        }
    }
    pthread_mutex_init(&s->lock, NULL);
    n->size = n->file->size;
    return 0;
}

static int
inject_close(struct node *n)
{
    struct inject_state *s = n->state;

    if (s->log_fd != -1)
        close(s->log_fd);
    pthread_mutex_destroy(&s->lock);
    return 0;
}

/* Count one request of kind OP: true when it must fail. */
static bool
should_fail(struct inject_state *s, enum inject_op op)
{
    LOCK_GUARD(&s->lock);
    uint64_t c = ++s->count[op];

    if (op != s->fail_op)
        return false;
    return s->once ? c == s->fail_nth : c >= s->fail_nth;
}

/* Fail with the configured errno, naming the request. */
static int
fail(struct node *n, enum inject_op op, uint64_t off)
{
    struct inject_state *s = n->state;

    if (op == OP_FLUSH)
        vimg_error(s->errnum, "%s: injected flush error: %s", n->filename,
                   strerror(s->errnum));
    else
        vimg_error(s->errnum, "%s: injected %s error at offset %" PRIu64
                   ": %s", n->filename, op_names[op], off,
                   strerror(s->errnum));
    return -1;
}

/* After a failed flush nothing may be written or flushed again. */
static int
check_sticky(struct node *n)
{
    struct inject_state *s = n->state;
    bool failed;

    pthread_mutex_lock(&s->lock);
    failed = s->flush_failed;
    pthread_mutex_unlock(&s->lock);
    if (failed) {
        vimg_error(EIO, "%s: an earlier flush failed; data may be lost",
                   n->filename);
        return -1;
    }
    return 0;
}

/* Append one line to the log (one write, so lines never interleave). */
static void
log_line(struct inject_state *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
log_line(struct inject_state *s, const char *fmt, ...)
{
    char line[128];
    va_list ap;
    int len;

    if (s->log_fd == -1)
        return;
    va_start(ap, fmt);
    len = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (len > 0 && (size_t)len < sizeof line &&
        write(s->log_fd, line, len) != len)
        return; /* the log is best effort; the test reading it fails */
}

/* FNV-1a, 64 bits: enough to tell replayed data apart. */
static uint64_t
fnv1a(const void *buf, uint64_t len)
{
    const unsigned char *p = buf;
    uint64_t h = 0xcbf29ce484222325ull;

    for (uint64_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static int
inject_pread(struct node *n, void *buf, uint64_t count, uint64_t off)
{
    if (should_fail(n->state, OP_READ))
        return fail(n, OP_READ, off);
    return node_pread(n->file, buf, count, off);
}

static int
inject_pwrite(struct node *n, const void *buf, uint64_t count, uint64_t off,
              unsigned flags)
{
    struct inject_state *s = n->state;
    uint64_t len = count;
    int r;

    if (check_sticky(n) == -1)
        return -1;
    if (should_fail(s, OP_WRITE)) {
        if (!s->short_write || count / 2 == 0)
            return fail(n, OP_WRITE, off);
        len = count / 2;
        if (node_pwrite(n->file, buf, len, off, flags & ~REQ_FUA) == -1)
            return -1;
        LOCK_GUARD(&s->lock);
        log_line(s, "W %" PRIu64 " %" PRIu64 " %016" PRIx64 "\n", off, len,
                 fnv1a(buf, len));
        return fail(n, OP_WRITE, off + len);
    }
    r = node_pwrite(n->file, buf, len, off, flags);
    if (r == 0) {
        LOCK_GUARD(&s->lock);
        log_line(s, "W %" PRIu64 " %" PRIu64 " %016" PRIx64 "\n", off, len,
                 fnv1a(buf, len));
        if (flags & REQ_FUA)
            log_line(s, "F\n");
    }
    return r;
}

static int
inject_pwrite_zeroes(struct node *n, uint64_t off, uint64_t count,
                     unsigned flags)
{
    struct inject_state *s = n->state;

    if (check_sticky(n) == -1)
        return -1;
    if (should_fail(s, OP_ZERO))
        return fail(n, OP_ZERO, off);
    if (node_pwrite_zeroes(n->file, off, count, flags) == -1)
        return -1;
    LOCK_GUARD(&s->lock);
    log_line(s, "Z %" PRIu64 " %" PRIu64 "\n", off, count);
    if (flags & REQ_FUA)
        log_line(s, "F\n");
    return 0;
}

static int
inject_discard(struct node *n, uint64_t off, uint64_t count)
{
    struct inject_state *s = n->state;

    if (check_sticky(n) == -1)
        return -1;
    if (should_fail(s, OP_DISCARD))
        return fail(n, OP_DISCARD, off);
    if (node_discard(n->file, off, count) == -1)
        return -1;
    LOCK_GUARD(&s->lock);
    log_line(s, "D %" PRIu64 " %" PRIu64 "\n", off, count);
    return 0;
}

/* io.c leaves the file's flush to the filter, so that "F" is logged
 * only once the file's flush completed. */
static int
inject_flush(struct node *n)
{
    struct inject_state *s = n->state;

    if (check_sticky(n) == -1)
        return -1;
    bool injected = should_fail(s, OP_FLUSH);

    if (injected || node_flush(n->file) == -1) {
        pthread_mutex_lock(&s->lock);
        s->flush_failed = true;
        pthread_mutex_unlock(&s->lock);
        return injected ? fail(n, OP_FLUSH, 0) : -1;
    }
    LOCK_GUARD(&s->lock);
    log_line(s, "F\n");
    return 0;
}

static int
inject_block_status(struct node *n, bool want_zero, uint64_t off,
                    uint64_t count, struct extent *e)
{
    return node_block_status_layer(n->file, want_zero, off, count, e);
}

static int
inject_truncate(struct node *n, uint64_t size, enum prealloc prealloc)
{
    struct inject_state *s = n->state;

    if (check_sticky(n) == -1)
        return -1;
    if (should_fail(s, OP_TRUNCATE))
        return fail(n, OP_TRUNCATE, size);
    if (node_truncate(n->file, size, prealloc) == -1)
        return -1;
    LOCK_GUARD(&s->lock);
    log_line(s, "T %" PRIu64 "\n", size);
    return 0;
}

static int64_t
inject_allocated_size(struct node *n)
{
    return n->file->drv->allocated_size
               ? n->file->drv->allocated_size(n->file)
               : -1;
}

static int
inject_reopen_rw(struct node *n)
{
    (void)n; /* node.c reopened the file child */
    return 0;
}

const struct driver inject_filter = {
    .name = "inject",
    .kind = DRV_FILTER,
    .state_size = sizeof(struct inject_state),
    .open = inject_open,
    .close = inject_close,
    .pread = inject_pread,
    .pwrite = inject_pwrite,
    .pwrite_zeroes = inject_pwrite_zeroes,
    .discard = inject_discard,
    .flush = inject_flush,
    .block_status = inject_block_status,
    .truncate = inject_truncate,
    .allocated_size = inject_allocated_size,
    .reopen_rw = inject_reopen_rw,
};
