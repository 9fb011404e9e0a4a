/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 format driver: the driver table, open/close, reads, block status,
 * flush and truncate.  Writes are in alloc.c, the header in header.c.
 *
 * Locking: s->lock is held only while the mapping of a range is looked
 * up; the data of allocated clusters is read outside it.
 */
#include <endian.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "io.h"
#include "options.h"
#include "qcow2.h"

/* One run of same-kind units starting at a guest offset. */
struct qmap {
    enum qcow2_kind kind;
    bool writable;
    bool has_host; /* host is valid (also for unallocated subclusters of
                    * an allocated extended-L2 cluster, as qemu reports) */
    uint64_t host;  /* NORMAL / ZERO_ALLOC: host offset of the start */
    uint64_t entry; /* COMPRESSED: the descriptor */
    uint64_t len;
};

static int
probe(const uint8_t *buf, size_t len)
{
    if (len >= 8 && be32toh(*(const uint32_t *)buf) == QCOW2_MAGIC) {
        uint32_t v = be32toh(*(const uint32_t *)(buf + 4));
        return (v == 2 || v == 3) ? 100 : 50;
    }
    return 0;
}

static uint64_t
host_of(const struct qcow2_state *s, const struct qcow2_l2e *e)
{
    (void)s;
    return e->entry & QCOW2_OFFSET_MASK;
}

/* Does a unit of kind K in entry E have a host offset? */
static bool
unit_has_host(const struct qcow2_state *s, const struct qcow2_l2e *e,
              enum qcow2_kind k)
{
    if (k == Q_NORMAL || k == Q_ZERO_ALLOC)
        return true;
    return k == Q_UNALLOC && s->extl2 &&
           ((e->entry & QCOW2_OFFSET_MASK) ||
            (s->data_file_name && (e->entry & QCOW2_OFLAG_COPIED)));
}

/* Map [off, off+max): the first unit's kind, merged with following
 * units of the same kind (contiguous host offsets where they have one).
 * MERGE_COMPRESSED: also merge compressed clusters (block status). */
static int
map_locked(struct qcow2_state *s, uint64_t off, uint64_t max,
           bool merge_compressed, struct qmap *m)
{
    uint64_t unit = s->subcluster_size, cs = s->cluster_size;
    uint64_t per_l1 = cs * s->l2_entries, pos, cur_cl = UINT64_MAX;
    struct qcow2_l2e e;

    if (qcow2_lookup_locked(s, off, &e) == -1)
        return -1;
    cur_cl = off / cs;
    m->kind = qcow2_classify(s, &e, (off % cs) / unit);
    m->entry = e.entry;
    m->host = host_of(s, &e) + off % cs;
    m->writable = m->kind == Q_NORMAL && (e.entry & QCOW2_OFLAG_COPIED);
    m->has_host = unit_has_host(s, &e, m->kind);
    m->len = unit - off % unit;
    if (m->kind == Q_COMPRESSED)
        m->len = cs - off % cs;
    if (m->kind == Q_COMPRESSED && !merge_compressed)
        goto out;
    pos = off + m->len;
    while (m->len < max) {
        uint64_t l1i = pos / per_l1;
        enum qcow2_kind k;
        bool has_host = m->has_host;

        if (m->kind == Q_UNALLOC && !has_host &&
            (l1i >= s->l1_size || !(s->l1[l1i] & QCOW2_OFFSET_MASK))) {
            uint64_t step = per_l1 - pos % per_l1;
            m->len += step;
            pos += step;
            continue;
        }
        if (pos / cs != cur_cl) {
            if (qcow2_lookup_locked(s, pos, &e) == -1)
                return -1;
            cur_cl = pos / cs;
        }
        k = qcow2_classify(s, &e, (pos % cs) / unit);
        if (k != m->kind || unit_has_host(s, &e, k) != has_host)
            break;
        if (k == Q_NORMAL &&
            m->writable != !!(e.entry & QCOW2_OFLAG_COPIED))
            break;
        if (has_host && host_of(s, &e) + pos % cs != m->host + m->len)
            break;
        if (k == Q_COMPRESSED) {
            m->len += cs;
            pos += cs;
        } else {
            m->len += unit;
            pos += unit;
        }
    }
out:
    m->len = MIN(m->len, max);
    return 0;
}

