/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 check repairs that change the image's structure:
 *
 *  - Rebuilding the refcount structure from the counted references
 *    (QEMU 7.2's rebuild_refcount_structure): new refcount blocks and a
 *    new refcount table are written into clusters that nothing
 *    references and that the old structure does not use (or past the
 *    end of the file), synced, and only then does one 12-byte header
 *    write switch to them.  A crash at any point leaves either the old
 *    or the new structure in force; the old one is freed afterwards by
 *    the leak repair of the second pass.
 *  - Single L1/L2 entry rewrites, growing the file, and clearing the
 *    dirty and corrupt bits once an image is consistent.
 * s->lock held.
 */
#include <endian.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "io.h"

struct rebuild {
    struct qck *ck;
    bool *old;       /* clusters of the old structure, NOLD of them */
    uint64_t nold;
    uint64_t *tbl;   /* new refcount table, host order */
    uint64_t entries;
    uint8_t *buf;    /* one refcount block */
};

static bool
is_free(struct rebuild *b, uint64_t c)
{
    return b->ck->ref[c] == 0 && (c >= b->nold || !b->old[c]);
}

/* alloc_clusters_imrt: COUNT contiguous free clusters from *FIRST_FREE,
 * marked used (refcount 1) in the counted table. */
static int64_t
alloc_imrt(struct rebuild *b, uint64_t count, uint64_t *first_free)
{
    struct qck *ck = b->ck;
    uint64_t c = *first_free, contig = 0;
    bool first_gap = true;

    for (; c < ck->nref && contig < count; c++) {
        if (is_free(b, c)) {
            contig++;
            if (first_gap) {
                *first_free = c;
                first_gap = false;
            }
        } else {
            contig = 0;
        }
    }
    if (contig < count && qck_grow(ck, c + count - contig) == -1)
        return -1;
    c -= contig;
    for (uint64_t i = 0; i < count; i++)
        ck->ref[c + i] = 1;
    return (int64_t)(c << ck->s->cluster_bits);
}

/* Write refcount block BI (a slice of the counted table) at OFF. */
static int
write_block(struct rebuild *b, uint64_t bi, uint64_t off)
{
    struct qcow2_state *s = b->ck->s;
    uint64_t base = bi * s->rb_entries;

    memset(b->buf, 0, s->cluster_size);
    for (uint64_t i = 0; i < s->rb_entries && base + i < b->ck->nref; i++)
        if (b->ck->ref[base + i])
            qcow2_rb_set(s, b->buf, i, b->ck->ref[base + i]);
    return node_pwrite(s->node->file, b->buf, s->cluster_size, off, 0);
}

/* rebuild_refcounts_write_refblocks: give every block of [first, end)
 * that has a non-zero count a cluster and write it.  1 if the table
 * grew, 0 if not, -1 on error. */
static int
write_refblocks(struct rebuild *b, uint64_t first, uint64_t end)
{
    struct qck *ck = b->ck;
    struct qcow2_state *s = ck->s;
    uint64_t first_free = 0;
    int grown = 0;

    for (uint64_t c = first; c < end && c < ck->nref; c++) {
        uint64_t bi = c / s->rb_entries, start = bi * s->rb_entries, off;

        if (!ck->ref[c])
            continue;
        if (bi < b->entries && b->tbl[bi]) {
            off = b->tbl[bi];
        } else {
            int64_t o;
            first_free = MAX(first_free, start);
            if ((o = alloc_imrt(b, 1, &first_free)) == -1)
                return -1;
            off = o;
            end = MAX(end, (off >> s->cluster_bits) + 1);
            if (bi >= b->entries) {
                uint64_t n = ALIGN_UP((bi + 1) * 8, s->cluster_size) / 8;
                uint64_t *t = realloc(b->tbl, n * 8);
                if (!t) {
                    vimg_error(errno, "realloc: %m");
                    return -1;
                }
                memset(t + b->entries, 0, (n - b->entries) * 8);
                b->tbl = t;
                b->entries = n;
                grown = 1;
            }
            b->tbl[bi] = off;
        }
        if (write_block(b, bi, off) == -1)
            return -1;
        c = start + s->rb_entries - 1;
    }
    return grown;
}

/* Mark the clusters of the current (old) structure, so that the new
 * one never overwrites them before the switch. */
static int
mark_old(struct rebuild *b)
{
    struct qcow2_state *s = b->ck->s;
    uint64_t rt0 = s->rt_offset >> s->cluster_bits;

    b->nold = b->ck->nref;
    b->old = calloc(b->nold + 1, sizeof *b->old);
    if (!b->old) {
        vimg_error(errno, "calloc: %m");
        return -1;
    }
    for (uint64_t c = rt0; c < rt0 + s->rt_clusters && c < b->nold; c++)
        b->old[c] = true;
    for (uint64_t i = 0; i < s->rt_entries; i++) {
        uint64_t c = (s->rt[i] & QCOW2_RT_OFFSET_MASK) >> s->cluster_bits;
        if (c && c < b->nold)
            b->old[c] = true;
    }
    return 0;
}

static int
write_table(struct rebuild *b, uint64_t off)
{
    struct qcow2_state *s = b->ck->s;
    uint64_t bytes = b->entries * 8;
    CLEANUP_FREE uint64_t *be = malloc(bytes);

    if (!be) {
        vimg_error(errno, "malloc: %m");
        return -1;
    }
    for (uint64_t i = 0; i < b->entries; i++)
        be[i] = htobe64(b->tbl[i]);
    return node_pwrite(s->node->file, be, bytes, off, 0);
}

static int
rebuild(struct rebuild *b)
{
    struct qcow2_state *s = b->ck->s;
    uint64_t first_free = 0, rt_clusters = 0;
    int64_t rt_off = -1;
    int grown;

    if (mark_old(b) == -1)
        return -1;
    if ((grown = write_refblocks(b, 0, b->ck->nref)) == -1)
        return -1;
    do {
        rt_clusters = DIV_ROUND_UP(b->entries * 8, s->cluster_size);
        if (rt_clusters * s->cluster_size > QCOW2_MAX_RT_BYTES) {
            vimg_error(EFBIG, "refcount table would be too large");
            return -1;
        }
        rt_off = alloc_imrt(b, rt_clusters, &first_free);
        if (rt_off == -1)
            return -1;
        grown = write_refblocks(b, (uint64_t)rt_off >> s->cluster_bits,
                                ((uint64_t)rt_off >> s->cluster_bits) +
                                    rt_clusters);
        if (grown == -1)
            return -1;
    } while (grown);
    /* Everything new is durable before the one switching write. */
    if (write_table(b, rt_off) == -1 || node_flush(s->node->file) == -1 ||
        qcow2_switch_rt_locked(s, rt_off, rt_clusters) == -1)
        return -1;
    free(s->rt);
    s->rt = TAKE_PTR(b->tbl);
    s->rt_entries = b->entries;
    s->rt_offset = rt_off;
    s->rt_clusters = rt_clusters;
    s->rt_dirty = false;
    s->free_hint = 1;
    return 0;
}

int
qck_rebuild_structure(struct qck *ck)
{
    struct qcow2_state *s = ck->s;
    struct rebuild b = { .ck = ck };
    int r;

    /* Nothing may write to the old blocks from now on. */
    if (qcow2_flush_refcounts_locked(s) == -1)
        return -1;
    qcow2_cache_drop(&s->rb_cache);
    ck->rb_off = 0;
    b.buf = malloc(s->cluster_size);
    if (!b.buf) {
        vimg_error(errno, "malloc: %m");
        return -1;
    }
    r = rebuild(&b);
    free(b.buf);
    free(b.old);
    free(b.tbl);
    ck->file_size = s->node->file->size;
    return r;
}

int
qck_zero_l2_entry(struct qck *ck, uint64_t l2_off, uint32_t idx)
{
    struct qcow2_state *s = ck->s;
    struct qcow2_l2e e = { 0, 0 };
    uint8_t buf[16];

    if (s->extl2)
        e.bitmap = ~QCK_SC_ALLOC_MASK; /* every subcluster reads as 0 */
    else if (s->version >= 3)
        e.entry = QCOW2_OFLAG_ZERO;
    qcow2_l2_write_entry(s, buf, 0, &e);
    if (node_pwrite(s->node->file, buf, s->l2_entry_size,
                    l2_off + (uint64_t)idx * s->l2_entry_size, 0) == -1 ||
        node_flush(s->node->file) == -1)
        return -1;
    return 0;
}

int
qck_write_l1_entry(struct qck *ck, uint32_t i)
{
    struct qcow2_state *s = ck->s;
    uint64_t be = htobe64(s->l1[i]);

    if (node_pwrite(s->node->file, &be, 8, s->l1_offset + (uint64_t)i * 8,
                    0) == -1)
        return -1;
    return node_flush(s->node->file);
}

int
qck_extend_file(struct qck *ck, uint64_t size)
{
    struct node *f = ck->s->node->file;

    if (size > f->size && node_truncate(f, size, PREALLOC_OFF) == -1)
        return -1;
    ck->file_size = f->size;
    return 0;
}

int
qck_mark_consistent(struct qck *ck)
{
    struct qcow2_state *s = ck->s;
    uint64_t bits = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT;

    if (!(s->incompat & bits))
        return 0;
    if (qcow2_header_update_u64_locked(s, QCOW2_HDR_INCOMPAT,
                                       s->incompat & ~bits) == -1)
        return -1;
    s->incompat &= ~bits;
    return 0;
}
