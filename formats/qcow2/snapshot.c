/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 internal snapshot table and bitmap directory: parsed at open for
 * info and for the refcount rebuild, never modified here.  Their
 * clusters stay intact because writes copy any cluster whose refcount is
 * above one (the active tables carry no COPIED flag for them).
 * Called only at open, before the node is shared: no lock.
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

static int
check_l1(struct qcow2_state *s, uint64_t file_size, uint64_t off,
         uint32_t size)
{
    if ((uint64_t)size * 8 > QCOW2_MAX_L1_BYTES) {
        vimg_error(EINVAL, "snapshot L1 table is too large");
        return -1;
    }
    if (size && (!IS_ALIGNED(off, s->cluster_size) || off > file_size ||
                 (uint64_t)size * 8 > file_size - off)) {
        vimg_error(EINVAL, "snapshot L1 table offset is invalid");
        return -1;
    }
    return 0;
}

static int
read_one(struct qcow2_state *s, struct node *n, uint64_t *pos,
         struct qcow2_snapshot *sn)
{
    struct qcow2_snapshot_hdr h;
    uint8_t extra[24];
    uint64_t p = *pos, elen;
    uint32_t extra_size;

    if (node_pread(n->file, &h, sizeof h, p) == -1)
        return -1;
    p += sizeof h;
    sn->l1_offset = be64toh(h.l1_table_offset);
    sn->l1_size = be32toh(h.l1_size);
    sn->date_sec = be32toh(h.date_sec);
    sn->date_nsec = be32toh(h.date_nsec);
    sn->vm_clock_nsec = be64toh(h.vm_clock_nsec);
    sn->vm_state_size = be32toh(h.vm_state_size);
    sn->disk_size = UINT64_MAX;
    extra_size = be32toh(h.extra_data_size);
    if (extra_size > 1024) {
        vimg_error(EINVAL, "snapshot extra data is too large");
        return -1;
    }
    memset(extra, 0, sizeof extra);
    if (extra_size &&
        node_pread(n->file, extra, MIN(extra_size, sizeof extra), p) == -1)
        return -1;
    if (extra_size >= 8) {
        uint64_t v;
        memcpy(&v, extra, 8);
        sn->vm_state_size = be64toh(v);
    }
    if (extra_size >= 16) {
        uint64_t v;
        memcpy(&v, extra + 8, 8);
        sn->disk_size = be64toh(v);
    }
    if (extra_size >= 24) {
        uint64_t v;
        memcpy(&v, extra + 16, 8);
        sn->icount = be64toh(v);
        sn->has_icount = true;
    }
    p += extra_size;
    sn->id = calloc(1, be16toh(h.id_str_size) + 1);
    sn->name = calloc(1, be16toh(h.name_size) + 1);
    if (!sn->id || !sn->name) {
        vimg_error(errno, "calloc: %m");
        return -1;
    }
    if (node_pread(n->file, sn->id, be16toh(h.id_str_size), p) == -1)
        return -1;
    p += be16toh(h.id_str_size);
    if (node_pread(n->file, sn->name, be16toh(h.name_size), p) == -1)
        return -1;
    p += be16toh(h.name_size);
    elen = ALIGN_UP(p - *pos, 8);
    *pos += elen;
    return check_l1(s, n->file->size, sn->l1_offset, sn->l1_size);
}

int
qcow2_snapshots_read(struct node *n, struct qcow2_state *s)
{
    uint64_t pos = s->snapshots_offset;

    if (s->nb_snapshots == 0)
        return 0;
    s->snapshots = calloc(s->nb_snapshots, sizeof *s->snapshots);
    if (!s->snapshots) {
        vimg_error(errno, "calloc: %m");
        return -1;
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (pos - s->snapshots_offset + sizeof(struct qcow2_snapshot_hdr) >
                QCOW2_MAX_SNAPSHOT_TABLE ||
            pos + sizeof(struct qcow2_snapshot_hdr) > n->file->size) {
            vimg_error(EINVAL, "snapshot table is too large");
            return -1;
        }
        if (read_one(s, n, &pos, &s->snapshots[i]) == -1)
            return -1;
    }
    s->snapshots_size = pos - s->snapshots_offset;
    return 0;
}

void
qcow2_snapshots_free(struct qcow2_state *s)
{
    for (uint32_t i = 0; s->snapshots && i < s->nb_snapshots; i++) {
        free(s->snapshots[i].id);
        free(s->snapshots[i].name);
    }
    free(s->snapshots);
    s->snapshots = NULL;
}

