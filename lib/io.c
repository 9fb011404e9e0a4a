/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The request path.  Every read, write, zero, discard, flush, block
 * status and truncate on a node passes through here (see io.h).
 *
 * Protocol nodes go straight to their driver; a protocol node grows when
 * written past its end and reads past its end as zeroes, because formats
 * append clusters to their file.  Filter nodes (DRV_FILTER) are handled
 * as protocol nodes; their driver forwards to the file child.
 *
 * Format nodes: reads and block status walk the chain with the drivers'
 * layer-local block_status; writes that cover only part of a cow_align
 * unit that the driver cannot update in place are widened to the whole
 * unit with data read through the chain (copy-on-write); overlapping
 * write-type requests are serialised per serialise_align unit through a
 * list of in-flight ranges; truncate waits until the node is idle.
 * Compressed writes (REQ_COMPRESSED) must cover whole serialise_align
 * units and go to the driver unwidened.
 *
 * Protocol nodes with request_align > 1 (O_DIRECT) take the aligned
 * path of lib/io-direct.c.
 *
 * Locking: n->io_lock protects n->inflight, n->in_flight, n->exclusive
 * and, for protocol nodes, growth of n->size.
 */
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "dirty.h"
#include "io.h"
#include "io-internal.h"
#include "hook.h"

#define ZERO_CHUNK (1u << 20) /* bytes of zeroes written per call */

/* The node this thread has drained (node_drain_begin), or NULL. */
static __thread struct node *drained_by_me;

/* Count a request in; wait while a truncate or drain holds the node,
 * unless this thread holds the drain, or this is a write hook's read
 * inside a request in flight. */
static void
enter(struct node *n)
{
    LOCK_GUARD(&n->io_lock);
    while (n->exclusive && !write_hooks_running() && drained_by_me != n)
        pthread_cond_wait(&n->io_cond, &n->io_lock);
    n->in_flight++;
}

static void
leave(struct node *n)
{
    LOCK_GUARD(&n->io_lock);
    if (--n->in_flight == 0)
        pthread_cond_broadcast(&n->io_cond);
}

bool
io_overlaps_locked(struct node *n, uint64_t start, uint64_t end)
{
    for (struct inflight *r = n->inflight; r; r = r->next)
        if (r->start < end && start < r->end)
            return true;
    return false;
}

/* Enter N for a write-type request on [off, off+count), excluding other
 * write-type requests on the same serialise_align units. */
static void
range_lock(struct node *n, struct inflight *r, uint64_t off, uint64_t count)
{
    uint64_t a = n->serialise_align;

    r->start = ALIGN_DOWN(off, a);
    r->end = ALIGN_UP(off + count, a);
    LOCK_GUARD(&n->io_lock);
    while (n->exclusive || io_overlaps_locked(n, r->start, r->end))
        pthread_cond_wait(&n->io_cond, &n->io_lock);
    r->next = n->inflight;
    n->inflight = r;
    n->in_flight++;
}


