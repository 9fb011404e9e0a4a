/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 consistency check, qemu-img check's algorithm (QEMU 7.2
 * block/qcow2-refcount.c), so that both tools count the same findings:
 *
 *  1. Count every reference in an in-memory refcount table: the header,
 *     the active and the snapshot L1/L2 tables and the clusters they map
 *     (compressed extents by their byte range), the snapshot table, the
 *     refcount table and blocks, the bitmap directory and tables.
 *  2. Compare it with the stored refcounts: stored > counted is a leak,
 *     stored < counted a corruption; a referenced cluster with stored
 *     refcount 0, or a broken refcount table, needs a rebuild (repair.c).
 *  3. Check the COPIED flags of the active L1/L2 tables.
 *
 * Repairs (FIX) follow qemu-img, plus one more: with CHECK_FIX_ERRORS an
 * L2 entry whose cluster lies past the end of the file is made to read
 * as zeroes instead of being left in place.  The same code repairs a
 * dirty (lazy refcounts) image on a read-write open.
 *
 * Tables are read directly from the file (the caches were flushed
 * first and are dropped afterwards).  Runs with s->lock held.
 */
#include <endian.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "io.h"

#define MAX_CHECK_CLUSTERS (1ull << 31) /* qemu: INT_MAX */
/* check -r grows the file for a refcount block at most this far past
 * its end. */
#define CHECK_GROW_MAX (64ull << 20)

void
qck_report(struct qck *ck, const char *fmt, ...)
{
    char buf[512];
    va_list ap;

    if (!ck->r->report)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ck->r->report(ck->r->opaque, buf);
}

int
qck_grow(struct qck *ck, uint64_t n)
{
    if (n <= ck->nref)
        return 0;
    if (n > MAX_CHECK_CLUSTERS) {
        vimg_error(EFBIG, "image file too large to check");
        return -1;
    }
    if (n > ck->cap) {
        uint64_t cap = MAX(n, ck->cap * 2);
        uint32_t *p = realloc(ck->ref, cap * sizeof *p);
        if (!p) {
            vimg_error(errno, "realloc: %m");
            return -1;
        }
        memset(p + ck->cap, 0, (cap - ck->cap) * sizeof *p);
        ck->ref = p;
        ck->cap = cap;
    }
    ck->nref = n;
    return 0;
}

/* qcow2_inc_refcounts_imrt: one more reference to [off, off+size). */
static int
ref(struct qck *ck, uint64_t off, uint64_t size)
{
    struct qcow2_state *s = ck->s;
    uint64_t first, last;

    if (size == 0)
        return 0;
    if (off + size >= ck->file_size + s->cluster_size) {
        qck_report(ck, "ERROR: counting reference for region exceeding the "
                   "end of the file by one cluster or more: offset 0x%"
                   PRIx64 " size 0x%" PRIx64, off, size);
        ck->r->corruptions++;
        return 0;
    }
    first = off >> s->cluster_bits;
    last = (off + size - 1) >> s->cluster_bits;
    if (qck_grow(ck, last + 1) == -1) {
        ck->r->check_errors++;
        return -1;
    }
    for (uint64_t c = first; c <= last; c++) {
        if (ck->ref[c] >= ck->max) {
            qck_report(ck, "ERROR: overflow cluster offset=0x%" PRIx64,
                       c << s->cluster_bits);
            qck_report(ck, "Use qemu-img amend to increase the refcount "
                       "entry width or qemu-img convert to create a clean "
                       "copy if the image cannot be opened for writing");
            ck->r->corruptions++;
            continue;
        }
        ck->ref[c]++;
    }
    return 0;
}

int
qck_get_refcount(struct qck *ck, uint64_t cluster, uint64_t *rc)
{
    struct qcow2_state *s = ck->s;
    uint64_t i = cluster / s->rb_entries, off;

    *rc = 0;
    if (i >= s->rt_entries)
        return 0;
    off = s->rt[i] & QCOW2_RT_OFFSET_MASK;
    if (!off)
        return 0;
    if (!IS_ALIGNED(off, s->cluster_size)) {
        vimg_error(EIO, "Input/output error");
        return -1;
    }
    if (ck->rb_off != off) {
        ck->rb_off = 0;
        if (node_pread(s->node->file, ck->rb, s->cluster_size, off) == -1)
            return -1;
        ck->rb_off = off;
    }
    *rc = qcow2_rb_get(s, ck->rb, cluster % s->rb_entries);
    return 0;
}

enum qck_type
qck_type(const struct qcow2_state *s, uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return QCK_COMPRESSED;
    if ((entry & QCOW2_OFLAG_ZERO) && !s->extl2)
        return (entry & QCOW2_OFFSET_MASK) ? QCK_ZERO_ALLOC : QCK_ZERO_PLAIN;
    if (!(entry & QCOW2_OFFSET_MASK))
        return ((s->incompat & QCOW2_INCOMPAT_DATA_FILE) &&
                (entry & QCOW2_OFLAG_COPIED))
                   ? QCK_NORMAL
                   : QCK_UNALLOC;
    return QCK_NORMAL;
}

