/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 refcount rebuild (check-lite): used on a read-write open of an
 * image whose dirty bit is set (lazy refcounts after a crash).
 *
 * Every reference is counted by walking the header, the active and the
 * snapshot L1/L2 tables, the snapshot table and the bitmap directory and
 * tables.  A complete new refcount structure is then written past the
 * end of the file, synced, and the header switched to it in one write;
 * the old structure simply becomes free space.  Only then is the dirty
 * bit cleared.  Runs at open with s->lock held.
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

#define MAX_COUNTED_CLUSTERS (1ull << 30)

struct counts {
    uint32_t *c;
    uint64_t n;
};

/* Count one reference to every cluster in [off, off+len). */
static int
ref(struct qcow2_state *s, struct counts *k, uint64_t off, uint64_t len)
{
    uint64_t first = off >> s->cluster_bits, last;

    if (len == 0)
        return 0;
    last = (off + len - 1) >> s->cluster_bits;
    if (last >= k->n) {
        vimg_error(EIO, "reference to offset 0x%" PRIx64
                   " beyond end of file", off);
        return -1;
    }
    for (uint64_t c = first; c <= last; c++)
        if (k->c[c] < UINT32_MAX)
            k->c[c]++;
    return 0;
}

static int
count_l2(struct qcow2_state *s, struct counts *k, const uint8_t *tbl)
{
    for (uint32_t i = 0; i < s->l2_entries; i++) {
        struct qcow2_l2e e;
        qcow2_l2_read_entry(s, tbl, i, &e);
        if (e.entry & QCOW2_OFLAG_COMPRESSED) {
            uint64_t off, len;
            qcow2_compressed_range(s, e.entry, &off, &len);
            if (ref(s, k, off, len) == -1)
                return -1;
        } else if (!s->data_file_name && (e.entry & QCOW2_OFFSET_MASK)) {
            if (ref(s, k, e.entry & QCOW2_OFFSET_MASK, s->cluster_size) ==
                -1)
                return -1;
        }
    }
    return 0;
}

/* Count an L1 table (L1 given in host order) and everything below it. */
static int
count_l1(struct qcow2_state *s, struct counts *k, uint64_t l1_off,
         const uint64_t *l1, uint32_t l1_size)
{
    CLEANUP_FREE uint8_t *tbl = malloc(s->cluster_size);

    if (!tbl) {
        vimg_error(errno, "malloc: %m");
        return -1;
    }
    if (l1_size && ref(s, k, l1_off, (uint64_t)l1_size * 8) == -1)
        return -1;
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t l2 = l1[i] & QCOW2_OFFSET_MASK;
        if (!l2)
            continue;
        if (!IS_ALIGNED(l2, s->cluster_size)) {
            vimg_error(EIO, "L2 table offset 0x%" PRIx64 " unaligned", l2);
            return -1;
        }
        if (ref(s, k, l2, s->cluster_size) == -1 ||
            node_pread(s->node->file, tbl, s->cluster_size, l2) == -1 ||
            count_l2(s, k, tbl) == -1)
            return -1;
    }
    return 0;
}

static int
count_snapshots(struct qcow2_state *s, struct counts *k)
{
    if (!s->nb_snapshots)
        return 0;
    if (ref(s, k, s->snapshots_offset, s->snapshots_size) == -1)
        return -1;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        struct qcow2_snapshot *sn = &s->snapshots[i];
        CLEANUP_FREE uint64_t *l1 = calloc(sn->l1_size + 1, 8);
        if (!l1) {
            vimg_error(errno, "calloc: %m");
            return -1;
        }
        if (sn->l1_size &&
            node_pread(s->node->file, l1, (uint64_t)sn->l1_size * 8,
                       sn->l1_offset) == -1)
            return -1;
        for (uint32_t j = 0; j < sn->l1_size; j++)
            l1[j] = be64toh(l1[j]);
        if (count_l1(s, k, sn->l1_offset, l1, sn->l1_size) == -1)
            return -1;
    }
    return 0;
}

static int
count_bitmaps(struct qcow2_state *s, struct counts *k)
{
    if (!s->nb_bitmaps)
        return 0;
    if (ref(s, k, s->bitmaps_ext.directory_offset,
            s->bitmaps_ext.directory_size) == -1)
        return -1;
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        struct qcow2_bitmap_info *b = &s->bitmaps[i];
        uint64_t bytes = (uint64_t)b->table_size * 8;
        CLEANUP_FREE uint64_t *t = malloc(bytes ? bytes : 8);
        if (!t) {
            vimg_error(errno, "malloc: %m");
            return -1;
        }
        if (!bytes)
            continue;
        if (ref(s, k, b->table_offset, bytes) == -1 ||
            node_pread(s->node->file, t, bytes, b->table_offset) == -1)
            return -1;
        for (uint32_t j = 0; j < b->table_size; j++) {
            uint64_t off = be64toh(t[j]) & QCOW2_OFFSET_MASK;
            if (off && ref(s, k, off, s->cluster_size) == -1)
                return -1;
        }
    }
    return 0;
}

int
qcow2_rebuild_refcounts_locked(struct qcow2_state *s)
{
    struct counts k;
    uint64_t nb, nt, entries, start;
    CLEANUP_FREE uint64_t *tbl = NULL;
    int r = -1;

    k.n = DIV_ROUND_UP(s->node->file->size, s->cluster_size);
    if (k.n > MAX_COUNTED_CLUSTERS) {
        vimg_error(EFBIG, "image file too large to rebuild refcounts");
        return -1;
    }
    k.c = calloc(k.n + 1, sizeof *k.c);
    if (!k.c) {
        vimg_error(errno, "calloc: %m");
        return -1;
    }
    if (ref(s, &k, 0, s->cluster_size) == -1 ||
        count_l1(s, &k, s->l1_offset, s->l1, s->l1_size) == -1 ||
        count_snapshots(s, &k) == -1 || count_bitmaps(s, &k) == -1)
        goto out;
    start = k.n;
    if (qcow2_size_new_structure(s, start, 0, 1, &nb, &nt, &entries) == -1)
        goto out;
    tbl = calloc(entries, 8);
    if (!tbl) {
        vimg_error(errno, "calloc: %m");
        goto out;
    }
    if (qcow2_write_new_structure_locked(s, start, nb, nt, 0, tbl, entries,
                                         k.c, k.n) == -1 ||
        qcow2_switch_rt_locked(s, (start + nb) << s->cluster_bits, nt) == -1)
        goto out;
    free(s->rt);
    s->rt = TAKE_PTR(tbl);
    s->rt_entries = entries;
    s->rt_offset = (start + nb) << s->cluster_bits;
    s->rt_clusters = nt;
    s->rt_dirty = false;
    qcow2_cache_drop(&s->rb_cache);
    s->free_hint = 1;
    if (qcow2_header_update_u64_locked(s, QCOW2_HDR_INCOMPAT,
                                       s->incompat & ~QCOW2_INCOMPAT_DIRTY) ==
        -1)
        goto out;
    s->incompat &= ~QCOW2_INCOMPAT_DIRTY;
    r = 0;
out:
    free(k.c);
    return r;
}
