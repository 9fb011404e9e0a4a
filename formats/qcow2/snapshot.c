/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 internal snapshot table: parsed at open for info and for the
 * refcount rebuild, never modified here (bitmaps.c owns the bitmap
 * directory).  Its
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
