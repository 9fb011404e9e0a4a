/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 persistent dirty bitmaps, reading side: the bitmap directory
 * (parsed at open into s->bitmaps), the in_use marking before the first
 * write, and loading a bitmap's table and content.  The actions that
 * change bitmaps are in bitmap-ops.c.
 *
 * Locking: s->bitmaps is protected by s->lock after open.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "io.h"
#include "qcow2.h"


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
    if (e.name_size == 0 || e.name_size > QCOW2_MAX_BITMAP_NAME || len > size - *pos) {
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
    b->extra_size = e.extra_data_size;
    b->extra = malloc(e.extra_data_size ? e.extra_data_size : 1);
    if (!b->name || !b->extra) {
        vimg_error(errno, "malloc: %m");
        return -1;
    }
    memcpy(b->extra, dir + *pos + sizeof e, e.extra_data_size);
    b->type = e.type;
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
qcow2_bitmap_info_free(struct qcow2_bitmap_info *b)
{
    free(b->name);
    free(b->extra);
}

void
qcow2_bitmaps_free(struct qcow2_state *s)
{
    for (uint32_t i = 0; s->bitmaps && i < s->nb_bitmaps; i++)
        qcow2_bitmap_info_free(&s->bitmaps[i]);
    free(s->bitmaps);
    s->bitmaps = NULL;
    s->nb_bitmaps = 0;
}

/* ---- Bitmap data ---- */

/* Read the table of B (host order, TABLE_SIZE entries); caller frees. */
uint64_t *
qcow2_bitmap_read_table(struct qcow2_state *s, const struct qcow2_bitmap_info *b)
{
    uint64_t *t = calloc(b->table_size ? b->table_size : 1, 8);

    if (!t) {
        vimg_error(errno, "calloc: %m");
        return NULL;
    }
    if (b->table_size &&
        node_pread(s->node->file, t, (uint64_t)b->table_size * 8,
                   b->table_offset) == -1) {
        free(t);
        return NULL;
    }
    for (uint32_t i = 0; i < b->table_size; i++) {
        t[i] = be64toh(t[i]);
        if ((t[i] & ~(QCOW2_OFFSET_MASK | 1)) ||
            ((t[i] & QCOW2_OFFSET_MASK) && (t[i] & 1))) {
            vimg_error(EINVAL, "bitmap '%s': invalid table entry",
                       b->name);
            free(t);
            return NULL;
        }
    }
    return t;
}

/* Load the content of on-disk bitmap B of S; caller frees. */
struct bitmap *
qcow2_bitmap_load(struct qcow2_state *s, const struct qcow2_bitmap_info *b)
{
    uint64_t cs = s->cluster_size, ser;
    CLEANUP_FREE uint64_t *t = NULL;
    CLEANUP_FREE uint8_t *buf = malloc(cs);
    struct bitmap *bm = bitmap_new(s->node->size, b->granularity);

    if (!bm)
        return NULL;
    ser = bitmap_serial_size(bm);
    if (!buf) {
        vimg_error(ENOMEM, "malloc: %m");
        bitmap_free(bm);
        return NULL;
    }
    if (b->table_size != DIV_ROUND_UP(ser, cs)) {
        vimg_error(EINVAL, "bitmap '%s': table size is invalid", b->name);
        bitmap_free(bm);
        return NULL;
    }
    t = qcow2_bitmap_read_table(s, b);
    if (!t) {
        bitmap_free(bm);
        return NULL;
    }
    for (uint32_t i = 0; i < b->table_size; i++) {
        uint64_t first = (uint64_t)i * cs, len = MIN(cs, ser - first);
        uint64_t off = t[i] & QCOW2_OFFSET_MASK;
        if (off) {
            if (node_pread(s->node->file, buf, len, off) == -1 ||
                bitmap_deserialise(bm, buf, first, len) == -1) {
                bitmap_free(bm);
                return NULL;
            }
        } else if (t[i] & 1) {
            uint64_t g = b->granularity;
            bitmap_set(bm, first * 8 * g, len * 8 * g);
        }
    }
    return bm;
}

/* The bitmap_get callback.  An in-use bitmap no longer describes the
 * image (a crash left it so): refuse it, as QEMU does. */
struct bitmap *
qcow2_bitmap_get(struct node *n, const char *name)
{
    struct qcow2_state *s = n->state;

    LOCK_GUARD(&s->lock);
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        const struct qcow2_bitmap_info *b = &s->bitmaps[i];

        if (strcmp(b->name, name))
            continue;
        if (b->flags & QCOW2_BME_IN_USE) {
            vimg_error(EINVAL,
                       "Bitmap '%s' is inconsistent and cannot be used",
                       name);
            return NULL;
        }
        if (b->type != 1) {
            vimg_error(EINVAL, "Bitmap '%s' has an unknown type", name);
            return NULL;
        }
        return qcow2_bitmap_load(s, b);
    }
    vimg_error(ENOENT, "Dirty bitmap '%s' not found", name);
    return NULL;
}