/* A reference that lies wholly past the end of the file. */
static bool
past_eof(struct qck *ck, uint64_t off, uint64_t size)
{
    return off + size >= ck->file_size + ck->s->cluster_size;
}

static int
check_compressed(struct qck *ck, struct qcow2_l2e *e, uint64_t l2_off,
                 uint32_t i, bool active, unsigned fix)
{
    struct qcow2_state *s = ck->s;
    uint64_t coff, csize;

    if (e->entry & QCOW2_OFLAG_COPIED) {
        qcow2_compressed_range(s, e->entry, &coff, &csize);
        qck_report(ck, "ERROR: coffset=0x%" PRIx64 ": copied flag must "
                   "never be set for compressed clusters", coff);
        e->entry &= ~QCOW2_OFLAG_COPIED;
        ck->r->corruptions++;
    }
    if (s->incompat & QCOW2_INCOMPAT_DATA_FILE) {
        qck_report(ck, "ERROR compressed cluster %" PRIu32 " with data "
                   "file, entry=0x%" PRIx64, i, e->entry);
        ck->r->corruptions++;
        return 0;
    }
    if (e->bitmap) {
        qck_report(ck, "ERROR compressed cluster %" PRIu32 " with non-zero "
                   "subcluster allocation bitmap, entry=0x%" PRIx64, i,
                   e->entry);
        ck->r->corruptions++;
        return 0;
    }
    qcow2_compressed_range(s, e->entry, &coff, &csize);
    if ((fix & CHECK_FIX_ERRORS) && past_eof(ck, coff, csize)) {
        qck_report(ck, "Repairing compressed cluster at offset 0x%" PRIx64
                   " beyond the end of the file: it now reads as zeroes",
                   coff);
        if (qck_zero_l2_entry(ck, l2_off, i) == -1) {
            ck->r->check_errors++;
            return -1;
        }
        ck->r->corruptions_fixed++;
        return 0;
    }
    if (ref(ck, coff, csize) == -1)
        return -1;
    if (active) {
        ck->r->allocated_clusters++;
        ck->r->compressed_clusters++;
        ck->r->fragmented_clusters++;
    }
    return 0;
}

/* An unaligned host offset; returns 1 if the entry was repaired. */
static int
check_unaligned(struct qck *ck, const struct qcow2_l2e *e, uint64_t l2_off,
                uint32_t i, unsigned fix)
{
    struct qcow2_state *s = ck->s;
    uint64_t off = e->entry & QCOW2_OFFSET_MASK;
    bool data = s->extl2 ? (e->bitmap & QCK_SC_ALLOC_MASK) != 0
                         : !(e->entry & QCOW2_OFLAG_ZERO);

    ck->r->corruptions++;
    if (data) {
        qck_report(ck, "ERROR offset=%" PRIx64 ": Data cluster is not "
                   "properly aligned; L2 entry corrupted.", off);
        return 0;
    }
    qck_report(ck, "%s offset=%" PRIx64 ": Preallocated cluster is not "
               "properly aligned; L2 entry corrupted.",
               fix & CHECK_FIX_ERRORS ? "Repairing" : "ERROR", off);
    if (!(fix & CHECK_FIX_ERRORS))
        return 0;
    if (qck_zero_l2_entry(ck, l2_off, i) == -1) {
        ck->r->check_errors++;
        return 0;
    }
    ck->r->corruptions--;
    ck->r->corruptions_fixed++;
    return 1;
}

