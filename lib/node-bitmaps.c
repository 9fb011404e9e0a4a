/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A node's dirty bitmaps (see node-bitmaps.h).  In-memory bitmaps are a
 * list on the node, protected, with their content, by n->dirty_lock;
 * enabled ones are registered with the node's write tracking.  Names
 * are looked up there first, then in the format's persistent bitmaps
 * (driver bitmap_get / bitmap_live / bitmap_op).
 */
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "checked.h"
#include "dirty.h"
#include "error.h"
#include "node-bitmaps.h"

struct mem_bitmap {
    char *name;
    struct bitmap *bm;
    bool recording;
    struct mem_bitmap *next;
};

/* By dirty_lock. */
static struct mem_bitmap *
find_locked(struct node *n, const char *name)
{
    for (struct mem_bitmap *m = n->mem_bitmaps; m; m = m->next)
        if (!strcmp(m->name, name))
            return m;
    return NULL;
}

static bool
persistent_exists(struct node *n, const char *name)
{
    struct bitmap *bm;

    if (!n->drv->bitmap_get)
        return false;
    bm = n->drv->bitmap_get(n, name);
    if (bm) {
        bitmap_free(bm);
        return true;
    }
    return errno != ENOENT; /* an inconsistent one exists too */
}

static uint32_t
default_granularity(struct node *n)
{
    json_t *info = node_info_json(n);
    json_int_t cs = json_integer_value(json_object_get(info,
                                                       "cluster-size"));

    json_decref(info);
    if (cs <= 0)
        return 65536;
    return cs < 4096 ? 4096 : cs > 65536 ? 65536 : (uint32_t)cs;
}

int
node_bitmap_add(struct node *n, const char *name, uint32_t granularity,
                bool persistent, bool disabled)
{
    struct mem_bitmap *m;
    bool dup;

    dirty_lock(n);
    dup = find_locked(n, name) != NULL;
    dirty_unlock(n);
    if (dup || persistent_exists(n, name)) {
        vimg_error(EEXIST, "Bitmap already exists: %s", name);
        return -1;
    }
    if (persistent) {
        struct bitmap_action a = { .op = BITMAP_OP_ADD, .name = name,
                                   .granularity = granularity,
                                   .disabled = disabled };

        if (!n->drv->bitmap_op) {
            vimg_error(ENOTSUP, "Cannot store dirty bitmaps in %s format "
                                "nodes", n->drv->name);
            return -1;
        }
        return n->drv->bitmap_op(n, &a);
    }
    if (strlen(name) >= 1024) {
        vimg_error(EINVAL, "Bitmap name is too long");
        return -1;
    }
    m = calloc(1, sizeof *m);
    if (!m || !(m->name = strdup(name)) ||
        !(m->bm = bitmap_new(n->size ? n->size : 1,
                             granularity ? granularity
                                         : default_granularity(n)))) {
        if (m)
            free(m->name);
        free(m);
        return -1;
    }
    m->recording = !disabled;
    dirty_lock(n);
    if (m->recording && dirty_track_locked(n, m->bm) == -1) {
        dirty_unlock(n);
        bitmap_free(m->bm);
        free(m->name);
        free(m);
        return -1;
    }
    m->next = n->mem_bitmaps;
    n->mem_bitmaps = m;
    dirty_unlock(n);
    return 0;
}

/* DST |= SRC, whatever their granularities (QEMU merges across them). */
static int
merge_any(struct bitmap *dst, const struct bitmap *src)
{
    uint64_t off = 0, len = bitmap_size(src);

    if (bitmap_granularity(dst) == bitmap_granularity(src) &&
        bitmap_size(dst) == bitmap_size(src))
        return bitmap_merge(dst, src);
    while (off < bitmap_size(dst) &&
           bitmap_next_dirty_area(src, &off, &len, 0)) {
        bitmap_set(dst, off, MIN(len, bitmap_size(dst) - off));
        off += len;
        len = bitmap_size(src) - off;
    }
    return 0;
}

/* MERGE into the in-memory bitmap M: the source's content first (it may
 * take the source node's own locks), then OR it in. */
static int
merge_into(struct node *n, struct mem_bitmap *m, const struct bitmap_action *a)
{
    struct node *sn = a->src ? a->src : n;
    struct bitmap *src = node_bitmap_copy(sn, a->src_name);
    int r;

    if (!src)
        return -1;
    dirty_lock(n);
    r = merge_any(m->bm, src);
    dirty_unlock(n);
    bitmap_free(src);
    return r;
}

static int
copy_in(struct bitmap *bm, void *opaque)
{
    return merge_any(bm, opaque);
}

