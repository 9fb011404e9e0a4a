/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 write path: in-place writes, cluster allocation and copy on
 * write (snapshot-shared, compressed and zero clusters), zero writes,
 * discard, deferred frees and the ordered metadata flush.
 *
 * io.c serialises write-type requests per cluster and widens partial
 * writes into units that are not EXT_WRITABLE, so a cluster we must copy
 * is either fully covered or (extended L2) covered in whole subclusters;
 * the rest of such a cluster is taken from this layer's old content.
 *
 * Ordering: data is written before the L2 entry is changed; new clusters
 * are referenced (refcount raised) before the L2/L1 entry, and the L2
 * write-back syncs the refcounts first; frees are queued and applied
 * only after the L2/L1 tables that dropped the reference are durable.
 * Writes in place to clusters we own run outside s->lock; runs of whole
 * clusters go to write-run.c, which also writes outside it.  Compressed
 * writes (REQ_COMPRESSED) are packed and written by compress.c, which
 * calls back here only to install the L2 entry.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "io.h"
#include "qcow2.h"

#define PENDING_FREE_MAX 4096
#define SC_ALL QCOW2_SC_ALL

int
qcow2_free_clusters_later_locked(struct qcow2_state *s, uint64_t off,
                                 uint64_t n)
{
    if (u64_vector_append(&s->pending_free, off) == -1 ||
        u64_vector_append(&s->pending_free, n) == -1)
        return -1;
    return 0;
}

/* Host offset of a cluster entry (data file: offset may be 0). */
bool
qcow2_entry_has_host(const struct qcow2_state *s, uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return true;
    return (entry & QCOW2_OFFSET_MASK) ||
           (s->data_file_name && (entry & QCOW2_OFLAG_COPIED));
}

int
qcow2_free_entry_locked(struct qcow2_state *s, uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        uint64_t off, len, first, last;
        qcow2_compressed_range(s, entry, &off, &len);
        first = off >> s->cluster_bits;
        last = (off + len - 1) >> s->cluster_bits;
        return qcow2_free_clusters_later_locked(
            s, first << s->cluster_bits, last - first + 1);
    }
    if (s->data_file_name || !(entry & QCOW2_OFFSET_MASK))
        return 0; /* external data is not refcounted */
    return qcow2_free_clusters_later_locked(s, entry & QCOW2_OFFSET_MASK, 1);
}

int
qcow2_flush_all_locked(struct qcow2_state *s)
{
    if (s->readonly)
        return 0;
    if (qcow2_flush_refcounts_locked(s) == -1 ||
        qcow2_flush_l2_locked(s) == -1)
        return -1;
    if (s->pending_free.len) {
        for (size_t i = 0; i < s->pending_free.len; i += 2) {
            uint64_t c = s->pending_free.ptr[i] >> s->cluster_bits;
            for (uint64_t j = 0; j < s->pending_free.ptr[i + 1]; j++)
                if (qcow2_refcount_update_locked(s, c + j, -1) == -1)
                    return -1;
        }
        s->pending_free.len = 0;
        if (qcow2_flush_refcounts_locked(s) == -1)
            return -1;
        if (s->comp_tail) {
            /* Never pack compressed data into a cluster just freed. */
            uint64_t rc;
            if (qcow2_refcount_get_locked(s, s->comp_tail >> s->cluster_bits,
                                          &rc) == -1)
                return -1;
            if (rc == 0)
                s->comp_tail = 0;
        }
    }
    return 0;
}

int
qcow2_before_write_locked(struct qcow2_state *s)
{
    uint64_t keep;

    if (s->flush_failed) {
        vimg_error(EIO, "%s: an earlier flush failed; data may be lost",
                   s->node->filename);
        return -1;
    }
    if (s->autoclear_done)
        return 0;
    if (s->readonly) {
        vimg_error(EROFS, "image is opened read-only");
        return -1;
    }
    if (qcow2_bitmaps_go_live_locked(s) == -1)
        return -1;
    keep = s->autoclear & QCOW2_AUTOCLEAR_KNOWN;
    if (s->version >= 3 && keep != s->autoclear) {
        if (qcow2_header_update_u64_locked(s, QCOW2_HDR_AUTOCLEAR, keep) ==
            -1)
            return -1;
        s->autoclear = keep;
    }
    s->autoclear_done = true;
    return 0;
}