static int
parse_bitmap(struct qcow2_state *s, const uint8_t *dir, uint64_t size,
             uint64_t *pos, struct qcow2_bitmap_info *b)
{
    struct qcow2_bitmap_dir_entry e;
    uint64_t len;

    if (size - *pos < sizeof e) {
        vimg_error(EINVAL, "bitmap directory truncated");
        return -1;
    }
    memcpy(&e, dir + *pos, sizeof e);
    e.name_size = be16toh(e.name_size);
    e.extra_data_size = be32toh(e.extra_data_size);
    len = ALIGN_UP(sizeof e + (uint64_t)e.extra_data_size + e.name_size, 8);
    if (e.name_size == 0 || e.name_size > 1023 || len > size - *pos) {
        vimg_error(EINVAL, "bitmap directory entry is invalid");
        return -1;
    }
    if (e.granularity_bits < 9 || e.granularity_bits > 31) {
        vimg_error(EINVAL, "bitmap granularity is invalid");
        return -1;
    }
    b->name = strndup((const char *)dir + *pos + sizeof e +
                          e.extra_data_size,
                      e.name_size);
    if (!b->name) {
        vimg_error(errno, "strndup: %m");
        return -1;
    }
    b->granularity = 1u << e.granularity_bits;
    b->flags = be32toh(e.flags);
    b->table_offset = be64toh(e.bitmap_table_offset);
    b->table_size = be32toh(e.bitmap_table_size);
    if (!IS_ALIGNED(b->table_offset, s->cluster_size) ||
        b->table_size > 0x8000000) {
        vimg_error(EINVAL, "bitmap table is invalid");
        return -1;
    }
    *pos += len;
    return 0;
}

int
qcow2_bitmaps_read(struct node *n, struct qcow2_state *s)
{
    uint64_t size = s->bitmaps_ext.directory_size, pos = 0;
    CLEANUP_FREE uint8_t *dir = NULL;

    /* Without autoclear bit 0 the extension is stale: ignore it. */
    if (!s->has_bitmaps_ext || !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
        return 0;
    dir = malloc(size ? size : 1);
    s->bitmaps = calloc(s->bitmaps_ext.nb_bitmaps, sizeof *s->bitmaps);
    if (!dir || !s->bitmaps) {
        vimg_error(errno, "malloc: %m");
        return -1;
    }
    if (node_pread(n->file, dir, size, s->bitmaps_ext.directory_offset) ==
        -1)
        return -1;
    for (uint32_t i = 0; i < s->bitmaps_ext.nb_bitmaps; i++) {
        s->nb_bitmaps = i + 1;
        if (parse_bitmap(s, dir, size, &pos, &s->bitmaps[i]) == -1)
            return -1;
    }
    return 0;
}

int
qcow2_bitmaps_mark_in_use_locked(struct qcow2_state *s)
{
    uint64_t size = s->bitmaps_ext.directory_size;
    struct node *file = s->node->file;
    CLEANUP_FREE uint8_t *dir = NULL;
    bool changed = false;
    uint64_t pos = 0;

    if (!s->nb_bitmaps)
        return 0;
    dir = malloc(size);
    if (!dir) {
        vimg_error(errno, "malloc: %m");
        return -1;
    }
    if (node_pread(file, dir, size, s->bitmaps_ext.directory_offset) == -1)
        return -1;
    /* The directory was validated at open, so the walk stays inside. */
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        struct qcow2_bitmap_dir_entry d;

        memcpy(&d, dir + pos, sizeof d);
        if (!(be32toh(d.flags) & QCOW2_BME_IN_USE)) {
            d.flags = htobe32(be32toh(d.flags) | QCOW2_BME_IN_USE);
            memcpy(dir + pos, &d, sizeof d);
            changed = true;
        }
        s->bitmaps[i].flags |= QCOW2_BME_IN_USE;
        pos += ALIGN_UP(sizeof d + be32toh(d.extra_data_size) +
                            be16toh(d.name_size), 8);
    }
    if (!changed)
        return 0;
    if (node_pwrite(file, dir, size, s->bitmaps_ext.directory_offset, 0) ==
            -1 ||
        node_flush(file) == -1)
        return -1;
    return 0;
}

void
qcow2_bitmaps_free(struct qcow2_state *s)
{
    for (uint32_t i = 0; s->bitmaps && i < s->nb_bitmaps; i++)
        free(s->bitmaps[i].name);
    free(s->bitmaps);
    s->bitmaps = NULL;
    s->nb_bitmaps = 0;
}