static int
check_l2(struct qck *ck, uint64_t l2_off, bool active, unsigned fix)
{
    struct qcow2_state *s = ck->s;
    bool data_file = s->incompat & QCOW2_INCOMPAT_DATA_FILE;
    CLEANUP_FREE uint8_t *tbl = malloc(s->cluster_size);
    uint64_t next = 0;

    if (!tbl) {
        vimg_error(errno, "malloc: %m");
        ck->r->check_errors++;
        return -1;
    }
    if (node_pread(s->node->file, tbl, s->cluster_size, l2_off) == -1) {
        qck_report(ck, "ERROR: I/O error in check_refcounts_l2");
        ck->r->check_errors++;
        return -1;
    }
    for (uint32_t i = 0; i < s->l2_entries; i++) {
        struct qcow2_l2e e;
        enum qck_type t;
        uint64_t off;
        int r;

        qcow2_l2_read_entry(s, tbl, i, &e);
        t = qck_type(s, e.entry);
        if (t != QCK_COMPRESSED && (e.entry & QCK_L2_STD_RESERVED)) {
            qck_report(ck, "ERROR found l2 entry with reserved bits set: %"
                       PRIx64, e.entry);
            ck->r->corruptions++;
        }
        switch (t) {
        case QCK_COMPRESSED:
            if (check_compressed(ck, &e, l2_off, i, active, fix) == -1)
                return -1;
            break;
        case QCK_ZERO_ALLOC:
        case QCK_NORMAL:
            off = e.entry & QCOW2_OFFSET_MASK;
            if ((e.bitmap >> 32) & e.bitmap) {
                ck->r->corruptions++;
                qck_report(ck, "ERROR offset=%" PRIx64 ": overlapping "
                           "cluster allocation bitmaps", off);
            }
            if (!IS_ALIGNED(off, s->cluster_size) &&
                (r = check_unaligned(ck, &e, l2_off, i, fix)) != 0) {
                if (r == -1)
                    return -1;
                continue;
            }
            if (!data_file && (fix & CHECK_FIX_ERRORS) &&
                past_eof(ck, off, s->cluster_size)) {
                qck_report(ck, "Repairing L2 entry %" PRIx64 ": cluster at "
                           "offset 0x%" PRIx64 " is beyond the end of the "
                           "file; it now reads as zeroes", e.entry, off);
                if (qck_zero_l2_entry(ck, l2_off, i) == -1) {
                    ck->r->check_errors++;
                    return -1;
                }
                ck->r->corruptions_fixed++;
                continue;
            }
            if (active) {
                ck->r->allocated_clusters++;
                if (next && off != next)
                    ck->r->fragmented_clusters++;
                next = off + s->cluster_size;
            }
            if (!data_file && ref(ck, off, s->cluster_size) == -1)
                return -1;
            break;
        case QCK_ZERO_PLAIN:
            break;
        case QCK_UNALLOC:
            if (e.bitmap & QCK_SC_ALLOC_MASK) {
                ck->r->corruptions++;
                qck_report(ck, "ERROR: %s cluster %" PRIu32 ": allocation "
                           "bitmap non-zero for unallocated cluster",
                           active ? "active" : "inactive", i);
            }
            break;
        }
    }
    return 0;
}

static int
check_l1(struct qck *ck, uint64_t l1_off, uint32_t l1_size, bool active,
         unsigned fix)
{
    struct qcow2_state *s = ck->s;
    uint64_t bytes = (uint64_t)l1_size * 8;
    CLEANUP_FREE uint64_t *l1 = NULL;

    if (!l1_size)
        return 0;
    if (ref(ck, l1_off, bytes) == -1)
        return -1;
    l1 = malloc(bytes);
    if (!l1) {
        vimg_error(errno, "malloc: %m");
        ck->r->check_errors++;
        return -1;
    }
    if (node_pread(s->node->file, l1, bytes, l1_off) == -1) {
        qck_report(ck, "ERROR: I/O error in check_refcounts_l1");
        ck->r->check_errors++;
        return -1;
    }
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t e = be64toh(l1[i]), l2;

        if (!e)
            continue;
        if (e & QCOW2_L1_RESERVED) {
            qck_report(ck, "ERROR found L1 entry with reserved bits set: %"
                       PRIx64, e);
            ck->r->corruptions++;
        }
        l2 = e & QCOW2_OFFSET_MASK;
        if (ref(ck, l2, s->cluster_size) == -1)
            return -1;
        if (!IS_ALIGNED(l2, s->cluster_size)) {
            qck_report(ck, "ERROR l2_offset=%" PRIx64 ": Table is not "
                       "cluster aligned; L1 entry corrupted", l2);
            ck->r->corruptions++;
        }
        if (check_l2(ck, l2, active, fix) == -1)
            return -1;
    }
    return 0;
}