int
node_bitmap_action(struct node *n, const struct bitmap_action *a)
{
    struct bitmap_action one = *a;
    struct mem_bitmap *m, **pp;
    int r = 0;

    one.next = NULL;
    dirty_lock(n);
    m = find_locked(n, a->name);
    if (!m) {
        dirty_unlock(n);
        /* A persistent target; an in-memory merge source is copied in. */
        if (a->op == BITMAP_OP_MERGE) {
            struct node *sn = a->src ? a->src : n;
            struct mem_bitmap *sm;
            struct bitmap *src = NULL;

            dirty_lock(sn);
            sm = find_locked(sn, a->src_name);
            if (sm)
                src = bitmap_copy(sm->bm);
            dirty_unlock(sn);
            if (sm) {
                if (!src)
                    return -1;
                r = node_bitmap_with(n, a->name, copy_in, src);
                bitmap_free(src);
                return r;
            }
        }
        if (!n->drv->bitmap_op) {
            vimg_error(ENOENT, "Dirty bitmap '%s' not found", a->name);
            return -1;
        }
        return n->drv->bitmap_op(n, &one);
    }
    switch (a->op) {
    case BITMAP_OP_ADD:
        vimg_error(EEXIST, "Bitmap already exists: %s", a->name);
        r = -1;
        break;
    case BITMAP_OP_REMOVE:
        dirty_untrack_locked(n, m->bm);
        for (pp = &n->mem_bitmaps; *pp != m; pp = &(*pp)->next)
            ;
        *pp = m->next;
        bitmap_free(m->bm);
        free(m->name);
        free(m);
        break;
    case BITMAP_OP_CLEAR:
        bitmap_clear(m->bm);
        break;
    case BITMAP_OP_ENABLE:
        r = dirty_track_locked(n, m->bm);
        m->recording = r == 0;
        break;
    case BITMAP_OP_DISABLE:
        dirty_untrack_locked(n, m->bm);
        m->recording = false;
        break;
    case BITMAP_OP_MERGE:
        dirty_unlock(n);
        return merge_into(n, m, a);
    }
    dirty_unlock(n);
    return r;
}

int
node_bitmap_with(struct node *n, const char *name,
                 int (*fn)(struct bitmap *bm, void *opaque), void *opaque)
{
    struct mem_bitmap *m;
    int r;

    dirty_lock(n);
    m = find_locked(n, name);
    if (m) {
        r = fn(m->bm, opaque);
        dirty_unlock(n);
        return r;
    }
    dirty_unlock(n);
    if (!n->drv->bitmap_live) {
        vimg_error(ENOENT, "Dirty bitmap '%s' not found", name);
        return -1;
    }
    return n->drv->bitmap_live(n, name, fn, opaque);
}

struct bitmap *
node_bitmap_copy(struct node *n, const char *name)
{
    struct mem_bitmap *m;
    struct bitmap *bm = NULL;

    dirty_lock(n);
    m = find_locked(n, name);
    if (m && !(bm = bitmap_copy(m->bm)))
        vimg_error(ENOMEM, "out of memory");
    dirty_unlock(n);
    if (m)
        return bm;
    if (!n->drv->bitmap_get) {
        vimg_error(ENOENT, "Dirty bitmap '%s' not found", name);
        return NULL;
    }
    return n->drv->bitmap_get(n, name);
}

bool
node_bitmap_recording(struct node *n, const char *name)
{
    json_t *info, *bms, *b, *f;
    struct mem_bitmap *m;
    bool rec = false;
    size_t i, k;

    dirty_lock(n);
    m = find_locked(n, name);
    if (m)
        rec = m->recording;
    dirty_unlock(n);
    if (m || !n->drv->info)
        return rec;
    info = node_info_json(n);
    bms = json_object_get(json_object_get(json_object_get(info,
                                                          "format-specific"),
                                          "data"),
                          "bitmaps");
    json_array_foreach(bms, i, b) {
        if (strcmp(json_string_value(json_object_get(b, "name")) ?: "",
                   name))
            continue;
        json_array_foreach(json_object_get(b, "flags"), k, f)
            rec |= !strcmp(json_string_value(f) ?: "", "auto");
    }
    json_decref(info);
    return rec;
}

json_t *
node_mem_bitmaps_json(struct node *n)
{
    json_t *a = json_array();

    dirty_lock(n);
    for (struct mem_bitmap *m = n->mem_bitmaps; a && m; m = m->next)
        json_array_append_new(
            a, json_pack("{s:s,s:b,s:b,s:b,s:I,s:I}", "name", m->name,
                         "recording", m->recording, "persistent", false,
                         "busy", false, "granularity",
                         (json_int_t)bitmap_granularity(m->bm), "count",
                         (json_int_t)bitmap_count(m->bm)));
    dirty_unlock(n);
    return a;
}

void
node_mem_bitmaps_free(struct node *n)
{
    while (n->mem_bitmaps) {
        struct mem_bitmap *m = n->mem_bitmaps;

        n->mem_bitmaps = m->next;
        bitmap_free(m->bm);
        free(m->name);
        free(m);
    }
}