static int
qcow2_pread(struct node *n, void *buf, uint64_t count, uint64_t off)
{
    struct qcow2_state *s = n->state;
    uint8_t *p = buf;

    if (!s->data) { /* opened for metadata only (VIMG_OPEN_NO_IO) */
        vimg_error(EIO, "%s: the external data file is not open",
                   n->filename);
        return -1;
    }
    while (count) {
        struct qmap m;
        int r;

        pthread_mutex_lock(&s->lock);
        r = map_locked(s, off, count, false, &m);
        pthread_mutex_unlock(&s->lock);
        if (r == -1)
            return -1;
        if (m.kind == Q_NORMAL) {
            if (m.host == 0 && !s->data_file_name) {
                vimg_error(EIO, "data cluster at offset 0");
                return -1;
            }
            if (node_pread(s->data, p, m.len, m.host) == -1)
                return -1;
        } else if (m.kind == Q_COMPRESSED) {
            CLEANUP_FREE uint8_t *c = malloc(s->cluster_size);
            if (!c) {
                vimg_error(errno, "malloc: %m");
                return -1;
            }
            if (qcow2_read_compressed(s, m.entry, c) == -1)
                return -1;
            memcpy(p, c + off % s->cluster_size, m.len);
        } else {
            memset(p, 0, m.len);
        }
        p += m.len;
        off += m.len;
        count -= m.len;
    }
    return 0;
}

/* qemu's qcow2_detect_metadata_preallocation(): far more clusters are
 * referenced than the file occupies on disk (preallocation=metadata), so
 * data clusters may be holes in the file.  A file that is not sparse is
 * answered without a scan, and the scan stops at the threshold. */
static bool
detect_metadata_prealloc_locked(struct node *n, struct qcow2_state *s)
{
    uint64_t end = DIV_ROUND_UP(n->file->size, s->cluster_size);
    uint64_t real, threshold, count = 0, rc;
    int64_t alloc = n->file->drv->allocated_size
                        ? n->file->drv->allocated_size(n->file)
                        : -1;

    if (alloc < 0)
        return false;
    real = (uint64_t)alloc / s->cluster_size;
    threshold = MAX(real * 10 / 9, real + 2);
    if (threshold > end)
        return false;
    for (uint64_t i = 0; i < end && count < threshold; i++) {
        if (qcow2_refcount_get_locked(s, i, &rc) == -1)
            return false;
        count += rc != 0;
    }
    return count >= threshold;
}

/* The detection is made once per open image, as qemu does. */
static bool
metadata_preallocated_locked(struct node *n, struct qcow2_state *s)
{
    if (!s->metadata_prealloc_checked) {
        s->metadata_prealloc = detect_metadata_prealloc_locked(n, s);
        s->metadata_prealloc_checked = true;
    }
    return s->metadata_prealloc;
}