static int
check_snapshots(struct qck *ck, unsigned fix)
{
    struct qcow2_state *s = ck->s;

    if ((s->incompat & QCOW2_INCOMPAT_DATA_FILE) && s->nb_snapshots) {
        qck_report(ck, "ERROR %" PRIu32 " snapshots in image with data file",
                   s->nb_snapshots);
        ck->r->corruptions++;
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        struct qcow2_snapshot *sn = &s->snapshots[i];

        if (!IS_ALIGNED(sn->l1_offset, s->cluster_size)) {
            qck_report(ck, "ERROR snapshot %s (%s) l1_offset=%#" PRIx64
                       ": L1 table is not cluster aligned; snapshot table "
                       "entry corrupted", sn->id, sn->name, sn->l1_offset);
            ck->r->corruptions++;
            continue;
        }
        if ((uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
            qck_report(ck, "ERROR snapshot %s (%s) l1_size=%#" PRIx32
                       ": L1 table is too large; snapshot table entry "
                       "corrupted", sn->id, sn->name, sn->l1_size);
            ck->r->corruptions++;
            continue;
        }
        if (check_l1(ck, sn->l1_offset, sn->l1_size, false, fix) == -1)
            return -1;
    }
    return ref(ck, s->snapshots_offset, s->nb_snapshots ? s->snapshots_size
                                                        : 0);
}

static bool
bitmap_entry_ok(uint64_t e, uint64_t cluster_size)
{
    uint64_t off = e & QCOW2_OFFSET_MASK;

    if (e & QCK_BME_RESERVED)
        return false;
    return !off || (!(e & 1) && IS_ALIGNED(off, cluster_size));
}

static int
check_bitmaps(struct qck *ck)
{
    struct qcow2_state *s = ck->s;

    if (!s->nb_bitmaps)
        return 0;
    if (ref(ck, s->bitmaps_ext.directory_offset,
            s->bitmaps_ext.directory_size) == -1)
        return -1;
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        struct qcow2_bitmap_info *b = &s->bitmaps[i];
        uint64_t bytes = (uint64_t)b->table_size * 8;
        CLEANUP_FREE uint64_t *t = NULL;

        if (ref(ck, b->table_offset, bytes) == -1)
            return -1;
        if (!bytes)
            continue;
        t = malloc(bytes);
        if (!t || node_pread(s->node->file, t, bytes, b->table_offset) == -1) {
            ck->r->corruptions++;
            return 0;
        }
        for (uint32_t j = 0; j < b->table_size; j++) {
            uint64_t e = be64toh(t[j]), off = e & QCOW2_OFFSET_MASK;
            if (!bitmap_entry_ok(e, s->cluster_size)) {
                ck->r->corruptions++;
                continue;
            }
            if (off && ref(ck, off, s->cluster_size) == -1)
                return -1;
        }
    }
    return 0;
}

/* A refcount block outside the image: extend the file (FIX_ERRORS). */
static int
refblock_outside(struct qck *ck, uint64_t i, uint64_t off, unsigned fix)
{
    struct qcow2_state *s = ck->s;

    ck->r->corruptions++;
    qck_report(ck, "%s refcount block %" PRIu64 " is outside image",
               fix & CHECK_FIX_ERRORS ? "Repairing" : "ERROR", i);
    if (!(fix & CHECK_FIX_ERRORS))
        return 0;
    /* Far past the end, growing the file would only serve a wild
     * pointer (and cost memory): rebuild the refcounts instead. */
    if (off > ck->file_size + CHECK_GROW_MAX) {
        ck->rebuild = true;
        return 0;
    }
    if (qck_extend_file(ck, off + s->cluster_size) == -1 ||
        qck_grow(ck, DIV_ROUND_UP(ck->file_size, s->cluster_size)) == -1) {
        ck->rebuild = true;
        qck_report(ck, "ERROR could not resize image: %s", vimg_get_error());
        return 0;
    }
    ck->r->corruptions--;
    ck->r->corruptions_fixed++;
    return ref(ck, off, s->cluster_size);
}

static int
check_refblocks(struct qck *ck, unsigned fix)
{
    struct qcow2_state *s = ck->s;

    for (uint64_t i = 0; i < s->rt_entries; i++) {
        uint64_t off = s->rt[i] & QCOW2_RT_OFFSET_MASK;
        uint64_t cl = off >> s->cluster_bits;

        if (s->rt[i] & QCK_RT_RESERVED) {
            qck_report(ck, "ERROR refcount table entry %" PRIu64 " has "
                       "reserved bits set", i);
            ck->r->corruptions++;
            ck->rebuild = true;
            continue;
        }
        if (!IS_ALIGNED(off, s->cluster_size)) {
            qck_report(ck, "ERROR refcount block %" PRIu64 " is not "
                       "cluster aligned; refcount table entry corrupted", i);
            ck->r->corruptions++;
            ck->rebuild = true;
            continue;
        }
        if (cl >= ck->nref) {
            if (refblock_outside(ck, i, off, fix) == -1)
                return -1;
            continue;
        }
        if (!off)
            continue;
        if (ref(ck, off, s->cluster_size) == -1)
            return -1;
        if (ck->ref[cl] != 1) {
            qck_report(ck, "ERROR refcount block %" PRIu64 " refcount=%"
                       PRIu32, i, ck->ref[cl]);
            ck->r->corruptions++;
            ck->rebuild = true;
        }
    }
    return 0;
}

int
qck_calculate(struct qck *ck, unsigned fix)
{
    struct qcow2_state *s = ck->s;

    if (ref(ck, 0, s->cluster_size) == -1 ||
        check_l1(ck, s->l1_offset, s->l1_size, true, fix) == -1 ||
        check_snapshots(ck, fix) == -1 ||
        ref(ck, s->rt_offset, s->rt_entries * 8) == -1 ||
        check_bitmaps(ck) == -1)
        return -1;
    return check_refblocks(ck, fix);
}
