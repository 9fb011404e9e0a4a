/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Exports: a node served under a name, with the dirty bitmaps it offers
 * as qemu:dirty-bitmap:NAME.  A bitmap is looked up in the node and then
 * down its backing chain (as qemu-nbd does).  The export holds its own
 * copy of each bitmap: on a writable export whose node records the
 * bitmap, the copy is registered with the node's write tracking
 * (lib/dirty.c) so that clients see their own writes; otherwise the copy
 * is frozen, which is exact because nothing else can change it.
 *
 * The export list is built before the server accepts clients and torn
 * down after the last one is gone, so readers need no lock.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bitmap.h"
#include "dirty.h"
#include "io.h"
#include "server.h"

struct export *
export_find(struct server *srv, const char *name)
{
    for (size_t i = 0; i < srv->nr_exports; i++)
        if (!strcmp(srv->exports[i]->name, name))
            return srv->exports[i];
    return NULL;
}

/* Is bitmap NAME of N recording writes (qcow2's "auto" flag)? */
static bool
bitmap_recording(struct node *n, const char *name)
{
    json_t *info = json_object(), *bms, *b;
    bool rec = false;
    size_t i;

    if (!info || !n->drv->info || n->drv->info(n, info) == -1)
        goto out;
    bms = json_object_get(json_object_get(json_object_get(info,
                                                          "format-specific"),
                                          "data"),
                          "bitmaps");
    json_array_foreach(bms, i, b) {
        json_t *f;
        size_t j;

        if (strcmp(json_string_value(json_object_get(b, "name")) ?: "", name))
            continue;
        json_array_foreach(json_object_get(b, "flags"), j, f)
            rec |= !strcmp(json_string_value(f) ?: "", "auto");
    }
out:
    json_decref(info);
    return rec;
}

static int
attach_bitmap(struct export *e, const char *name)
{
    struct export_bitmap *eb = &e->bitmaps[e->nr_bitmaps];

    if (e->nr_bitmaps == EXPORT_MAX_BITMAPS) {
        fprintf(stderr, "vimg-nbd: too many bitmaps (at most %d)\n",
                EXPORT_MAX_BITMAPS);
        return -1;
    }
    for (struct node *m = e->node; m; m = m->backing) {
        struct bitmap *bm;

        if (!m->drv->bitmap_get)
            continue;
        bm = m->drv->bitmap_get(m, name);
        if (!bm && errno == ENOENT)
            continue;
        if (!bm) {
            fprintf(stderr, "vimg-nbd: %s\n", vimg_get_error());
            return -1;
        }
        /* qemu: a read-only export's copy would go stale while another
         * user writes the node. */
        if (!e->writable && (m->flags & NODE_RDWR) &&
            bitmap_recording(m, name)) {
            bitmap_free(bm);
            fprintf(stderr,
                    "vimg-nbd: Enabled bitmap '%s' incompatible with "
                    "readonly export\n", name);
            return -1;
        }
        eb->name = strdup(name);
        eb->bm = bm;
        if (!eb->name) {
            bitmap_free(bm);
            fprintf(stderr, "vimg-nbd: out of memory\n");
            return -1;
        }
        if (e->writable && m == e->node && bitmap_recording(m, name)) {
            dirty_lock(m);
            if (dirty_track_locked(m, bm) == 0)
                eb->owner = m;
            dirty_unlock(m);
            if (!eb->owner) {
                fprintf(stderr, "vimg-nbd: %s\n", vimg_get_error());
                free(eb->name);
                bitmap_free(bm);
                return -1;
            }
        }
        e->nr_bitmaps++;
        return 0;
    }
    fprintf(stderr, "vimg-nbd: Bitmap '%s' is not found\n", name);
    return -1;
}

static int
export_free(struct export *e)
{
    int r = 0;

    for (unsigned i = 0; i < e->nr_bitmaps; i++) {
        struct export_bitmap *eb = &e->bitmaps[i];

        if (eb->owner) {
            dirty_lock(eb->owner);
            dirty_untrack_locked(eb->owner, eb->bm);
            dirty_unlock(eb->owner);
        }
        bitmap_free(eb->bm);
        free(eb->name);
    }
    if (e->node) {
        if (e->writable && node_flush(e->node) == -1)
            r = -1;
        if (node_unref(e->node) == -1)
            r = -1;
        if (r == -1)
            fprintf(stderr, "vimg-nbd: %s: %s\n", e->name, vimg_get_error());
    }
    free(e->id);
    free(e->name);
    free(e->description);
    free(e);
    return r;
}

int
export_add(struct server *srv, const char *id, const char *name,
           const char *description, struct node *node, bool writable,
           bool alloc_depth, bool multi_conn, const char *const *bitmaps)
{
    struct export *e = calloc(1, sizeof *e), **v;

    if (!e) {
        node_unref(node);
        fprintf(stderr, "vimg-nbd: out of memory\n");
        return -1;
    }
    e->node = node;
    e->size = node->size;
    e->writable = writable;
    e->alloc_depth = alloc_depth;
    e->multi_conn = multi_conn;
    e->id = id ? strdup(id) : NULL;
    e->name = strdup(name);
    e->description = description ? strdup(description) : NULL;
    if (!e->name || (id && !e->id) || (description && !e->description)) {
        fprintf(stderr, "vimg-nbd: out of memory\n");
        export_free(e);
        return -1;
    }
    if (export_find(srv, name)) {
        fprintf(stderr, "vimg-nbd: export '%s' already exists\n", name);
        export_free(e);
        return -1;
    }
    for (; bitmaps && *bitmaps; bitmaps++)
        if (attach_bitmap(e, *bitmaps) == -1) {
            export_free(e);
            return -1;
        }
    v = realloc(srv->exports, (srv->nr_exports + 1) * sizeof *v);
    if (!v) {
        fprintf(stderr, "vimg-nbd: out of memory\n");
        export_free(e);
        return -1;
    }
    srv->exports = v;
    v[srv->nr_exports++] = e;
    return 0;
}

int
export_close_all(struct server *srv)
{
    int r = 0;

    for (size_t i = 0; i < srv->nr_exports; i++)
        if (export_free(srv->exports[i]) == -1)
            r = -1;
    free(srv->exports);
    srv->exports = NULL;
    srv->nr_exports = 0;
    return r;
}