static int
qcow2_block_status(struct node *n, bool want_zero, uint64_t off,
                   uint64_t count, struct extent *ext)
{
    struct qcow2_state *s = n->state;
    bool recurse = false;
    struct qmap m;
    int r;

    pthread_mutex_lock(&s->lock);
    r = map_locked(s, off, count, true, &m);
    if (r == 0 && want_zero && m.kind == Q_NORMAL)
        recurse = metadata_preallocated_locked(n, s);
    pthread_mutex_unlock(&s->lock);
    if (r == -1)
        return -1;
    ext->length = m.len;
    ext->offset = 0;
    ext->file = NULL;
    switch (m.kind) {
    case Q_UNALLOC:
        ext->flags = m.has_host ? EXT_OFFSET : 0;
        break;
    case Q_ZERO:
        ext->flags = EXT_ALLOCATED | EXT_ZERO;
        break;
    case Q_ZERO_ALLOC:
        ext->flags = EXT_ALLOCATED | EXT_ZERO | EXT_OFFSET;
        break;
    case Q_NORMAL:
        ext->flags = EXT_ALLOCATED | EXT_DATA | EXT_OFFSET;
        if (m.writable)
            ext->flags |= EXT_WRITABLE;
        break;
    case Q_COMPRESSED:
        ext->flags = EXT_ALLOCATED | EXT_DATA | EXT_COMPRESSED;
        break;
    }
    if (ext->flags & EXT_OFFSET) {
        ext->offset = m.host;
        ext->file = s->data;
    }
    if (recurse) { /* as qemu: ask the file whether the data is a hole */
        struct extent fx;

        if (node_block_status_layer(s->data, true, m.host, m.len, &fx) == 0) {
            ext->length = fx.length;
            ext->flags |= fx.flags & EXT_ZERO;
        }
    }
    return 0;
}

static int
qcow2_flush(struct node *n)
{
    struct qcow2_state *s = n->state;
    LOCK_GUARD(&s->lock);

    if (s->flush_failed) {
        vimg_error(EIO, "%s: an earlier flush failed; data may be lost",
                   n->filename);
        return -1;
    }
    /* io.c leaves the file to us: a failure here is sticky. */
    if (qcow2_flush_all_locked(s) == -1 ||
        (!s->readonly && node_flush(n->file) == -1)) {
        s->flush_failed = true;
        return -1;
    }
    return 0;
}

static int
load_tables(struct node *n, struct qcow2_state *s)
{
    size_t l1b = (size_t)s->l1_size * 8;
    size_t rtb = (size_t)s->rt_clusters << s->cluster_bits;

    s->l1 = calloc(1, l1b ? l1b : 8);
    s->rt = malloc(rtb);
    if (!s->l1 || !s->rt) {
        vimg_error(errno, "malloc: %m");
        return -1;
    }
    if (l1b && node_pread(n->file, s->l1, l1b, s->l1_offset) == -1)
        return -1;
    for (uint32_t i = 0; i < s->l1_size; i++)
        s->l1[i] = be64toh(s->l1[i]);
    if (node_pread(n->file, s->rt, rtb, s->rt_offset) == -1)
        return -1;
    s->rt_entries = rtb / 8;
    for (uint64_t i = 0; i < s->rt_entries; i++)
        s->rt[i] = be64toh(s->rt[i]);
    return 0;
}

static int
open_data_file(struct node *n, struct qcow2_state *s, json_t *opts)
{
    CLEANUP_FREE char *path = NULL;

    if (!(s->incompat & QCOW2_INCOMPAT_DATA_FILE)) {
        s->data = n->file;
        return 0;
    }
    /* info: an untrusted image must not make us open another host file
     * by itself; only an explicit data-file option is followed. */
    if ((n->flags & VIMG_OPEN_NO_IO) && !json_object_get(opts, "data-file"))
        return 0;
    if (!s->data_file_name && !json_object_get(opts, "data-file")) {
        vimg_error(EINVAL, "image has an external data file but no name "
                   "for it");
        return -1;
    }
    if (!s->data_file_name) {
        s->data_file_name = strdup("");
        if (!s->data_file_name) {
            vimg_error(errno, "strdup: %m");
            return -1;
        }
    } else {
        path = node_path_relative(n->filename, s->data_file_name);
        if (!path)
            return -1;
    }
    n->data_file = node_open_child(n, opts, "data-file", path, n->flags);
    if (!n->data_file)
        return -1;
    s->data = n->data_file;
    s->raw_data = s->autoclear & QCOW2_AUTOCLEAR_DATA_FILE_RAW;
    return 0;
}

static size_t
clamp_entries(uint64_t budget, uint64_t cs, size_t lo, size_t hi)
{
    return MAX(lo, MIN(hi, budget / cs));
}