void
io_range_unlock(struct node *n, struct inflight *r)
{
    LOCK_GUARD(&n->io_lock);
    for (struct inflight **pp = &n->inflight; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    n->in_flight--;
    pthread_cond_broadcast(&n->io_cond);
}

static int
check_range(struct node *n, uint64_t off, uint64_t count, bool grows)
{
    uint64_t end;

    if (ADD_OVERFLOW(off, count, &end) || end > INT64_MAX) {
        vimg_error(EINVAL, "request at offset %" PRIu64 " overflows", off);
        return -1;
    }
    if (!grows && end > n->size) {
        vimg_error(EINVAL, "request [%" PRIu64 ", +%" PRIu64
                   ") is past the end of the image (%" PRIu64 " bytes)",
                   off, count, n->size);
        return -1;
    }
    return 0;
}

int
node_block_status_layer(struct node *n, bool want_zero, uint64_t off,
                        uint64_t count, struct extent *ext)
{
    memset(ext, 0, sizeof *ext);
    if (!n->drv->block_status) {
        ext->length = count;
        ext->flags = EXT_ALLOCATED | EXT_DATA | EXT_WRITABLE;
        return 0;
    }
    if (n->drv->block_status(n, want_zero, off, count, ext) == -1)
        return -1;
    if (ext->length == 0 || ext->length > count) {
        vimg_error(EIO, "%s: driver returned a bad extent length",
                   n->drv->name);
        return -1;
    }
    return 0;
}


/* ---- reads ---------------------------------------------------------- */

static int
protocol_pread(struct node *n, void *buf, uint64_t count, uint64_t off)
{
    uint64_t size = __atomic_load_n(&n->size, __ATOMIC_ACQUIRE);
    uint64_t inside = off >= size ? 0 : MIN(count, size - off);

    if (inside && n->drv->pread(n, buf, inside, off) == -1)
        return -1;
    memset((char *)buf + inside, 0, count - inside);
    return 0;
}

/* Read through the chain; caller has entered N. */
static int
chain_pread(struct node *n, char *buf, uint64_t count, uint64_t off)
{
    while (count) {
        struct extent e;

        if (node_block_status_layer(n, false, off, count, &e) == -1)
            return -1;
        if (e.flags & EXT_ALLOCATED) {
            if (e.flags & EXT_ZERO)
                memset(buf, 0, e.length);
            else if (n->drv->pread(n, buf, e.length, off) == -1)
                return -1;
        } else if (n->backing && off < n->backing->size) {
            uint64_t in = MIN(e.length, n->backing->size - off);

            if (node_pread(n->backing, buf, in, off) == -1)
                return -1;
            memset(buf + in, 0, e.length - in);
        } else {
            memset(buf, 0, e.length);
        }
        buf += e.length;
        off += e.length;
        count -= e.length;
    }
    return 0;
}

int
node_pread(struct node *n, void *buf, uint64_t count, uint64_t off)
{
    int r;

    if (!n->drv->pread) {
        vimg_error(ENOTSUP, "%s: reading is not supported", n->drv->name);
        return -1;
    }
    if (check_range(n, off, count, io_is_protocol(n)) == -1)
        return -1;
    if (count == 0)
        return 0;
    enter(n);
    if (io_needs_align(n))
        r = io_direct_pread(n, buf, count, off);
    else if (io_is_protocol(n))
        r = protocol_pread(n, buf, count, off);
    else
        r = chain_pread(n, buf, count, off);
    leave(n);
    return r;
}

/* ---- writes --------------------------------------------------------- */

static int
check_writable(struct node *n)
{
    if (!(n->flags & NODE_RDWR)) {
        vimg_error(EPERM, "%s: image is opened read-only",
                   n->filename ? n->filename : n->drv->name);
        return -1;
    }
    return 0;
}

void
io_protocol_grow(struct node *n, uint64_t end)
{
    LOCK_GUARD(&n->io_lock);
    if (end > n->size)
        __atomic_store_n(&n->size, end, __ATOMIC_RELEASE);
}

/* Can a partial write into the cow unit at UNIT be done in place? */
static int
unit_writable(struct node *n, uint64_t unit, bool *ok)
{
    uint64_t len = MIN((uint64_t)n->cow_align, n->size - unit);
    struct extent e;

    if (node_block_status_layer(n, false, unit, len, &e) == -1)
        return -1;
    *ok = (e.flags & EXT_WRITABLE) && e.length >= len;
    return 0;
}

/* Write BUF at OFF, inside one cow unit, filling the rest of the unit
 * from the chain when it cannot be written in place.  Range held. */
static int
write_partial_unit(struct node *n, const char *buf, uint64_t count,
                   uint64_t off, unsigned flags)
{
    uint64_t unit = ALIGN_DOWN(off, (uint64_t)n->cow_align);
    uint64_t ulen = MIN((uint64_t)n->cow_align, n->size - unit);
    CLEANUP_FREE char *bounce = NULL;
    bool ok;

    if (unit_writable(n, unit, &ok) == -1)
        return -1;
    if (ok)
        return n->drv->pwrite(n, buf, count, off, flags);
    bounce = malloc(ulen);
    if (!bounce) {
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    if (chain_pread(n, bounce, ulen, unit) == -1)
        return -1;
    memcpy(bounce + (off - unit), buf, count);
    return n->drv->pwrite(n, bounce, ulen, unit, flags);
}

/* End of the cow unit holding OFF; the image's last unit may be short. */
static uint64_t
unit_end(struct node *n, uint64_t off)
{
    return MIN(ALIGN_DOWN(off, (uint64_t)n->cow_align) + n->cow_align,
               n->size);
}

/* Write with copy-on-write of partial units; range held.  Split into a
 * partial head unit, whole middle units and a partial tail unit. */
static int
format_pwrite_locked(struct node *n, const char *buf, uint64_t count,
                     uint64_t off, unsigned flags)
{
    uint64_t a = n->cow_align, end = off + count, mid_end;

    if (a <= 1)
        return n->drv->pwrite(n, buf, count, off, flags);
    if (!IS_ALIGNED(off, a) || end < unit_end(n, off)) {
        uint64_t len = MIN(end, unit_end(n, off)) - off;

        if (write_partial_unit(n, buf, len, off, flags) == -1)
            return -1;
        buf += len;
        off += len;
    }
    if (off == end)
        return 0;
    mid_end = (end == n->size) ? end : ALIGN_DOWN(end, a);
    if (mid_end > off &&
        n->drv->pwrite(n, buf, mid_end - off, off, flags) == -1)
        return -1;
    if (mid_end == end)
        return 0;
    return write_partial_unit(n, buf + (mid_end - off), end - mid_end,
                              mid_end, flags);
}

/* A compressed write must cover whole serialise_align units (the last
 * may end at the image's end); protocols never compress. */
static int
check_compressed(struct node *n, uint64_t count, uint64_t off)
{
    uint64_t a = n->serialise_align, end = off + count;

    if (io_is_protocol(n)) {
        vimg_error(ENOTSUP, "%s: compressed writes are not supported",
                   n->drv->name);
        return -1;
    }
    if (!IS_ALIGNED(off, a) || (!IS_ALIGNED(end, a) && end != n->size)) {
        vimg_error(EINVAL, "compressed writes must cover whole clusters "
                   "(%" PRIu64 " bytes)", a);
        return -1;
    }
    return 0;
}

int
node_pwrite(struct node *n, const void *buf, uint64_t count, uint64_t off,
            unsigned flags)
{
    struct inflight r;
    int ret;

    if (!n->drv->pwrite) {
        vimg_error(ENOTSUP, "%s: writing is not supported", n->drv->name);
        return -1;
    }
    if (check_writable(n) == -1 ||
        check_range(n, off, count, io_is_protocol(n)) == -1)
        return -1;
    if ((flags & REQ_COMPRESSED) && check_compressed(n, count, off) == -1)
        return -1;
    if (count == 0)
        return (flags & REQ_FUA) ? node_flush(n) : 0;
    if (flags & REQ_COMPRESSED) {
        /* Whole clusters: no copy-on-write widening needed. */
        range_lock(n, &r, off, count);
        write_hooks_run(n, off, count);
        ret = n->drv->pwrite(n, buf, count, off, flags);
        dirty_mark(n, off, count);
        io_range_unlock(n, &r);
        return ret;
    }
    if (io_needs_align(n)) {
        io_direct_lock(n, &r, off, count);
        write_hooks_run(n, off, count);
        ret = io_direct_pwrite_locked(n, buf, count, off, flags);
        io_range_unlock(n, &r);
        return ret;
    }
    if (io_is_protocol(n)) {
        enter(n);
        write_hooks_run(n, off, count);
        ret = n->drv->pwrite(n, buf, count, off, flags);
        if (ret == 0)
            io_protocol_grow(n, off + count);
        leave(n);
        return ret;
    }
    /* Hooks run and bitmaps are marked inside the request, so that a
     * drained node has neither pending. */
    range_lock(n, &r, off, count);
    write_hooks_run(n, off, count);
    ret = format_pwrite_locked(n, buf, count, off, flags);
    dirty_mark(n, off, count);
    io_range_unlock(n, &r);
    return ret;
}

/* ---- zeroes and discard --------------------------------------------- */

/* Write zero buffers over [off, off+count); range held for formats. */
static int
write_zero_buffers(struct node *n, uint64_t off, uint64_t count,
                   unsigned flags)
{
    CLEANUP_FREE char *zeroes = io_aligned_alloc(n, MIN(count, ZERO_CHUNK));

    if (!zeroes)
        return -1;
    memset(zeroes, 0, MIN(count, ZERO_CHUNK));
    while (count) {
        uint64_t len = MIN(count, ZERO_CHUNK);
        int r = io_is_protocol(n)
                    ? n->drv->pwrite(n, zeroes, len, off, flags)
                    : format_pwrite_locked(n, zeroes, len, off, flags);

        if (r == -1)
            return -1;
        off += len;
        count -= len;
    }
    return 0;
}

/* Zero an aligned (or image-end) range through the driver, falling back
 * to zero buffers. */
int
io_zero_whole(struct node *n, uint64_t off, uint64_t count, unsigned flags)
{
    if (n->drv->pwrite_zeroes) {
        if (n->drv->pwrite_zeroes(n, off, count, flags) == 0)
            return 0;
        if (errno != ENOTSUP && errno != EOPNOTSUPP)
            return -1;
    }
    if (flags & REQ_FAST) {
        vimg_error(ENOTSUP, "fast zeroing is not supported");
        return -1;
    }
    return write_zero_buffers(n, off, count, flags & REQ_FUA);
}

static int
format_zeroes_locked(struct node *n, uint64_t off, uint64_t count,
                     unsigned flags)
{
    uint64_t a = n->cow_align, end = off + count;
    uint64_t head_end = MIN(end, ALIGN_UP(off, a));
    uint64_t tail_start = MAX(head_end, ALIGN_DOWN(end, a));

    if (end == n->size)
        tail_start = end; /* the last, partial unit counts as whole */
    if (flags & REQ_FAST && (head_end > off || tail_start < end)) {
        vimg_error(ENOTSUP, "fast zeroing of partial clusters");
        return -1;
    }
    if (head_end > off && write_zero_buffers(n, off, head_end - off,
                                             flags & REQ_FUA) == -1)
        return -1;
    if (tail_start > head_end &&
        io_zero_whole(n, head_end, tail_start - head_end, flags) == -1)
        return -1;
    if (end > tail_start &&
        write_zero_buffers(n, tail_start, end - tail_start,
                           flags & REQ_FUA) == -1)
        return -1;
    return 0;
}

int
node_pwrite_zeroes(struct node *n, uint64_t off, uint64_t count,
                   unsigned flags)
{
    struct inflight r;
    int ret;

    if (check_writable(n) == -1 ||
        check_range(n, off, count, io_is_protocol(n)) == -1)
        return -1;
    if (count == 0)
        return 0;
    if (io_needs_align(n)) {
        io_direct_lock(n, &r, off, count);
        write_hooks_run(n, off, count);
        ret = io_direct_zeroes_locked(n, off, count, flags);
        io_range_unlock(n, &r);
        return ret;
    }
    if (io_is_protocol(n)) {
        enter(n);
        write_hooks_run(n, off, count);
        ret = io_zero_whole(n, off, count, flags);
        if (ret == 0)
            io_protocol_grow(n, off + count);
        leave(n);
        return ret;
    }
    range_lock(n, &r, off, count);
    write_hooks_run(n, off, count);
    ret = format_zeroes_locked(n, off, count, flags);
    dirty_mark(n, off, count);
    io_range_unlock(n, &r);
    return ret;
}

int
node_discard(struct node *n, uint64_t off, uint64_t count)
{
    uint64_t a = n->cow_align, start, end;
    struct inflight r;
    int ret;

    if (check_writable(n) == -1 || check_range(n, off, count, false) == -1)
        return -1;
    /* Discard is advisory: no driver support or no whole unit is fine.
     * Bitmaps record the whole request, partial units too (QEMU's
     * bdrv_co_pdiscard marks what the guest asked for). */
    start = ALIGN_UP(off, a);
    end = off + count == n->size ? off + count : ALIGN_DOWN(off + count, a);
    if (!n->drv->discard || count == 0)
        return 0;
    if (start >= end) {
        if (n->drv->prepare_write && n->drv->prepare_write(n) == -1)
            return -1;
        dirty_mark(n, off, count);
        return 0;
    }
    range_lock(n, &r, start, end - start);
    write_hooks_run(n, start, end - start);
    ret = n->drv->discard(n, start, end - start);
    dirty_mark(n, off, count);
    io_range_unlock(n, &r);
    if (ret == -1 && (errno == ENOTSUP || errno == EOPNOTSUPP))
        ret = 0;
    return ret;
}

int
node_flush(struct node *n)
{
    int ret = 0;

    if (!(n->flags & NODE_RDWR))
        return 0;
    /* cache=unsafe: formats still write their caches back, but the
     * bytes are never forced to disk. */
    if (io_is_protocol(n) && n->flags & NODE_NO_FLUSH)
        return 0;
    enter(n);
    if (n->drv->flush)
        ret = n->drv->flush(n);
    leave(n);
    if (ret == 0 && n->data_file)
        ret = node_flush(n->data_file);
    /* A driver with a flush callback flushes its own file (node.h):
     * qcow2 then sees a failure and refuses later writes, inject logs
     * the flush after it completed. */
    if (ret == 0 && n->file && !n->drv->flush)
        ret = node_flush(n->file);
    return ret;
}

/* ---- block status --------------------------------------------------- */

int
node_block_status(struct node *n, bool want_zero, uint64_t off,
                  uint64_t count, struct vimg_extent *ext)
{
    int depth = 0;

    if (check_range(n, off, count, false) == -1)
        return -1;
    if (count == 0) {
        vimg_error(EINVAL, "block status of an empty range");
        return -1;
    }
    memset(ext, 0, sizeof *ext);
    for (;;) {
        struct extent e;

        enter(n);
        int r = node_block_status_layer(n, want_zero, off, count, &e);
        leave(n);
        if (r == -1)
            return -1;
        count = e.length;
        if (e.flags & EXT_ALLOCATED) {
            ext->length = count;
            ext->depth = depth;
            ext->flags = VIMG_EXT_ALLOCATED |
                         (e.flags & (EXT_DATA | EXT_ZERO | EXT_OFFSET |
                                     EXT_COMPRESSED));
            ext->offset = e.offset;
            return 0;
        }
        if (!n->backing || off >= n->backing->size) {
            ext->length = count;
            ext->depth = depth + (n->backing != NULL);
            ext->flags = VIMG_EXT_ZERO;
            return 0;
        }
        count = MIN(count, n->backing->size - off);
        n = n->backing;
        depth++;
    }
}

/* Copy into N's own layer what its backing chain shows in [POS, END),
 * which N does not allocate; the range is held. */
static int
populate_locked(struct node *n, uint64_t pos, uint64_t end)
{
    while (pos < end) {
        CLEANUP_FREE char *buf = NULL;
        struct vimg_extent be;
        struct extent e;
        uint64_t len;

        if (node_block_status_layer(n, false, pos, end - pos, &e) == -1)
            return -1;
        len = e.length;
        if (!(e.flags & EXT_ALLOCATED) && n->backing &&
            pos < n->backing->size) {
            len = MIN(len, n->backing->size - pos);
            if (node_block_status(n->backing, false, pos, len, &be) == -1)
                return -1;
            len = be.length;
            if (be.flags & VIMG_EXT_ZERO) {
                if (format_zeroes_locked(n, pos, len, 0) == -1)
                    return -1;
            } else {
                if (!(buf = malloc(len))) {
                    vimg_error(ENOMEM, "out of memory");
                    return -1;
                }
                if (node_pread(n->backing, buf, len, pos) == -1 ||
                    format_pwrite_locked(n, buf, len, pos, 0) == -1)
                    return -1;
            }
        }
        pos += len;
    }
    return 0;
}

int
node_populate(struct node *n, uint64_t off, uint64_t count)
{
    uint64_t a = n->cow_align, start, end;
    struct inflight r;
    int ret;

    if (check_writable(n) == -1 || check_range(n, off, count, false) == -1)
        return -1;
    if (io_is_protocol(n) || count == 0)
        return 0;
    start = ALIGN_DOWN(off, a);
    end = MIN(ALIGN_UP(off + count, a), n->size);
    range_lock(n, &r, start, end - start);
    ret = populate_locked(n, start, end);
    io_range_unlock(n, &r);
    return ret;
}

int
node_map(struct node *n, uint64_t off, uint64_t count, struct extent *e)
{
    if (check_range(n, off, count, false) == -1)
        return -1;
    for (;;) {
        int r;

        enter(n);
        r = node_block_status_layer(n, false, off, count, e);
        leave(n);
        if (r == -1)
            return -1;
        if (e->flags & EXT_ALLOCATED)
            return 0;
        if (!n->backing || off >= n->backing->size) {
            e->flags = 0;
            return 0;
        }
        count = MIN(e->length, n->backing->size - off);
        n = n->backing;
    }
}

/* ---- truncate ------------------------------------------------------- */

void
node_drain_begin(struct node *n)
{
    pthread_mutex_lock(&n->io_lock);
    while (n->exclusive)
        pthread_cond_wait(&n->io_cond, &n->io_lock);
    n->exclusive = true;
    while (n->in_flight)
        pthread_cond_wait(&n->io_cond, &n->io_lock);
    pthread_mutex_unlock(&n->io_lock);
    drained_by_me = n;
}

void
node_drain_end(struct node *n)
{
    drained_by_me = NULL;
    pthread_mutex_lock(&n->io_lock);
    n->exclusive = false;
    pthread_cond_broadcast(&n->io_cond);
    pthread_mutex_unlock(&n->io_lock);
}

int
node_truncate(struct node *n, uint64_t size, enum prealloc prealloc)
{
    int ret;

    if (check_writable(n) == -1)
        return -1;
    if (!n->drv->truncate) {
        vimg_error(ENOTSUP, "%s: resizing is not supported", n->drv->name);
        return -1;
    }
    if (size > INT64_MAX) {
        vimg_error(EINVAL, "size too large");
        return -1;
    }
    if (write_hooks_present(n)) {
        vimg_error(EBUSY, "Cannot resize a node that a job is copying");
        return -1;
    }
    node_drain_begin(n);
    ret = n->drv->truncate(n, size, prealloc);
    if (ret == 0)
        __atomic_store_n(&n->size, size, __ATOMIC_RELEASE);
    node_drain_end(n);
    return ret;
}