uint8_t *
qcow2_l2_for_write_locked(struct qcow2_state *s, uint64_t voff,
                          uint64_t *l2_off)
{
    uint64_t l1i = (voff >> s->cluster_bits) / s->l2_entries;
    uint64_t l1e, old, rc;
    int64_t new_off;
    CLEANUP_FREE uint8_t *copy = NULL;
    uint8_t *tbl;

    if (l1i >= s->l1_size) {
        vimg_error(EINVAL, "write beyond the L1 table");
        return NULL;
    }
    l1e = s->l1[l1i];
    old = l1e & QCOW2_OFFSET_MASK;
    if (old && (l1e & QCOW2_OFLAG_COPIED)) {
        *l2_off = old;
        return qcow2_l2_get_locked(s, old);
    }
    if (old) {
        if (qcow2_refcount_get_locked(s, old >> s->cluster_bits, &rc) == -1)
            return NULL;
        if (rc == 1) {
            s->l1[l1i] = old | QCOW2_OFLAG_COPIED;
            s->l1_dirty = true;
            *l2_off = old;
            return qcow2_l2_get_locked(s, old);
        }
        /* Shared with a snapshot: copy the table. */
        tbl = qcow2_l2_get_locked(s, old);
        if (!tbl)
            return NULL;
        copy = malloc(s->cluster_size);
        if (!copy) {
            vimg_error(errno, "malloc: %m");
            return NULL;
        }
        memcpy(copy, tbl, s->cluster_size);
    }
    new_off = qcow2_alloc_clusters_locked(s, 1);
    if (new_off == -1)
        return NULL;
    tbl = qcow2_l2_new_locked(s, new_off);
    if (!tbl)
        return NULL;
    if (copy) {
        for (uint32_t i = 0; i < s->l2_entries; i++) {
            struct qcow2_l2e e;
            qcow2_l2_read_entry(s, copy, i, &e);
            if (!(e.entry & QCOW2_OFLAG_COMPRESSED))
                e.entry &= ~QCOW2_OFLAG_COPIED;
            qcow2_l2_write_entry(s, tbl, i, &e);
        }
        if (qcow2_free_clusters_later_locked(s, old, 1) == -1)
            return NULL;
    }
    s->l1[l1i] = (uint64_t)new_off | QCOW2_OFLAG_COPIED;
    s->l1_dirty = true;
    *l2_off = new_off;
    return tbl;
}

/* Set the L2 entry of guest cluster VOFF. */
int
qcow2_set_entry_locked(struct qcow2_state *s, uint64_t voff,
                       const struct qcow2_l2e *e)
{
    uint64_t l2_off;
    uint8_t *tbl = qcow2_l2_for_write_locked(s, voff, &l2_off);

    if (!tbl)
        return -1;
    qcow2_l2_write_entry(s, tbl, (voff >> s->cluster_bits) % s->l2_entries,
                         e);
    qcow2_l2_mark_dirty_locked(s, l2_off);
    return 0;
}

/* After queueing frees, flush now and then to bound the queue. */
int
qcow2_maybe_flush_locked(struct qcow2_state *s)
{
    if (s->pending_free.len / 2 >= PENDING_FREE_MAX)
        return qcow2_flush_all_locked(s);
    return 0;
}

int
qcow2_set_compressed_locked(struct qcow2_state *s, uint64_t cl,
                            uint64_t entry)
{
    struct qcow2_l2e old, ne = { entry, 0 }; /* extended L2: bitmap 0 */

    if (qcow2_lookup_locked(s, cl, &old) == -1 ||
        qcow2_set_entry_locked(s, cl, &ne) == -1)
        return -1;
    s->need_sync = true; /* the data goes to disk before this entry */
    if (qcow2_entry_has_host(s, old.entry) &&
        qcow2_free_entry_locked(s, old.entry) == -1)
        return -1;
    return qcow2_maybe_flush_locked(s);
}