/* Free everything in the state (not the children). */
static void
free_state(struct qcow2_state *s)
{
    qcow2_cache_free(&s->l2_cache);
    qcow2_cache_free(&s->rb_cache);
    qcow2_snapshots_free(s);
    qcow2_bitmaps_free(s);
    qcow2_header_free(s);
    u64_vector_reset(&s->pending_free);
    free(s->l1);
    free(s->rt);
    s->l1 = NULL;
    s->rt = NULL;
}

static int
qcow2_open(struct node *n, json_t *opts)
{
    static const char *const keys[] = { "driver", "node-name", "file",
                                        "backing", "data-file", "read-only",
                                        "cache", NULL };
    struct qcow2_state *s = n->state;

    if (opts_check_keys(opts, keys, "the 'qcow2' format") == -1)
        return -1;
    pthread_mutex_init(&s->lock, NULL);
    s->node = n;
    s->readonly = !(n->flags & NODE_RDWR);
    if (qcow2_header_read(n, s) == -1 || load_tables(n, s) == -1 ||
        qcow2_snapshots_read(n, s) == -1 || qcow2_bitmaps_read(n, s) == -1 ||
        open_data_file(n, s, opts) == -1)
        goto err;
    if (qcow2_cache_init(s, &s->l2_cache,
                         clamp_entries(32u << 20, s->cluster_size, 16,
                                       4096)) == -1 ||
        qcow2_cache_init(s, &s->rb_cache,
                         clamp_entries(4u << 20, s->cluster_size, 8, 256)) ==
            -1)
        goto err;
    s->free_hint = 1;
    n->cow_align = s->subcluster_size;
    n->serialise_align = s->cluster_size;
    if (!s->readonly && (s->incompat & QCOW2_INCOMPAT_DIRTY) &&
        !(n->flags & NODE_CHECK)) {
        LOCK_GUARD(&s->lock);
        if (qcow2_rebuild_refcounts_locked(s) == -1) {
            vimg_error_prefix("repairing refcounts of a dirty image");
            goto err_unlocked;
        }
    }
    return 0;
err_unlocked:
err:
    free_state(s);
    pthread_mutex_destroy(&s->lock);
    return -1;
}

static int
qcow2_reopen_rw(struct node *n)
{
    struct qcow2_state *s = n->state;

    LOCK_GUARD(&s->lock);
    s->readonly = false; /* metadata changes start at the first write */
    return 0;
}

static int
qcow2_close(struct node *n)
{
    struct qcow2_state *s = n->state;
    int r;

    pthread_mutex_lock(&s->lock);
    r = qcow2_bitmaps_store_locked(s);
    if (qcow2_flush_all_locked(s) == -1)
        r = -1;
    pthread_mutex_unlock(&s->lock);
    free_state(s);
    pthread_mutex_destroy(&s->lock);
    return r;
}

/* Grow the L1 table to NEW_SIZE entries: copy, switch, free. */
static int
grow_l1_locked(struct qcow2_state *s, uint32_t new_size)
{
    uint64_t bytes = (uint64_t)new_size * 8;
    uint64_t nclus = DIV_ROUND_UP(bytes, s->cluster_size);
    uint64_t old_off = s->l1_offset, old_clus;
    uint64_t *nl1;
    int64_t off;
    uint8_t f[12];
    uint32_t be_n = htobe32(new_size);
    uint64_t be_off;

    if (bytes > QCOW2_MAX_L1_BYTES) {
        vimg_error(EFBIG, "L1 table would be too large");
        return -1;
    }
    old_clus = DIV_ROUND_UP((uint64_t)s->l1_size * 8, s->cluster_size);
    nl1 = calloc(nclus, s->cluster_size);
    if (!nl1) {
        vimg_error(errno, "calloc: %m");
        return -1;
    }
    memcpy(nl1, s->l1, (size_t)s->l1_size * 8);
    /* Everything the new table points to must be durable first. */
    if (qcow2_flush_all_locked(s) == -1 ||
        (off = qcow2_alloc_clusters_locked(s, nclus)) == -1 ||
        qcow2_flush_refcounts_locked(s) == -1) {
        free(nl1);
        return -1;
    }
    free(s->l1);
    s->l1 = nl1;
    s->l1_size = new_size;
    s->l1_offset = off;
    if (qcow2_write_l1_locked(s) == -1 || node_flush(s->node->file) == -1)
        return -1;
    be_off = htobe64(off);
    memcpy(f, &be_n, 4);
    memcpy(f + 4, &be_off, 8);
    if (node_pwrite(s->node->file, f, 12, QCOW2_HDR_L1_SIZE, 0) == -1 ||
        node_flush(s->node->file) == -1)
        return -1;
    if (old_off && old_clus &&
        qcow2_free_clusters_later_locked(s, old_off, old_clus) == -1)
        return -1;
    return qcow2_flush_all_locked(s);
}

