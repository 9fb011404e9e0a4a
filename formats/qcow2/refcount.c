/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 refcounts: entries of every width (1..64 bits) in refcount
 * blocks, the refcount table, cluster allocation, and table growth.
 *
 * Invariants:
 *  - A cluster is handed out only after its refcount is raised in the
 *    (write-back) refcount block cache; s->need_sync is then set so that
 *    any L2 write-back first writes and syncs the refcount blocks.
 *  - A new refcount block describes itself: it is placed inside the range
 *    it covers, so allocating it never recurses.
 *  - Growing the table writes new blocks and the new table past the
 *    covered range, syncs, then switches the header (one 12-byte write),
 *    and only then frees the old table.
 * All functions need s->lock.
 */
#include <endian.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "io.h"
#include "qcow2.h"

uint64_t
qcow2_rb_get(const struct qcow2_state *s, const uint8_t *rb, uint64_t idx)
{
    unsigned w = s->refcount_bits;
    uint64_t v;

    switch (w) {
    case 8:
        return rb[idx];
    case 16: {
        uint16_t x;
        memcpy(&x, rb + idx * 2, 2);
        return be16toh(x);
    }
    case 32: {
        uint32_t x;
        memcpy(&x, rb + idx * 4, 4);
        return be32toh(x);
    }
    case 64:
        memcpy(&v, rb + idx * 8, 8);
        return be64toh(v);
    default: /* 1, 2, 4: LSB first within each byte */
        return (rb[idx * w / 8] >> (idx * w % 8)) & ((1u << w) - 1);
    }
}

void
qcow2_rb_set(const struct qcow2_state *s, uint8_t *rb, uint64_t idx,
             uint64_t val)
{
    unsigned w = s->refcount_bits;

    switch (w) {
    case 8:
        rb[idx] = val;
        break;
    case 16: {
        uint16_t x = htobe16(val);
        memcpy(rb + idx * 2, &x, 2);
        break;
    }
    case 32: {
        uint32_t x = htobe32(val);
        memcpy(rb + idx * 4, &x, 4);
        break;
    }
    case 64: {
        uint64_t x = htobe64(val);
        memcpy(rb + idx * 8, &x, 8);
        break;
    }
    default: {
        unsigned shift = idx * w % 8;
        uint8_t mask = ((1u << w) - 1) << shift;
        rb[idx * w / 8] = (rb[idx * w / 8] & ~mask) | ((val << shift) & mask);
        break;
    }
    }
}

/* The refcount block offset for CLUSTER, 0 if none. */
static int
block_of(struct qcow2_state *s, uint64_t cluster, uint64_t *rb_off)
{
    uint64_t i = cluster / s->rb_entries;

    *rb_off = 0;
    if (i >= s->rt_entries)
        return 0;
    *rb_off = s->rt[i] & QCOW2_RT_OFFSET_MASK;
    if (*rb_off && !IS_ALIGNED(*rb_off, s->cluster_size)) {
        vimg_error(EIO, "refcount block offset 0x%" PRIx64
                   " is not cluster aligned", *rb_off);
        return -1;
    }
    return 0;
}

int
qcow2_refcount_get_locked(struct qcow2_state *s, uint64_t cluster,
                          uint64_t *rc)
{
    uint64_t rb_off;
    const uint8_t *rb;

    *rc = 0;
    if (block_of(s, cluster, &rb_off) == -1)
        return -1;
    if (!rb_off)
        return 0;
    rb = qcow2_cache_get_locked(s, &s->rb_cache, rb_off, false);
    if (!rb)
        return -1;
    *rc = qcow2_rb_get(s, rb, cluster % s->rb_entries);
    return 0;
}

