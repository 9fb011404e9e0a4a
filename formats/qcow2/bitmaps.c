/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 persistent dirty bitmaps, reading side: the bitmap directory
 * (parsed at open into s->bitmaps), going live before the first write,
 * and loading a bitmap's table and content.  The actions that change
 * bitmaps, and storing them at close, are in bitmap-ops.c.
 *
 * Going live: before the first write the content of every consistent
 * bitmap is loaded into memory (b->live), the enabled ones are tracked by
 * the node (lib/dirty.c marks them on every write), and in_use is set on
 * every bitmap on disk.  A clean close stores them and clears in_use; a
 * crash leaves them in_use, i.e. inconsistent, as QEMU does.  Opening
 * read-write alone changes nothing: a command that never writes data
 * leaves the bitmaps consistent whatever happens to it.
 *
 * Locking: s->bitmaps is protected by s->lock after open; the live copies
 * by the node's dirty_lock as well (taken after s->lock).
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
#include "dirty.h"
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

/* Rewrite the directory in place with in_use set on every entry, and
 * flush.  The entries' other fields do not change. */
static int
write_all_in_use(struct qcow2_state *s)
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

int
qcow2_bitmaps_go_live_locked(struct qcow2_state *s)
{
    struct node *n = s->node;
    int r = 0;

    if (s->bitmaps_live)
        return 0;
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        struct qcow2_bitmap_info *b = &s->bitmaps[i];

        if ((b->flags & QCOW2_BME_IN_USE) || b->type != 1)
            continue;
        b->live = qcow2_bitmap_load(s, b);
        /* Unreadable content: from now on it is inconsistent. */
        if (!b->live)
            b->flags |= QCOW2_BME_IN_USE;
    }
    dirty_lock(n);
    for (uint32_t i = 0; i < s->nb_bitmaps && r == 0; i++)
        if (s->bitmaps[i].live && (s->bitmaps[i].flags & QCOW2_BME_AUTO))
            r = dirty_track_locked(n, s->bitmaps[i].live);
    s->bitmaps_live = r == 0;
    if (r == 0 && write_all_in_use(s) == -1) {
        s->bitmaps_live = false;
        r = -1;
    }
    if (r == -1)
        qcow2_bitmaps_drop_live_dirty_locked(s);
    dirty_unlock(n);
    return r;
}

void
qcow2_bitmaps_drop_live_dirty_locked(struct qcow2_state *s)
{
    for (uint32_t i = 0; s->bitmaps && i < s->nb_bitmaps; i++) {
        struct qcow2_bitmap_info *b = &s->bitmaps[i];

        if (!b->live)
            continue;
        dirty_untrack_locked(s->node, b->live);
        bitmap_free(b->live);
        b->live = NULL;
    }
}

int
qcow2_bitmaps_resize_locked(struct qcow2_state *s, uint64_t size)
{
    int r = 0;

    dirty_lock(s->node);
    for (uint32_t i = 0; i < s->nb_bitmaps && r == 0; i++)
        if (s->bitmaps[i].live)
            r = bitmap_resize(s->bitmaps[i].live, size);
    dirty_unlock(s->node);
    return r;
}

int
qcow2_bitmaps_check_consistent_locked(struct qcow2_state *s)
{
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        if (s->bitmaps[i].flags & QCOW2_BME_IN_USE) {
            vimg_error(EBUSY, "Bitmap '%s' is inconsistent and cannot be "
                       "used\nTry block-dirty-bitmap-remove to delete "
                       "this bitmap from disk", s->bitmaps[i].name);
            return -1;
        }
    }
    return 0;
}

void
qcow2_bitmap_info_free(struct qcow2_bitmap_info *b)
{
    free(b->name);
    free(b->extra);
}

void
qcow2_bitmaps_free_entries(struct qcow2_state *s)
{
    for (uint32_t i = 0; s->bitmaps && i < s->nb_bitmaps; i++)
        qcow2_bitmap_info_free(&s->bitmaps[i]);
    free(s->bitmaps);
    s->bitmaps = NULL;
    s->nb_bitmaps = 0;
}

void
qcow2_bitmaps_free(struct qcow2_state *s)
{
    if (s->bitmaps) {
        dirty_lock(s->node);
        qcow2_bitmaps_drop_live_dirty_locked(s);
        dirty_unlock(s->node);
    }
    qcow2_bitmaps_free_entries(s);
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

struct bitmap *
qcow2_bitmap_live_copy(struct qcow2_state *s,
                       const struct qcow2_bitmap_info *b)
{
    struct bitmap *bm;

    if (!b->live)
        return qcow2_bitmap_load(s, b);
    dirty_lock(s->node);
    bm = bitmap_copy(b->live);
    dirty_unlock(s->node);
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
        return qcow2_bitmap_live_copy(s, b);
    }
    vimg_error(ENOENT, "Dirty bitmap '%s' not found", name);
    return NULL;
}

/* The bitmap_live callback: the bitmaps go live as before a first write
 * (in_use set on disk), then FN runs on NAME's live copy under the
 * node's dirty_lock (lock order: s->lock, then dirty_lock). */
int
qcow2_bitmap_live(struct node *n, const char *name,
                  int (*fn)(struct bitmap *bm, void *opaque), void *opaque)
{
    struct qcow2_state *s = n->state;
    int r;

    LOCK_GUARD(&s->lock);
    if (qcow2_before_write_locked(s) == -1)
        return -1;
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        struct qcow2_bitmap_info *b = &s->bitmaps[i];

        if (strcmp(b->name, name))
            continue;
        if (!b->live) {
            vimg_error(EINVAL,
                       "Bitmap '%s' is inconsistent and cannot be used",
                       name);
            return -1;
        }
        dirty_lock(n);
        r = fn(b->live, opaque);
        dirty_unlock(n);
        return r;
    }
    vimg_error(ENOENT, "Dirty bitmap '%s' not found", name);
    return -1;
}
