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
#include <sys/socket.h>

#include <jansson.h>

#include "bitmap.h"
#include "cleanup.h"
#include "dirty.h"
#include "node-bitmaps.h"
#include "io.h"
#include "server.h"

static struct export *
export_find_locked(struct server *srv, const char *name)
{
    for (size_t i = 0; i < srv->nr_exports; i++)
        if (!strcmp(srv->exports[i]->name, name))
            return srv->exports[i];
    return NULL;
}

static struct export *
export_by_id_locked(struct server *srv, const char *id)
{
    for (size_t i = 0; i < srv->nr_exports; i++)
        if (srv->exports[i]->id && !strcmp(srv->exports[i]->id, id))
            return srv->exports[i];
    return NULL;
}

static int
attach_bitmap(struct export *e, const char *name)
{
    struct export_bitmap *eb = &e->bitmaps[e->nr_bitmaps];

    if (e->nr_bitmaps == EXPORT_MAX_BITMAPS) {
        vimg_error(EINVAL, "too many bitmaps (at most %d)",
                   EXPORT_MAX_BITMAPS);
        return -1;
    }
    for (struct node *m = e->node; m; m = m->backing) {
        struct bitmap *bm;

        bm = node_bitmap_copy(m, name);
        if (!bm && errno == ENOENT)
            continue;
        if (!bm)
            return -1;
        /* qemu: a read-only export's copy would go stale while another
         * user writes the node. */
        if (!e->writable && (m->flags & NODE_RDWR) &&
            node_bitmap_recording(m, name)) {
            bitmap_free(bm);
            vimg_error(EINVAL,
                       "Enabled bitmap '%s' incompatible with readonly "
                       "export", name);
            return -1;
        }
        eb->name = strdup(name);
        eb->bm = bm;
        if (!eb->name) {
            bitmap_free(bm);
            vimg_error(ENOMEM, "out of memory");
            return -1;
        }
        if (e->writable && m == e->node && node_bitmap_recording(m, name)) {
            dirty_lock(m);
            if (dirty_track_locked(m, bm) == 0)
                eb->owner = m;
            dirty_unlock(m);
            if (!eb->owner) {
                free(eb->name);
                bitmap_free(bm);
                return -1;
            }
        }
        e->nr_bitmaps++;
        return 0;
    }
    vimg_error(ENOENT, "Bitmap '%s' is not found", name);
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
            server_log("%s: %s", e->name, vimg_get_error());
    }
    free(e->id);
    free(e->name);
    free(e->description);
    pthread_rwlock_destroy(&e->gate);
    free(e);
    return r;
}