/* Mask of subclusters covered by [in, in+len) of a cluster. */
static uint64_t
sc_mask(const struct qcow2_state *s, uint64_t in, uint64_t len)
{
    uint64_t a, b;

    if (!s->extl2)
        return 1;
    a = in / s->subcluster_size;
    b = (in + len - 1) / s->subcluster_size;
    return ((b == 31 ? SC_ALL : ((1ull << (b + 1)) - 1)) >> a) << a;
}

/* This layer's old content of the cluster E into BUF (parts outside
 * KEEP_MASK subclusters need not be filled). */
static int
old_content(struct qcow2_state *s, const struct qcow2_l2e *e, uint8_t *buf,
            uint64_t keep_mask)
{
    uint64_t host = e->entry & QCOW2_OFFSET_MASK;

    memset(buf, 0, s->cluster_size);
    if (e->entry & QCOW2_OFLAG_COMPRESSED)
        return qcow2_read_compressed(s, e->entry, buf);
    if (!s->extl2) {
        if (qcow2_classify(s, e, 0) == Q_NORMAL && keep_mask)
            return node_pread(s->data, buf, s->cluster_size, host);
        return 0;
    }
    for (unsigned i = 0; i < 32; i++) {
        if (!((keep_mask >> i) & 1) || qcow2_classify(s, e, i) != Q_NORMAL)
            continue;
        if (node_pread(s->data, buf + i * s->subcluster_size,
                       s->subcluster_size, host + i * s->subcluster_size) ==
            -1)
            return -1;
    }
    return 0;
}

/* Write [in, in+len) of the guest cluster at CL (data BUF) into a new or
 * reused host cluster.  Called with the lock held, for clusters that
 * cannot be written in place. */
static int
write_slow(struct qcow2_state *s, uint64_t cl, uint64_t in, uint64_t len,
           const uint8_t *buf, const struct qcow2_l2e *old)
{
    uint64_t mask = sc_mask(s, in, len), host;
    bool compressed = old->entry & QCOW2_OFLAG_COMPRESSED;
    bool reuse = false, fresh_extl2 = false;
    struct qcow2_l2e ne;
    CLEANUP_FREE uint8_t *cbuf = malloc(s->cluster_size);

    if (!cbuf) {
        vimg_error(errno, "malloc: %m");
        return -1;
    }
    if (s->data_file_name) {
        host = cl; /* guest offset = host offset */
        reuse = true;
    } else if (!compressed && (old->entry & QCOW2_OFLAG_COPIED) &&
               (old->entry & QCOW2_OFFSET_MASK)) {
        host = old->entry & QCOW2_OFFSET_MASK;
        reuse = true;
    } else {
        int64_t h = qcow2_alloc_clusters_locked(s, 1);
        if (h == -1)
            return -1;
        host = h;
        fresh_extl2 = s->extl2 && !compressed &&
                      !qcow2_entry_has_host(s, old->entry);
    }
    if (fresh_extl2 || (reuse && s->extl2)) {
        /* Only the covered subclusters need writing. */
        uint64_t a = ALIGN_DOWN(in, s->subcluster_size);
        uint64_t b = ALIGN_UP(in + len, s->subcluster_size);
        memset(cbuf, 0, s->cluster_size);
        memcpy(cbuf + in, buf, len);
        if (node_pwrite(s->data, cbuf + a, b - a, host + a, 0) == -1)
            return -1;
    } else {
        if (old_content(s, old, cbuf, s->extl2 ? ~mask & SC_ALL : 1) == -1)
            return -1;
        memcpy(cbuf + in, buf, len);
        if (node_pwrite(s->data, cbuf, s->cluster_size, host, 0) == -1)
            return -1;
    }
    ne.entry = host | QCOW2_OFLAG_COPIED;
    if (s->data_file_name)
        ne.entry = cl | QCOW2_OFLAG_COPIED;
    ne.bitmap = 0;
    if (s->extl2) {
        uint64_t alloc = compressed ? SC_ALL : (old->bitmap & SC_ALL);
        uint64_t zero = compressed ? 0 : old->bitmap >> 32;
        alloc |= mask;
        zero &= ~mask & ~alloc;
        ne.bitmap = alloc | (zero << 32);
    }
    if (qcow2_set_entry_locked(s, cl, &ne) == -1)
        return -1;
    if (!reuse && qcow2_entry_has_host(s, old->entry) &&
        qcow2_free_entry_locked(s, old->entry) == -1)
        return -1;
    return qcow2_maybe_flush_locked(s);
}