int
qcow2_refcount_update_locked(struct qcow2_state *s, uint64_t cluster,
                             int64_t delta)
{
    uint64_t rb_off, old, val;
    uint8_t *rb;

    if (block_of(s, cluster, &rb_off) == -1)
        return -1;
    if (!rb_off) {
        vimg_error(EIO, "cluster %" PRIu64 " has no refcount block",
                   cluster);
        return -1;
    }
    rb = qcow2_cache_get_locked(s, &s->rb_cache, rb_off, false);
    if (!rb)
        return -1;
    old = qcow2_rb_get(s, rb, cluster % s->rb_entries);
    if (delta >= 0) {
        if (old > s->refcount_max - (uint64_t)delta) {
            vimg_error(EMLINK, "refcount of cluster %" PRIu64
                       " would overflow", cluster);
            return -1;
        }
        val = old + delta;
    } else {
        if (old < (uint64_t)-delta) {
            vimg_error(EIO, "refcount of cluster %" PRIu64
                       " would go below zero", cluster);
            return -1;
        }
        val = old - (uint64_t)-delta;
    }
    qcow2_rb_set(s, rb, cluster % s->rb_entries, val);
    qcow2_cache_mark_dirty(&s->rb_cache, rb_off);
    if (val == 0) {
        if (cluster < s->free_hint)
            s->free_hint = cluster;
        qcow2_l2_forget_locked(s, cluster << s->cluster_bits);
    }
    return 0;
}

static int
write_rt(struct qcow2_state *s, uint64_t *tbl, uint64_t entries,
         uint64_t off)
{
    size_t bytes = ALIGN_UP(entries * 8, s->cluster_size);
    CLEANUP_FREE uint64_t *be = calloc(1, bytes);

    if (!be) {
        vimg_error(errno, "calloc: %m");
        return -1;
    }
    for (uint64_t i = 0; i < entries; i++)
        be[i] = htobe64(tbl[i]);
    return node_pwrite(s->node->file, be, bytes, off, 0);
}

int
qcow2_flush_refcounts_locked(struct qcow2_state *s)
{
    bool dirty = qcow2_cache_is_dirty(&s->rb_cache);

    if (!dirty && !s->rt_dirty && !s->need_sync)
        return 0;
    if (s->need_sync && s->data != s->node->file &&
        node_flush(s->data) == -1)
        return -1;
    if (dirty && qcow2_cache_writeback_locked(s, &s->rb_cache) == -1)
        return -1;
    if (node_flush(s->node->file) == -1)
        return -1;
    if (s->rt_dirty) {
        if (write_rt(s, s->rt, s->rt_entries, s->rt_offset) == -1)
            return -1;
        if (node_flush(s->node->file) == -1)
            return -1;
        s->rt_dirty = false;
    }
    s->need_sync = false;
    return 0;
}

/* Put a new self-describing refcount block at CLUSTER. */
static int
new_refblock(struct qcow2_state *s, uint64_t cluster)
{
    uint64_t off = cluster << s->cluster_bits;
    uint8_t *rb = qcow2_cache_get_locked(s, &s->rb_cache, off, true);

    if (!rb)
        return -1;
    qcow2_rb_set(s, rb, cluster % s->rb_entries, 1);
    s->rt[cluster / s->rb_entries] = off;
    s->rt_dirty = true;
    s->need_sync = true;
    return 0;
}

/* Size a new refcount structure at cluster START covering everything
 * below it plus itself: *NB blocks then *NT table clusters. */
int
qcow2_size_new_structure(struct qcow2_state *s, uint64_t start, uint64_t first_rt,
                   uint64_t min_entries, uint64_t *nb, uint64_t *nt,
                   uint64_t *entries)
{
    uint64_t b = 1, t = 1, e = min_entries;

    for (int iter = 0; iter < 64; iter++) {
        uint64_t need = DIV_ROUND_UP(start + b + t, s->rb_entries);
        uint64_t nb2 = need > first_rt ? need - first_rt : 0;
        uint64_t e2 = MAX(e, need);
        uint64_t t2 = DIV_ROUND_UP(e2 * 8, s->cluster_size);
        if (nb2 == b && t2 == t && e2 == e) {
            if (t * s->cluster_size > QCOW2_MAX_RT_BYTES) {
                vimg_error(EFBIG, "refcount table would be too large");
                return -1;
            }
            *nb = b;
            *nt = t;
            *entries = t * s->cluster_size / 8;
            return 0;
        }
        b = nb2, t = t2, e = e2;
    }
    vimg_error(EIO, "cannot size the refcount table");
    return -1;
}