static int
qcow2_truncate(struct node *n, uint64_t size, enum prealloc prealloc)
{
    struct qcow2_state *s = n->state;
    uint64_t per_l1 = s->cluster_size * s->l2_entries;
    uint64_t need = DIV_ROUND_UP(size, per_l1), be;
    uint64_t old = n->size;

    {
        LOCK_GUARD(&s->lock);
        if (qcow2_bitmaps_check_consistent_locked(s) == -1 ||
            qcow2_before_write_locked(s) == -1)
            return -1;
        if (size < n->size) {
            if (s->nb_snapshots) {
                vimg_error(ENOTSUP, "cannot shrink an image with "
                           "snapshots");
                return -1;
            }
        }
        if (need > s->l1_size && grow_l1_locked(s, need) == -1)
            return -1;
    }
    if (size < old) {
        uint64_t start = ALIGN_UP(size, s->cluster_size);
        if (start < old &&
            qcow2_discard(n, start, old - start) == -1)
            return -1;
    }
    {
        LOCK_GUARD(&s->lock);
        if (qcow2_flush_all_locked(s) == -1)
            return -1;
        be = htobe64(size);
        if (node_pwrite(n->file, &be, 8, 24, 0) == -1 ||
            node_flush(n->file) == -1)
            return -1;
    }
    n->size = size;
    {
        LOCK_GUARD(&s->lock);
        if (qcow2_bitmaps_resize_locked(s, size) == -1)
            return -1;
    }
    if (size > old && prealloc != PREALLOC_OFF)
        return qcow2_preallocate(n, old, size, prealloc);
    return 0;
}

static int
qcow2_prepare_write(struct node *n)
{
    struct qcow2_state *s = n->state;
    LOCK_GUARD(&s->lock);

    return qcow2_before_write_locked(s);
}

static int64_t
qcow2_allocated_size(struct node *n)
{
    if (n->file->drv->allocated_size)
        return n->file->drv->allocated_size(n->file);
    return -1;
}


const struct driver qcow2_format = {
    .name = "qcow2",
    .kind = DRV_FORMAT,
    .state_size = sizeof(struct qcow2_state),
    .probe = probe,
    .open = qcow2_open,
    .change_backing = qcow2_change_backing,
    .make_empty = qcow2_make_empty,
    .close = qcow2_close,
    .pread = qcow2_pread,
    .pwrite = qcow2_pwrite,
    .pwrite_zeroes = qcow2_pwrite_zeroes,
    .discard = qcow2_discard,
    .prepare_write = qcow2_prepare_write,
    .flush = qcow2_flush,
    .block_status = qcow2_block_status,
    .truncate = qcow2_truncate,
    .allocated_size = qcow2_allocated_size,
    .info = qcow2_info,
    .measure = qcow2_measure,
    .check = qcow2_check,
    .bitmap_op = qcow2_bitmap_op,
    .bitmap_get = qcow2_bitmap_get,
    .bitmap_live = qcow2_bitmap_live,
    .reopen_rw = qcow2_reopen_rw,
    .create = qcow2_create,
};