/* Write within one cluster: [off, off+len). */
static int
write_cluster(struct qcow2_state *s, const uint8_t *buf, uint64_t off,
              uint64_t len)
{
    uint64_t cl = ALIGN_DOWN(off, s->cluster_size), in = off - cl;
    struct qcow2_l2e e;
    uint64_t host = 0, mask;
    bool inplace;

    pthread_mutex_lock(&s->lock);
    if (qcow2_before_write_locked(s) == -1 ||
        qcow2_lookup_locked(s, off, &e) == -1)
        goto err;
    mask = sc_mask(s, in, len);
    inplace = !(e.entry & QCOW2_OFLAG_COMPRESSED) &&
              (e.entry & QCOW2_OFLAG_COPIED) &&
              qcow2_entry_has_host(s, e.entry);
    if (inplace && !s->extl2 && (e.entry & QCOW2_OFLAG_ZERO))
        inplace = false;
    if (!inplace) {
        int r = write_slow(s, cl, in, len, buf, &e);
        pthread_mutex_unlock(&s->lock);
        return r;
    }
    host = (s->data_file_name ? cl : (e.entry & QCOW2_OFFSET_MASK)) + in;
    if (s->extl2 && ((e.bitmap & mask) != mask || (e.bitmap >> 32) & mask)) {
        /* Data first, then the subcluster bits. */
        struct qcow2_l2e ne = e;
        if (node_pwrite(s->data, buf, len, host, 0) == -1)
            goto err;
        ne.bitmap = (e.bitmap | mask) & ~(mask << 32);
        if (qcow2_set_entry_locked(s, cl, &ne) == -1)
            goto err;
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    pthread_mutex_unlock(&s->lock);
    return node_pwrite(s->data, buf, len, host, 0);
err:
    pthread_mutex_unlock(&s->lock);
    return -1;
}

static int
flush_fua(struct qcow2_state *s)
{
    int r;

    pthread_mutex_lock(&s->lock);
    r = qcow2_flush_all_locked(s);
    pthread_mutex_unlock(&s->lock);
    if (r == 0 && s->data != s->node->file)
        r = node_flush(s->data);
    if (r == 0)
        r = node_flush(s->node->file);
    if (r == -1) { /* sticky, as in qcow2_flush */
        LOCK_GUARD(&s->lock);
        s->flush_failed = true;
    }
    return r;
}

int
qcow2_pwrite(struct node *n, const void *buf, uint64_t count, uint64_t off,
             unsigned flags)
{
    struct qcow2_state *s = n->state;
    const uint8_t *p = buf;

    if (flags & REQ_COMPRESSED) {
        if (qcow2_pwrite_compressed(n, p, count, off) == -1)
            return -1;
        count = 0;
    }
    while (count) {
        uint64_t len = MIN(count, s->cluster_size - (off % s->cluster_size));
        if (len == s->cluster_size) {
            /* Whole clusters: mapped, written and installed as runs. */
            len = ALIGN_DOWN(count, s->cluster_size);
            if (qcow2_write_whole(s, p, off, len) == -1)
                return -1;
        } else if (write_cluster(s, p, off, len) == -1) {
            return -1;
        }
        p += len;
        off += len;
        count -= len;
    }
    return (flags & REQ_FUA) ? flush_fua(s) : 0;
}

/* Zero or discard the part [in, in+len) of cluster CL.  DISCARD: content
 * may become anything this layer's rules allow. */
static int
zero_cluster(struct qcow2_state *s, uint64_t cl, uint64_t in, uint64_t len,
             bool unmap, bool discard)
{
    struct qcow2_l2e e, ne;
    uint64_t mask = sc_mask(s, in, len);
    bool whole = in == 0 &&
                 (len == s->cluster_size || cl + len >= s->node->size);
    bool backing = s->node->backing_name != NULL;
    bool host = false;

    if (qcow2_lookup_locked(s, cl, &e) == -1)
        return -1;
    host = qcow2_entry_has_host(s, e.entry);
    ne = e;
    if (!s->extl2) {
        if (!whole && discard)
            return 0; /* partial units keep their content */
        if (!whole) {
            vimg_error(ENOTSUP, "partial cluster zeroing");
            return -1;
        }
        if (discard || s->version < 3) {
            ne.entry = (s->version >= 3 && backing) ? QCOW2_OFLAG_ZERO : 0;
        } else if (!unmap && host && (e.entry & QCOW2_OFLAG_COPIED) &&
                   !(e.entry & QCOW2_OFLAG_COMPRESSED)) {
            ne.entry = e.entry | QCOW2_OFLAG_ZERO;
        } else {
            ne.entry = QCOW2_OFLAG_ZERO;
        }
    } else if (e.entry & QCOW2_OFLAG_COMPRESSED) {
        if (!whole) {
            if (discard)
                return 0;
            CLEANUP_FREE uint8_t *z = calloc(1, len);
            if (!z) {
                vimg_error(errno, "calloc: %m");
                return -1;
            }
            return write_slow(s, cl, in, len, z, &e);
        }
        ne.entry = 0;
        ne.bitmap = (discard && !backing) ? 0 : SC_ALL << 32;
    } else {
        uint64_t alloc = e.bitmap & SC_ALL & ~mask;
        uint64_t zero = (e.bitmap >> 32) & ~mask;
        if (!discard || backing)
            zero |= mask;
        ne.bitmap = alloc | (zero << 32);
        if (alloc == 0 && (unmap || discard || !(e.entry & QCOW2_OFLAG_COPIED)))
            ne.entry = 0;
    }
    if (ne.entry == e.entry && ne.bitmap == e.bitmap)
        return 0;
    if (qcow2_set_entry_locked(s, cl, &ne) == -1)
        return -1;
    if (host && !qcow2_entry_has_host(s, ne.entry) &&
        qcow2_free_entry_locked(s, e.entry) == -1)
        return -1;
    return qcow2_maybe_flush_locked(s);
}

static int
zero_range(struct node *n, uint64_t off, uint64_t count, bool unmap,
           bool discard)
{
    struct qcow2_state *s = n->state;
    LOCK_GUARD(&s->lock);

    if (qcow2_before_write_locked(s) == -1)
        return -1;
    while (count) {
        uint64_t in = off % s->cluster_size;
        uint64_t len = MIN(count, s->cluster_size - in);
        if (zero_cluster(s, off - in, in, len, unmap, discard) == -1)
            return -1;
        off += len;
        count -= len;
    }
    return 0;
}

/* Data file raw: make [off, off+count) map to the data file. */
static int
map_raw(struct qcow2_state *s, uint64_t off, uint64_t count)
{
    LOCK_GUARD(&s->lock);

    if (qcow2_before_write_locked(s) == -1)
        return -1;
    while (count) {
        uint64_t in = off % s->cluster_size, cl = off - in;
        uint64_t len = MIN(count, s->cluster_size - in);
        uint64_t mask = sc_mask(s, in, len);
        struct qcow2_l2e e, ne;

        if (qcow2_lookup_locked(s, cl, &e) == -1)
            return -1;
        ne.entry = cl | QCOW2_OFLAG_COPIED;
        ne.bitmap = s->extl2 ? ((e.bitmap | mask) & ~(mask << 32)) : 0;
        if ((ne.entry != e.entry || ne.bitmap != e.bitmap) &&
            qcow2_set_entry_locked(s, cl, &ne) == -1)
            return -1;
        off += len;
        count -= len;
    }
    return 0;
}

int
qcow2_pwrite_zeroes(struct node *n, uint64_t off, uint64_t count,
                    unsigned flags)
{
    struct qcow2_state *s = n->state;

    if (s->raw_data) {
        /* The data file must stay a valid raw image: zero it there and
         * keep the clusters mapped to it. */
        if (node_pwrite_zeroes(s->data, off, count, flags) == -1)
            return -1;
        return map_raw(s, off, count);
    }
    if (s->version < 3 && n->backing_name) {
        vimg_error(ENOTSUP, "zero clusters need qcow2 v3 with a backing "
                   "file");
        return -1;
    }
    if (zero_range(n, off, count, flags & REQ_MAY_UNMAP, false) == -1)
        return -1;
    return (flags & REQ_FUA) ? flush_fua(s) : 0;
}

int
qcow2_discard(struct node *n, uint64_t off, uint64_t count)
{
    struct qcow2_state *s = n->state;

    if (s->raw_data)
        return 0; /* keep the raw data file in sync */
    return zero_range(n, off, count, true, true);
}

/* Give every unmapped cluster of [cl, rend) (inside one L2 table) a host
 * cluster: the L2 table first, then one contiguous run of data, as
 * qemu-img lays it out.  *END: the highest host end so far. */
static int
prealloc_l2_range(struct qcow2_state *s, uint64_t cl, uint64_t rend,
                  uint64_t *end)
{
    uint64_t l2_off, need = 0, next = 0;
    uint8_t *tbl = qcow2_l2_for_write_locked(s, cl, &l2_off);
    uint32_t first = (cl >> s->cluster_bits) % s->l2_entries;
    uint32_t n = DIV_ROUND_UP(rend - cl, s->cluster_size);

    if (!tbl)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        struct qcow2_l2e e;
        qcow2_l2_read_entry(s, tbl, first + i, &e);
        need += !qcow2_entry_has_host(s, e.entry);
    }
    if (!need)
        return 0;
    if (!s->data_file_name) {
        int64_t h = qcow2_alloc_clusters_locked(s, need);
        if (h == -1)
            return -1;
        next = h;
        *end = MAX(*end, next + need * s->cluster_size);
        tbl = qcow2_l2_for_write_locked(s, cl, &l2_off);
        if (!tbl)
            return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct qcow2_l2e e;
        qcow2_l2_read_entry(s, tbl, first + i, &e);
        if (qcow2_entry_has_host(s, e.entry))
            continue;
        if (s->data_file_name) {
            e.entry = (cl + (uint64_t)i * s->cluster_size) |
                      QCOW2_OFLAG_COPIED;
        } else {
            e.entry = next | QCOW2_OFLAG_COPIED;
            next += s->cluster_size;
        }
        /* Like qemu-img: subclusters stay unallocated, except that a
         * raw data file must show through. */
        e.bitmap = s->extl2 && s->raw_data ? SC_ALL : 0;
        qcow2_l2_write_entry(s, tbl, first + i, &e);
    }
    qcow2_l2_mark_dirty_locked(s, l2_off);
    return 0;
}