int
export_add(struct server *srv, const char *id, const char *name,
           const char *description, struct node *node, bool writable,
           bool alloc_depth, bool multi_conn, const char *const *bitmaps)
{
    struct export *e = calloc(1, sizeof *e), **v;
    struct export *dup;

    if (!e) {
        node_unref(node);
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    e->refcnt = 1; /* the list's */
    {
        pthread_rwlockattr_t ga;

        /* A pivot waiting for the gate must not starve. */
        pthread_rwlockattr_init(&ga);
        pthread_rwlockattr_setkind_np(
            &ga, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        pthread_rwlock_init(&e->gate, &ga);
        pthread_rwlockattr_destroy(&ga);
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
        export_free(e);
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    for (; bitmaps && *bitmaps; bitmaps++)
        if (attach_bitmap(e, *bitmaps) == -1) {
            CLEANUP_FREE char *msg = strdup(vimg_get_error());

            export_free(e);
            vimg_error(EINVAL, "%s", msg ? msg : "bitmap");
            return -1;
        }
    pthread_rwlock_wrlock(&srv->exports_lock);
    dup = export_find_locked(srv, name);
    if (!dup && id)
        dup = export_by_id_locked(srv, id);
    v = dup ? NULL
            : realloc(srv->exports, (srv->nr_exports + 1) * sizeof *v);
    if (v) {
        srv->exports = v;
        v[srv->nr_exports++] = e;
    }
    pthread_rwlock_unlock(&srv->exports_lock);
    if (!v) {
        export_free(e);
        if (dup && id && dup->id && !strcmp(dup->id, id))
            vimg_error(EEXIST, "Block export id '%s' is already in use", id);
        else if (dup)
            vimg_error(EEXIST, "NBD server already has export named '%s'",
                       name);
        else
            vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    return 0;
}

struct export *
export_get(struct server *srv, const char *name)
{
    struct export *e;

    pthread_rwlock_rdlock(&srv->exports_lock);
    e = export_find_locked(srv, name);
    if (e)
        atomic_fetch_add(&e->refcnt, 1);
    pthread_rwlock_unlock(&srv->exports_lock);
    return e;
}

void
export_put(struct server *srv, struct export *e)
{
    char *id;

    if (!e || atomic_fetch_sub(&e->refcnt, 1) != 1)
        return;
    id = e->id ? strdup(e->id) : NULL;
    export_free(e);
    if (id && srv->event)
        srv->event(srv, "BLOCK_EXPORT_DELETED", json_pack("{s:s}", "id", id));
    free(id);
}

/* Unlink E (by lock) and, with HARD, cut the connections using it. */
static void
unlink_locked(struct server *srv, struct export *e)
{
    for (size_t i = 0; i < srv->nr_exports; i++)
        if (srv->exports[i] == e) {
            memmove(&srv->exports[i], &srv->exports[i + 1],
                    (srv->nr_exports - i - 1) * sizeof *srv->exports);
            srv->nr_exports--;
            break;
        }
}

int
export_remove(struct server *srv, const char *id, const char *name,
              bool hard)
{
    struct export *e;

    pthread_rwlock_wrlock(&srv->exports_lock);
    e = id ? export_by_id_locked(srv, id) : export_find_locked(srv, name);
    if (e)
        unlink_locked(srv, e);
    pthread_rwlock_unlock(&srv->exports_lock);
    if (!e) {
        if (id)
            vimg_error(ENOENT, "Export '%s' is not found", id);
        else
            vimg_error(ENOENT, "Export '%s' is not found", name);
        return -1;
    }
    if (hard) {
        pthread_mutex_lock(&srv->lock);
        for (struct conn *c = srv->conns; c; c = c->next)
            if (c->exp == e)
                shutdown(c->fd, SHUT_RDWR);
        pthread_mutex_unlock(&srv->lock);
    }
    export_put(srv, e);
    return 0;
}

json_t *
export_query(struct server *srv)
{
    json_t *a = json_array();

    pthread_rwlock_rdlock(&srv->exports_lock);
    for (size_t i = 0; a && i < srv->nr_exports; i++) {
        const struct export *e = srv->exports[i];

        json_array_append_new(
            a, json_pack("{s:s,s:s,s:s,s:b}", "type", "nbd", "id",
                         e->id ? e->id : e->name, "node-name",
                         e->node->node_name, "shutting-down", false));
    }
    pthread_rwlock_unlock(&srv->exports_lock);
    return a;
}

bool
export_uses_bitmap(struct server *srv, struct node *n, const char *name)
{
    bool busy = false;

    pthread_rwlock_rdlock(&srv->exports_lock);
    for (size_t i = 0; !busy && i < srv->nr_exports; i++) {
        const struct export *e = srv->exports[i];

        for (struct node *m = e->node; m && !busy; m = m->backing)
            for (unsigned k = 0; m == n && k < e->nr_bitmaps; k++)
                busy |= !strcmp(e->bitmaps[k].name, name);
    }
    pthread_rwlock_unlock(&srv->exports_lock);
    return busy;
}

bool
export_uses_node(struct server *srv, struct node *n)
{
    bool used = false;

    pthread_rwlock_rdlock(&srv->exports_lock);
    for (size_t i = 0; !used && i < srv->nr_exports; i++)
        used = srv->exports[i]->node == n;
    pthread_rwlock_unlock(&srv->exports_lock);
    return used;
}

int
export_pivot(struct server *srv, struct node *from, struct node *to,
             int (*quiesced)(void *opaque), void *opaque)
{
    struct export *v[64];
    size_t n = 0;
    int r = 0;

    pthread_rwlock_rdlock(&srv->exports_lock);
    for (size_t i = 0; i < srv->nr_exports && n < 64; i++)
        if (srv->exports[i]->node == from) {
            v[n] = srv->exports[i];
            atomic_fetch_add(&v[n]->refcnt, 1);
            n++;
        }
    pthread_rwlock_unlock(&srv->exports_lock);
    for (size_t i = 0; i < n; i++)
        pthread_rwlock_wrlock(&v[i]->gate);
    if (quiesced)
        r = quiesced(opaque);
    for (size_t i = 0; i < n; i++) {
        if (r == 0 && to) {
            node_ref(to);
            v[i]->node = to;
            node_unref(from);
        }
        pthread_rwlock_unlock(&v[i]->gate);
        export_put(srv, v[i]);
    }
    return r;
}

int
export_close_all(struct server *srv)
{
    int r = 0;

    pthread_rwlock_wrlock(&srv->exports_lock);
    while (srv->nr_exports) {
        struct export *e = srv->exports[--srv->nr_exports];

        pthread_rwlock_unlock(&srv->exports_lock);
        if (atomic_load(&e->refcnt) == 1 && e->writable &&
            node_flush(e->node) == -1) {
            server_log("%s: %s", e->name, vimg_get_error());
            r = -1;
        }
        export_put(srv, e);
        pthread_rwlock_wrlock(&srv->exports_lock);
    }
    free(srv->exports);
    srv->exports = NULL;
    pthread_rwlock_unlock(&srv->exports_lock);
    return r;
}