/* Write blocks [start, start+nb) covering rt indices first_rt.., with
 * counts from COUNTS (indexed from cluster first_rt*rb_entries; may be
 * NULL) and 1 for the new structure itself, then the table TBL at
 * start+nb.  Sync. */
int
qcow2_write_new_structure_locked(struct qcow2_state *s, uint64_t start,
                                 uint64_t nb, uint64_t nt, uint64_t first_rt,
                                 uint64_t *tbl, uint64_t entries,
                                 const uint32_t *counts, uint64_t ncounts)
{
    CLEANUP_FREE uint8_t *rb = malloc(s->cluster_size);
    uint64_t end = start + nb + nt;

    if (!rb) {
        vimg_error(errno, "malloc: %m");
        return -1;
    }
    for (uint64_t b = 0; b < nb; b++) {
        uint64_t base = (first_rt + b) * s->rb_entries;
        memset(rb, 0, s->cluster_size);
        for (uint64_t i = 0; i < s->rb_entries; i++) {
            uint64_t c = base + i, v = 0;
            if (c >= start && c < end)
                v = 1;
            else if (counts && c < ncounts)
                v = counts[c];
            if (v > s->refcount_max) {
                vimg_error(EMLINK, "refcount of cluster %" PRIu64
                           " does not fit", c);
                return -1;
            }
            if (v)
                qcow2_rb_set(s, rb, i, v);
        }
        if (node_pwrite(s->node->file, rb, s->cluster_size,
                        (start + b) << s->cluster_bits, 0) == -1)
            return -1;
        tbl[first_rt + b] = (start + b) << s->cluster_bits;
    }
    if (write_rt(s, tbl, entries, (start + nb) << s->cluster_bits) == -1)
        return -1;
    return node_flush(s->node->file);
}

/* Point the header at a new table (one 12-byte write) and sync. */
int
qcow2_switch_rt_locked(struct qcow2_state *s, uint64_t off,
                       uint32_t clusters)
{
    uint8_t f[12];
    uint64_t be_off = htobe64(off);
    uint32_t be_n = htobe32(clusters);

    memcpy(f, &be_off, 8);
    memcpy(f + 8, &be_n, 4);
    if (node_pwrite(s->node->file, f, 12, QCOW2_HDR_RT_OFFSET, 0) == -1)
        return -1;
    if (node_flush(s->node->file) == -1)
        return -1;
    memcpy(s->hdr_raw + QCOW2_HDR_RT_OFFSET, f, 12);
    return 0;
}

/* Grow the table so that rt index MIN_INDEX exists. */
static int
grow_table(struct qcow2_state *s, uint64_t min_index)
{
    uint64_t start = s->rt_entries * s->rb_entries;
    uint64_t nb, nt, entries, old_off = s->rt_offset;
    uint32_t old_clusters = s->rt_clusters;
    uint64_t *tbl;

    if (qcow2_size_new_structure(s, start, s->rt_entries,
                           MAX(min_index + 1, s->rt_entries * 2), &nb, &nt,
                           &entries) == -1)
        return -1;
    tbl = calloc(entries, 8);
    if (!tbl) {
        vimg_error(errno, "calloc: %m");
        return -1;
    }
    memcpy(tbl, s->rt, s->rt_entries * 8);
    /* Everything the old table points to must be on disk first. */
    if (qcow2_flush_refcounts_locked(s) == -1 ||
        qcow2_write_new_structure_locked(s, start, nb, nt, s->rt_entries,
                                         tbl, entries, NULL, 0) == -1 ||
        qcow2_switch_rt_locked(s, (start + nb) << s->cluster_bits, nt) ==
            -1) {
        free(tbl);
        return -1;
    }
    free(s->rt);
    s->rt = tbl;
    s->rt_entries = entries;
    s->rt_offset = (start + nb) << s->cluster_bits;
    s->rt_clusters = nt;
    for (uint32_t i = 0; i < old_clusters; i++)
        if (qcow2_refcount_update_locked(
                s, (old_off >> s->cluster_bits) + i, -1) == -1)
            return -1;
    return 0;
}