/* Preallocate the guest range [start, size): every cluster gets a host
 * cluster (metadata), and the files grow to cover them (MODE is applied
 * to the growth: metadata = sparse, falloc, full). */
int
qcow2_preallocate(struct node *n, uint64_t start, uint64_t size,
                  enum prealloc mode)
{
    struct qcow2_state *s = n->state;
    enum prealloc fmode = mode == PREALLOC_METADATA ? PREALLOC_OFF : mode;
    uint64_t end = 0;
    LOCK_GUARD(&s->lock);

    if (mode == PREALLOC_OFF)
        return 0;
    if (qcow2_before_write_locked(s) == -1)
        return -1;
    for (uint64_t cl = ALIGN_DOWN(start, s->cluster_size); cl < size;) {
        uint64_t per_l1 = s->cluster_size * s->l2_entries;
        uint64_t rend = MIN(size, ALIGN_DOWN(cl, per_l1) + per_l1);
        if (prealloc_l2_range(s, cl, rend, &end) == -1)
            return -1;
        cl = ALIGN_UP(rend, s->cluster_size);
    }
    if (qcow2_flush_all_locked(s) == -1)
        return -1;
    if (s->data_file_name) {
        if (s->data->size < size &&
            node_truncate(s->data, size, fmode) == -1)
            return -1;
    } else if (end > s->node->file->size &&
               node_truncate(s->node->file, end, fmode) == -1) {
        return -1;
    }
    return 0;
}
