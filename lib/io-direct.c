/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The aligned request path of protocol nodes with request_align > 1
 * (files opened with O_DIRECT).  Such nodes get only aligned offsets,
 * lengths and buffers: other requests go through an aligned bounce
 * buffer, and writes read the partial blocks at their head and tail
 * first (read-modify-write).  Every write-type request on such a node
 * holds its range widened to whole blocks (io_direct_lock), so that no
 * other write changes a block between the read and the write; one whose
 * last block reaches past the end of the file holds everything from its
 * start on, and cuts the file back to the end of its data afterwards.
 * Locking as in lib/io.c.
 */
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "io-internal.h"
#include "io.h"

#define BOUNCE_MAX (1u << 20) /* bounce buffer of an unaligned request */

/* range_lock for a protocol node with request_align > 1: whole blocks,
 * and up to the end of everything when the last block reaches past the
 * end of the file (the request may move it). */
void
io_direct_lock(struct node *n, struct inflight *r, uint64_t off,
               uint64_t count)
{
    uint64_t a = n->request_align;

    LOCK_GUARD(&n->io_lock);
    for (;;) {
        r->start = ALIGN_DOWN(off, a);
        r->end = ALIGN_UP(off + count, a);
        if (r->end > n->size)
            r->end = UINT64_MAX;
        if (!n->exclusive && !io_overlaps_locked(n, r->start, r->end))
            break;
        pthread_cond_wait(&n->io_cond, &n->io_lock);
    }
    r->next = n->inflight;
    n->inflight = r;
    n->in_flight++;
}

bool
io_needs_align(struct node *n)
{
    return io_is_protocol(n) && n->request_align > 1;
}

static bool
req_aligned(struct node *n, const void *buf, uint64_t count, uint64_t off)
{
    uint64_t a = n->request_align;

    return IS_ALIGNED(off, a) && IS_ALIGNED(count, a) &&
           IS_ALIGNED((uintptr_t)buf, (uintptr_t)a);
}

/* An uninitialised buffer aligned for N; caller frees with free(). */
char *
io_aligned_alloc(struct node *n, size_t len)
{
    void *p;
    int e = posix_memalign(&p, MAX((size_t)n->request_align,
                                   sizeof(void *)), len);

    if (e) {
        vimg_error(e, "out of memory");
        return NULL;
    }
    return p;
}

/* Read the aligned range [off, off+count) into the aligned BUF; what is
 * past the node's size reads as zeroes. */
static int
aligned_pread(struct node *n, char *buf, uint64_t count, uint64_t off)
{
    uint64_t a = n->request_align;
    uint64_t size = __atomic_load_n(&n->size, __ATOMIC_ACQUIRE);
    uint64_t in = off >= size ? 0 : MIN(count, size - off);

    if (in && n->drv->pread(n, buf, ALIGN_UP(in, a), off) == -1)
        return -1;
    memset(buf + in, 0, count - in);
    return 0;
}

/* The next piece of [off, end) through the bounce buffer: whole blocks
 * [*cs, *ce) from the one holding OFF, at most BOUNCE_MAX bytes. */
static void
bounce_piece(struct node *n, uint64_t off, uint64_t end, uint64_t *cs,
             uint64_t *ce)
{
    uint64_t a = n->request_align;

    *cs = ALIGN_DOWN(off, a);
    *ce = MIN(ALIGN_UP(end, a), *cs + BOUNCE_MAX);
}

int
io_direct_pread(struct node *n, char *buf, uint64_t count, uint64_t off)
{
    uint64_t end = off + count, a = n->request_align;
    CLEANUP_FREE char *bounce = NULL;

    if (req_aligned(n, buf, count, off))
        return aligned_pread(n, buf, count, off);
    bounce = io_aligned_alloc(
        n, MIN(ALIGN_UP(end, a) - ALIGN_DOWN(off, a), BOUNCE_MAX));
    if (!bounce)
        return -1;
    while (off < end) {
        uint64_t cs, ce, len;

        bounce_piece(n, off, end, &cs, &ce);
        len = MIN(end, ce) - off;
        if (aligned_pread(n, bounce, ce - cs, cs) == -1)
            return -1;
        memcpy(buf, bounce + (off - cs), len);
        buf += len;
        off += len;
    }
    return 0;
}


