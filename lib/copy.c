/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The copy engine (see copy.h): convert, commit, stream-local and rebase
 * all copy through here.
 *
 * One scheduler cuts [0, length) into jobs, driven by the whole-chain
 * block status of SRC: ranges the depth filter rejects (or that are clean
 * in the ONLY_DIRTY bitmap) are skipped,
 * ranges that read as zero become zero jobs (skipped when DST already
 * reads zero), the rest become data jobs of at most one chunk (2 MiB,
 * aligned to DST's cluster, in DST offsets).  WORKERS threads take jobs,
 * each with its own buffer: read SRC, find zero runs (-S) in what was
 * read, compare with DIFF_AGAINST, compress, and write DST.  There
 * are at most as many threads as CPUs (at least 2).  Reads and
 * writes run outside any lock of this file (the library is thread-safe
 * per node).  Without OUT_OF_ORDER every job carries a ticket and a
 * worker waits for its turn before its first write, so writes land in
 * offset order; compressed writes are never ordered, because the
 * driver compresses inside the write and ordering would serialise it.
 *
 * Locking: c->lock protects the scheduler (pos, the cached extent, the
 * tickets) and the error state; c->done is atomic.  Memory: one chunk
 * per worker (two with DIFF_AGAINST).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitmap.h"
#include "checked.h"
#include "cleanup.h"
#include "copy.h"
#include "error.h"
#include "io.h"

#define CHUNK (2u << 20)            /* bytes per data job */
#define BS_MAX (1ull << 30)         /* bytes per block-status query */
#define ZERO_JOB_MAX (1ull << 30)   /* bytes per zero job */
#define MAX_WORKERS 16u

enum kind { K_SKIP, K_ZERO, K_DATA };

struct job {
    uint64_t off, len; /* relative to src_off / dst_off */
    enum kind kind;
    uint64_t seq;      /* write ticket */
    bool turn;         /* the ticket was taken (writes may start) */
};

struct copy {
    const struct copy_params *p;
    int chain_len;       /* layers in SRC's chain */
    uint64_t chunk;      /* data job size: CHUNK, a multiple of align */
    uint64_t align;      /* job alignment in DST (compress: cluster) */
    uint64_t zgran;      /* zero-scan granularity */
    bool ordered;

    pthread_mutex_t lock;
    pthread_cond_t *turn;  /* [nturn]: ticket seq waits on turn[seq % n] */
    unsigned nturn;        /* = workers: tickets in flight < nturn */
    uint64_t pos;        /* next relative offset to schedule */
    uint64_t ext_end;    /* cached block status: [pos, ext_end) */
    enum kind ext_kind;
    uint64_t next_seq;   /* next ticket to hand out */
    uint64_t write_seq;  /* ticket whose writes may run now */
    bool failed;
    int err;
    char *msg;

    uint64_t done;       /* atomic: bytes finished */
};

struct worker {
    struct copy *c;
    pthread_t thread;
    char *buf, *buf2;
};

/* ---- helpers -------------------------------------------------------- */

/* All of BUF[0, LEN) is zero.  Checks a word, then compares the buffer
 * with itself shifted (a vectorised memcmp). */
static bool
is_zero(const char *buf, size_t len)
{
    size_t head = MIN(len, (size_t)16);

    for (size_t i = 0; i < head; i++)
        if (buf[i])
            return false;
    return len <= 16 || !memcmp(buf, buf + 16, len - 16);
}

/* Record the calling thread's error as the copy's first error. */
static void
fail(struct copy *c)
{
    int e = errno ? errno : EIO;
    LOCK_GUARD(&c->lock);

    if (!c->failed) {
        c->failed = true;
        c->err = e;
        c->msg = strdup(vimg_get_error() ? vimg_get_error() : "error");
    }
    for (unsigned i = 0; i < c->nturn; i++)
        pthread_cond_broadcast(&c->turn[i]);
}

static void
add_done(struct copy *c, uint64_t n)
{
    const struct copy_params *p = c->p;
    uint64_t d = __atomic_add_fetch(&c->done, n, __ATOMIC_RELAXED);

    if (p->progress && n)
        p->progress(p->opaque, d, p->length);
}

/* Wait until the job's writes may start (ordered mode). */
static int
take_turn(struct copy *c, struct job *j)
{
    if (!c->ordered || j->turn)
        return 0;
    LOCK_GUARD(&c->lock);
    while (c->write_seq != j->seq && !c->failed)
        pthread_cond_wait(&c->turn[j->seq % c->nturn], &c->lock);
    j->turn = true;
    if (c->failed) {
        vimg_error(ECANCELED, "copy cancelled");
        return -1;
    }
    return 0;
}

static void
end_turn(struct copy *c, struct job *j)
{
    if (!c->ordered)
        return;
    LOCK_GUARD(&c->lock);
    c->write_seq = j->seq + 1;
    pthread_cond_signal(&c->turn[c->write_seq % c->nturn]);
}

/* ---- scheduling ----------------------------------------------------- */

/* Block status at REL: the cached extent becomes [REL, ext_end).
 * Lock held. */
static int
classify_locked(struct copy *c, uint64_t rel)
{
    const struct copy_params *p = c->p;
    uint64_t len = MIN(p->length - rel, BS_MAX);
    struct vimg_extent e;
    int depth;

    if (p->only_dirty) {
        uint64_t o = p->src_off + rel, end = p->src_off + p->length;
        int64_t next;

        if (!bitmap_get(p->only_dirty, o)) {
            next = bitmap_next_dirty(p->only_dirty, o, end);
            c->ext_kind = K_SKIP;
            c->ext_end = next < 0 ? p->length : (uint64_t)next - p->src_off;
            return 0;
        }
        next = bitmap_next_clean(p->only_dirty, o, end);
        if (next >= 0)
            len = MIN(len, (uint64_t)next - o);
    }
    if (node_block_status(p->src, true, p->src_off + rel, len, &e) == -1)
        return -1;
    depth = (e.flags & VIMG_EXT_ALLOCATED) ? e.depth : c->chain_len;
    if (depth < p->min_depth || depth >= p->max_depth)
        c->ext_kind = K_SKIP;
    else if (e.flags & VIMG_EXT_ZERO)
        c->ext_kind = K_ZERO;
    else
        c->ext_kind = K_DATA;
    c->ext_end = rel + e.length;
    return 0;
}

/* Relative offset REL rounded in DST coordinates; the copy's end counts
 * as aligned. */
static uint64_t
rel_align_down(struct copy *c, uint64_t rel)
{
    uint64_t d = c->p->dst_off + rel;

    if (rel == c->p->length)
        return rel;
    d = ALIGN_DOWN(d, c->align);
    return d > c->p->dst_off ? d - c->p->dst_off : 0;
}

static uint64_t
rel_align_up(struct copy *c, uint64_t rel)
{
    uint64_t d = ALIGN_UP(c->p->dst_off + rel, c->align) - c->p->dst_off;

    return MIN(d, c->p->length);
}

/* Build a data job at c->pos ending at most at END, extended over the
 * data extents that follow (the layers of a chain, or a zero-scan block
 * split between extents) up to the chunk boundary.  The cached extent
 * stays valid for what follows the job.  Lock held. */
static int
data_job_locked(struct copy *c, uint64_t end, struct job *j)
{
    uint64_t d = c->p->dst_off + c->pos;
    uint64_t boundary = ALIGN_DOWN(d, c->chunk) + c->chunk - c->p->dst_off;

    boundary = MIN(boundary, c->p->length);
    while (end == c->ext_end && end < boundary) {
        if (classify_locked(c, end) == -1)
            return -1;
        if (c->ext_kind != K_DATA)
            break;
        end = c->ext_end;
    }
    end = MIN(end, boundary);
    if (c->align > 1)
        end = MIN(rel_align_up(c, end), boundary);
    j->kind = K_DATA;
    j->off = c->pos;
    j->len = end - c->pos;
    return 0;
}

/* Hand out the next job; false when done or failed.  Lock held. */
static bool
next_job_locked(struct copy *c, struct job *j)
{
    const struct copy_params *p = c->p;

    while (!c->failed && c->pos < p->length) {
        uint64_t end;

        if (c->ext_end <= c->pos && classify_locked(c, c->pos) == -1)
            return false;
        end = c->ext_end;
        if (c->ext_kind == K_SKIP ||
            (c->ext_kind == K_ZERO && p->target_is_zero &&
             !p->diff_against)) {
            add_done(c, end - c->pos);
            c->pos = end;
            continue;
        }
        if (c->ext_kind == K_ZERO) {
            if (c->align > 1)
                end = rel_align_down(c, end);
            if (end <= c->pos) { /* zero tail of a cluster: read it */
                if (data_job_locked(c, c->pos + 1, j) == -1)
                    return false;
            } else {
                j->kind = K_ZERO;
                j->off = c->pos;
                j->len = MIN(end - c->pos, ZERO_JOB_MAX);
            }
        } else {
            if (data_job_locked(c, end, j) == -1)
                return false;
        }
        j->seq = c->next_seq++;
        j->turn = false;
        c->pos = j->off + j->len;
        return true;
    }
    return false;
}

/* ---- writing -------------------------------------------------------- */

/* Zero [d, d+len) of DST the way the parameters ask. */
static int
write_zeroes(struct copy *c, uint64_t d, uint64_t len)
{
    unsigned flags = c->p->sparse_size ? REQ_MAY_UNMAP : 0;

    return node_pwrite_zeroes(c->p->dst, d, len, flags);
}

/* Next qualifying zero run in BUF[from, len): [*zs, *ze), clipped to
 * DST's cow units.  False when there is none. */
static bool
find_zero_run(struct copy *c, const char *buf, uint64_t len, uint64_t d,
              uint64_t from, uint64_t *zs, uint64_t *ze)
{
    uint64_t g = c->zgran, cow = c->p->dst->cow_align;
    uint64_t dend = c->p->dst->size;

/* Blocks of G bytes on DST's grid: the one at I is STEP long. */
#define STEP(i) (MIN(ALIGN_DOWN(d + (i), g) + g - (d + (i)), len - (i)))
    for (uint64_t i = from; i < len;) {
        uint64_t s, e;

        while (i < len && !is_zero(buf + i, STEP(i)))
            i += STEP(i);
        if (i >= len)
            return false;
        s = i;
        while (i < len && is_zero(buf + i, STEP(i)))
            i += STEP(i);
        e = i;
        if (e - s < c->p->sparse_size)
            continue;
        if (cow > 1) {
            s = ALIGN_UP(d + s, cow) - d;
            e = (d + e == dend) ? e : ALIGN_DOWN(d + e, cow) - d;
            if (e <= s || s > len)
                continue;
        }
        *zs = s;
        *ze = e;
        return true;
    }
    return false;
#undef STEP
}

/* Write BUF to DST at D, turning zero runs of -S bytes into holes. */
static int
write_sparse(struct copy *c, struct job *j, const char *buf, uint64_t d,
             uint64_t len)
{
    uint64_t i = 0, zs, ze;

    while (i < len) {
        bool z = find_zero_run(c, buf, len, d, i, &zs, &ze);

        if (!z)
            zs = ze = len;
        if (zs > i && (take_turn(c, j) == -1 ||
                       node_pwrite(c->p->dst, buf + i, zs - i, d + i, 0) == -1))
            return -1;
        if (ze > zs && !c->p->target_is_zero &&
            (take_turn(c, j) == -1 || write_zeroes(c, d + zs, ze - zs) == -1))
            return -1;
        i = ze;
    }
    return 0;
}

/* Compressed output: runs of whole clusters go to the driver in one
 * request (it compresses and packs them), zero clusters are skipped (or
 * zeroed), partial clusters are written plainly. */
static int
write_compressed(struct copy *c, const char *buf, uint64_t d, uint64_t len)
{
    struct node *dst = c->p->dst;
    uint64_t cl = MAX((uint64_t)dst->serialise_align, 512);
    uint64_t run = 0, run_len = 0; /* pending compressed run */

    for (uint64_t i = 0; i <= len;) {
        uint64_t n = i < len ? MIN(ALIGN_DOWN(d + i, cl) + cl, d + len) -
                                   (d + i) : 0;
        bool whole = n && IS_ALIGNED(d + i, cl) &&
                     (n == cl || d + i + n == dst->size);
        bool zero = n && c->p->sparse_size && is_zero(buf + i, n);
        int r = 0;

        if (run_len && (!whole || zero || i == len)) {
            if (node_pwrite(dst, buf + run, run_len, d + run,
                            REQ_COMPRESSED) == -1)
                return -1;
            run_len = 0;
        }
        if (i == len)
            break;
        if (zero)
            r = c->p->target_is_zero ? 0 : write_zeroes(c, d + i, n);
        else if (!whole)
            r = node_pwrite(dst, buf + i, n, d + i, 0);
        else {
            if (!run_len)
                run = i;
            run_len = i + n - run;
        }
        if (r == -1)
            return -1;
        i += n;
    }
    return 0;
}

/* Read what DIFF_AGAINST holds at [d, d+len) into BUF (zeroes past its
 * end). */
static int
read_diff(struct copy *c, char *buf, uint64_t d, uint64_t len)
{
    struct node *b = c->p->diff_against;
    uint64_t in = d < b->size ? MIN(len, b->size - d) : 0;

    if (in && node_pread(b, buf, in, d) == -1)
        return -1;
    memset(buf + in, 0, len - in);
    return 0;
}

/* Write the cluster-sized pieces of BUF that differ from DIFF_AGAINST. */
static int
write_diff(struct copy *c, struct job *j, struct worker *w, uint64_t d,
           uint64_t len)
{
    uint64_t u = MAX((uint64_t)c->p->dst->serialise_align, 4096);

    if (read_diff(c, w->buf2, d, len) == -1)
        return -1;
    for (uint64_t i = 0; i < len;) {
        uint64_t s = i, n;
        int r;

        /* Skip equal units, then gather a run of differing ones. */
        for (; i < len; i += n) {
            n = MIN(ALIGN_DOWN(d + i, u) + u, d + len) - (d + i);
            if (memcmp(w->buf + i, w->buf2 + i, n))
                break;
        }
        s = i;
        for (; i < len; i += n) {
            n = MIN(ALIGN_DOWN(d + i, u) + u, d + len) - (d + i);
            if (!memcmp(w->buf + i, w->buf2 + i, n))
                break;
        }
        if (i == s)
            continue;
        if (take_turn(c, j) == -1)
            return -1;
        if (c->p->sparse_size && is_zero(w->buf + s, i - s))
            r = node_pwrite_zeroes(c->p->dst, d + s, i - s, REQ_MAY_UNMAP);
        else
            r = node_pwrite(c->p->dst, w->buf + s, i - s, d + s, 0);
        if (r == -1)
            return -1;
    }
    return 0;
}

/* Zero job against DIFF_AGAINST: zero only where it does not read zero. */
static int
zero_diff(struct copy *c, struct job *j, uint64_t d, uint64_t len)
{
    struct node *b = c->p->diff_against;
    uint64_t end = MIN(d + len, b->size);

    while (d < end) {
        struct vimg_extent e;

        if (node_block_status(b, false, d, end - d, &e) == -1)
            return -1;
        if (!(e.flags & VIMG_EXT_ZERO) &&
            (take_turn(c, j) == -1 ||
             node_pwrite_zeroes(c->p->dst, d, e.length, REQ_MAY_UNMAP) == -1))
            return -1;
        d += e.length;
    }
    return 0;
}

static int
run_job(struct worker *w, struct job *j)
{
    struct copy *c = w->c;
    const struct copy_params *p = c->p;
    uint64_t d = p->dst_off + j->off;

    if (j->kind == K_ZERO) {
        if (p->diff_against)
            return zero_diff(c, j, d, j->len);
        return take_turn(c, j) == -1 ? -1 : write_zeroes(c, d, j->len);
    }
    if (node_pread(p->src, w->buf, j->len, p->src_off + j->off) == -1)
        return -1;
    if (p->diff_against)
        return write_diff(c, j, w, d, j->len);
    if (p->compress)
        return write_compressed(c, w->buf, d, j->len);
    if (!p->sparse_size)
        return take_turn(c, j) == -1
                   ? -1 : node_pwrite(p->dst, w->buf, j->len, d, 0);
    return write_sparse(c, j, w->buf, d, j->len);
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct copy *c = w->c;
    struct job j;

    for (;;) {
        bool got;

        pthread_mutex_lock(&c->lock);
        got = next_job_locked(c, &j);
        pthread_mutex_unlock(&c->lock);
        if (!got)
            break;
        /* Even a job that wrote nothing waits for its turn before it
         * passes the ticket on. */
        if (run_job(w, &j) == -1 || take_turn(c, &j) == -1) {
            fail(c);
            break;
        }
        end_turn(c, &j);
        add_done(c, j.len);
    }
    /* A scheduling failure is recorded by whoever saw it first. */
    pthread_mutex_lock(&c->lock);
    bool sched_err = !c->failed && c->pos < c->p->length;
    pthread_mutex_unlock(&c->lock);
    if (sched_err)
        fail(c);
    return NULL;
}

/* ---- setup ---------------------------------------------------------- */

static int
check_params(const struct copy_params *p)
{
    uint64_t end;

    if (!p->src || !p->dst) {
        vimg_error(EINVAL, "copy: source and target are required");
        return -1;
    }
    if (ADD_OVERFLOW(p->src_off, p->length, &end) || end > p->src->size ||
        ADD_OVERFLOW(p->dst_off, p->length, &end) || end > p->dst->size) {
        vimg_error(EINVAL, "copy: range [%" PRIu64 ", +%" PRIu64
                   ") is past the end of an image", p->src_off, p->length);
        return -1;
    }
    if (p->sparse_size % 512 || p->sparse_size > (16u << 20)) {
        vimg_error(EINVAL, "copy: sparse size must be a multiple of 512 "
                   "up to 16 MiB");
        return -1;
    }
    return 0;
}

static int
copy_init(struct copy *c, const struct copy_params *p, unsigned n)
{
    uint64_t cl = MAX((uint64_t)p->dst->serialise_align, 1);

    memset(c, 0, sizeof *c);
    c->p = p;
    for (struct node *l = p->src; l; l = l->backing)
        c->chain_len++;
    c->chunk = MAX((uint64_t)CHUNK, cl);
    c->align = p->compress ? cl : 1;
    c->zgran = (p->sparse_size && p->sparse_size % 4096 == 0) ? 4096 : 512;
    c->ordered = !p->out_of_order && !p->compress;
    c->turn = calloc(n, sizeof *c->turn);
    if (!c->turn) {
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    c->nturn = n;
    for (unsigned i = 0; i < n; i++)
        pthread_cond_init(&c->turn[i], NULL);
    pthread_mutex_init(&c->lock, NULL);
    return 0;
}

static int
alloc_worker(struct worker *w, struct copy *c)
{
    w->c = c;
    if (posix_memalign((void **)&w->buf, 4096, c->chunk) ||
        (c->p->diff_against &&
         posix_memalign((void **)&w->buf2, 4096, c->chunk))) {
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    return 0;
}

/* Start up to N workers, wait for them; 0 or -1 with vimg_error. */
static int
run_workers(struct copy *c, unsigned n)
{
    struct worker *ws = calloc(n, sizeof *ws);
    unsigned started = 0;
    int r = 0;

    if (!ws) {
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    for (; started < n; started++) {
        if (alloc_worker(&ws[started], c) == -1) {
            r = -1;
            break;
        }
        if (pthread_create(&ws[started].thread, NULL, worker_main,
                           &ws[started])) {
            if (started == 0) {
                vimg_error(EAGAIN, "cannot start a copy thread");
                r = -1;
            }
            break;
        }
    }
    if (r == -1 && started)
        fail(c); /* stop the ones that run */
    for (unsigned i = 0; i < started; i++)
        pthread_join(ws[i].thread, NULL);
    for (unsigned i = 0; i <= started && i < n; i++) {
        free(ws[i].buf);
        free(ws[i].buf2);
    }
    free(ws);
    return r;
}

int
copy_run(const struct copy_params *p)
{
    unsigned n = p->workers ? MIN(p->workers, MAX_WORKERS) : 8;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    struct copy c;
    int r;

    if (check_params(p) == -1)
        return -1;
    /* More threads than CPUs only fight the writer (ordered writes and
     * the file system's inode lock serialise writes anyway): measured
     * on 2 CPUs, 2 threads beat 4 and 8 by 8-17%. */
    n = MIN(n, (unsigned)MAX(2, ncpu));
    if (copy_init(&c, p, n) == -1)
        return -1;
    if (p->min_depth >= p->max_depth)
        c.pos = p->length; /* nothing selected */
    if (p->progress)
        p->progress(p->opaque, 0, p->length);
    r = run_workers(&c, n);
    if (r == 0 && c.failed) {
        vimg_error(c.err, "%s", c.msg ? c.msg : "copy failed");
        r = -1;
    }
    free(c.msg);
    pthread_mutex_destroy(&c.lock);
    for (unsigned i = 0; i < c.nturn; i++)
        pthread_cond_destroy(&c.turn[i]);
    free(c.turn);
    if (r == 0 && node_flush(p->dst) == -1)
        r = -1;
    return r;
}