/* Find N free clusters from the hint; *FIRST_FREE gets the first free
 * cluster seen. */
static int
find_free(struct qcow2_state *s, uint64_t n, uint64_t *start,
          uint64_t *first_free)
{
    uint64_t c = MAX(s->free_hint, 1), run = 0;

    *first_free = UINT64_MAX;
    for (;;) {
        uint64_t rb_off, rc;

        if (block_of(s, c, &rb_off) == -1)
            return -1;
        if (!rb_off) {
            /* A whole block range is free. */
            uint64_t next = (c / s->rb_entries + 1) * s->rb_entries;
            if (*first_free == UINT64_MAX)
                *first_free = c;
            if (run == 0)
                *start = c;
            run += next - c;
            if (run >= n)
                return 0;
            c = next;
            continue;
        }
        if (qcow2_refcount_get_locked(s, c, &rc) == -1)
            return -1;
        if (rc == 0) {
            if (*first_free == UINT64_MAX)
                *first_free = c;
            if (run == 0)
                *start = c;
            if (++run >= n)
                return 0;
        } else {
            run = 0;
        }
        c++;
    }
}

/*
 * Give refcount block range RANGE a block.  Placing it self-describing at
 * the start of the run being allocated would split that run, and a run
 * as long as a block's range could then never be found; so, as QEMU
 * does, put it in the first free cluster of a range that already has a
 * block, and make a block self-describing only where no such cluster is
 * free.  Each call gives one more range a block, so the caller's retry
 * loop ends.
 */
static int
place_refblock(struct qcow2_state *s, uint64_t range)
{
    uint64_t c, first_free, rb_off, off;
    uint8_t *rb;

    if (find_free(s, 1, &c, &first_free) == -1 ||
        block_of(s, c, &rb_off) == -1)
        return -1;
    if (!rb_off || c / s->rb_entries == range)
        return new_refblock(s, c);
    off = c << s->cluster_bits;
    rb = qcow2_cache_get_locked(s, &s->rb_cache, off, true);
    if (!rb)
        return -1;
    if (qcow2_refcount_update_locked(s, c, 1) == -1)
        return -1;
    s->rt[range] = off;
    s->rt_dirty = true;
    s->need_sync = true;
    return 0;
}

int64_t
qcow2_alloc_clusters_locked(struct qcow2_state *s, uint64_t n)
{
    for (;;) {
        uint64_t start, first_free, last, need_block = UINT64_MAX;

        if (find_free(s, n, &start, &first_free) == -1)
            return -1;
        last = start + n - 1;
        if (last / s->rb_entries >= s->rt_entries) {
            if (grow_table(s, last / s->rb_entries) == -1)
                return -1;
            continue;
        }
        for (uint64_t i = start / s->rb_entries; i <= last / s->rb_entries;
             i++) {
            if (s->rt[i] == 0) {
                need_block = MAX(start, i * s->rb_entries);
                break;
            }
        }
        if (need_block != UINT64_MAX) {
            if (place_refblock(s, need_block / s->rb_entries) == -1)
                return -1;
            continue;
        }
        for (uint64_t c = start; c <= last; c++)
            if (qcow2_refcount_update_locked(s, c, 1) == -1)
                return -1;
        s->free_hint = first_free == start ? last + 1 : first_free;
        s->need_sync = true;
        if ((start << s->cluster_bits) >> s->cluster_bits != start) {
            vimg_error(EFBIG, "image file too large");
            return -1;
        }
        return start << s->cluster_bits;
    }
}