/* The node grew to END (at least); WRITTEN is where the padded writes
 * ended.  Cut what was written past the real end (direct_lock held it
 * all).  The node gets its new size first, so this is no resize. */
static int
direct_finish_write(struct node *n, uint64_t end, uint64_t written,
                    unsigned flags)
{
    uint64_t real;

    io_protocol_grow(n, end);
    real = __atomic_load_n(&n->size, __ATOMIC_ACQUIRE);
    if (written <= real)
        return 0;
    if (!n->drv->truncate) {
        vimg_error(ENOTSUP, "%s: cannot cut an aligned write back to the "
                   "end of the file", n->drv->name);
        return -1;
    }
    if (n->drv->truncate(n, real, PREALLOC_OFF) == -1)
        return -1;
    if ((flags & REQ_FUA) && n->drv->flush && n->drv->flush(n) == -1)
        return -1;
    return 0;
}

/* Write through an aligned bounce buffer, reading the partial blocks at
 * the head and tail first; direct_lock held. */
int
io_direct_pwrite_locked(struct node *n, const char *buf, uint64_t count,
                     uint64_t off, unsigned flags)
{
    uint64_t a = n->request_align, end = off + count, written = 0;
    CLEANUP_FREE char *bounce = NULL;

    if (req_aligned(n, buf, count, off)) {
        if (n->drv->pwrite(n, buf, count, off, flags) == -1)
            return -1;
        io_protocol_grow(n, end);
        return 0;
    }
    bounce = io_aligned_alloc(
        n, MIN(ALIGN_UP(end, a) - ALIGN_DOWN(off, a), BOUNCE_MAX));
    if (!bounce)
        return -1;
    while (off < end) {
        uint64_t cs, ce, len;

        bounce_piece(n, off, end, &cs, &ce);
        len = MIN(end, ce) - off;
        if (off > cs && aligned_pread(n, bounce, a, cs) == -1)
            return -1;
        if (off + len < ce && !(off > cs && ce - a == cs) &&
            aligned_pread(n, bounce + (ce - a - cs), a, ce - a) == -1)
            return -1;
        memcpy(bounce + (off - cs), buf, len);
        if (n->drv->pwrite(n, bounce, ce - cs, cs, flags) == -1)
            return -1;
        written = ce;
        buf += len;
        off += len;
    }
    return direct_finish_write(n, end, written, flags);
}

/* Zeroes: the whole blocks through the driver (or zero buffers), the
 * partial head and tail blocks by read-modify-write; direct_lock held.
 * The whole blocks go first, so that a REQ_FAST refusal changes
 * nothing; the partial blocks are cheap enough for REQ_FAST. */

int
io_direct_zeroes_locked(struct node *n, uint64_t off, uint64_t count,
                     unsigned flags)
{
    uint64_t a = n->request_align, end = off + count;
    uint64_t head_end = MIN(end, ALIGN_UP(off, a));
    uint64_t tail_start = MAX(head_end, ALIGN_DOWN(end, a));
    CLEANUP_FREE char *zero = NULL;

    if (tail_start > head_end) {
        if (io_zero_whole(n, head_end, tail_start - head_end, flags) == -1)
            return -1;
        io_protocol_grow(n, tail_start);
    }
    if (head_end == off && tail_start == end)
        return 0;
    if (!(zero = io_aligned_alloc(n, a)))
        return -1;
    memset(zero, 0, a);
    if (head_end > off && io_direct_pwrite_locked(n, zero, head_end - off, off,
                                               flags & REQ_FUA) == -1)
        return -1;
    if (end > tail_start &&
        io_direct_pwrite_locked(n, zero, end - tail_start, tail_start,
                             flags & REQ_FUA) == -1)
        return -1;
    return 0;
}