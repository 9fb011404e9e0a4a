/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 persistent dirty bitmaps, changing side: the bitmap_op callback
 * (add, remove, clear, enable, disable, merge).
 *
 * An action list is applied to an in-memory copy of the directory; only
 * when every action succeeded is anything written: new bitmap data and
 * tables (all-zero clusters keep entry 0, as QEMU does), then a new
 * directory, all flushed, then the header extension switched with one
 * header write, then the old directory and dropped tables freed.  A crash
 * at any point leaves either the old or the new directory valid (at worst
 * leaked clusters).
 *
 * While the bitmaps are live (bitmaps.c), the directory written keeps
 * in_use set on every entry, changed content becomes the new live copy
 * and tracking follows the auto flag.  Storing at close is the same
 * commit with an empty action list, every live copy written back and
 * in_use cleared.
 *
 * Locking: s->bitmaps is protected by s->lock after open; the live copies
 * and the node's tracking list by its dirty_lock, held (after s->lock)
 * for a whole operation so that no write marks a copy being replaced.
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

/* ---- The working copy ---- */

struct wbm {
    struct qcow2_bitmap_info info; /* info.live: borrowed from s->bitmaps */
    struct bitmap *bm; /* new content; NULL = keep the on-disk table */
};

struct work {
    struct wbm *e;
    uint32_t n;
    struct u64_vector alloced; /* (offset, nclusters) pairs */
    bool switched;             /* the header points at the new directory */
};

static void
work_free(struct work *w)
{
    for (uint32_t i = 0; i < w->n; i++) {
        qcow2_bitmap_info_free(&w->e[i].info);
        bitmap_free(w->e[i].bm);
    }
    free(w->e);
    free(w->alloced.ptr);
}

static int
work_init(struct qcow2_state *s, struct work *w)
{
    memset(w, 0, sizeof *w);
    w->e = calloc(s->nb_bitmaps + 1, sizeof *w->e);
    if (!w->e) {
        vimg_error(errno, "calloc: %m");
        return -1;
    }
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        struct qcow2_bitmap_info *b = &w->e[i].info;
        *b = s->bitmaps[i];
        b->name = strdup(b->name);
        b->extra = malloc(b->extra_size ? b->extra_size : 1);
        w->n = i + 1;
        if (!b->name || !b->extra) {
            vimg_error(errno, "malloc: %m");
            return -1;
        }
        memcpy(b->extra, s->bitmaps[i].extra, b->extra_size);
    }
    return 0;
}

static struct wbm *
find(struct work *w, const char *name)
{
    for (uint32_t i = 0; i < w->n; i++)
        if (!strcmp(w->e[i].info.name, name))
            return &w->e[i];
    return NULL;
}


static const char *const op_names[] = { "add", "remove", "clear",
                                        "enable", "disable", "merge" };

/* Report the failure of action A with qemu-img's wording. */
static int __attribute__((format(printf, 3, 4)))
fail(const struct bitmap_action *a, int errnum, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Messages are at most 1 KiB: shorten over-long names. */
    vimg_error(errnum, "Operation %s on bitmap %.*s%s failed: %s",
               op_names[a->op], 200, a->name,
               strlen(a->name) > 200 ? "..." : "", msg);
    return -1;
}

static uint32_t
default_granularity(const struct qcow2_state *s)
{
    return (uint32_t)MIN(MAX(s->cluster_size, 4096), 65536);
}

static int
do_add(struct qcow2_state *s, struct work *w, const struct bitmap_action *a)
{
    uint32_t g = a->granularity ? a->granularity : default_granularity(s);
    size_t len = strlen(a->name);
    struct wbm *e;

    if (s->version < 3)
        return fail(a, ENOTSUP, "Can't make bitmap '%s' persistent in "
                    "'%s': Cannot store dirty bitmaps in qcow2 v2 files",
                    a->name, s->node->filename);
    if (len == 0)
        return fail(a, EINVAL, "Bitmap name cannot be empty");
    if (find(w, a->name))
        return fail(a, EEXIST, "Bitmap already exists: %s", a->name);
    if (!is_power_of_2(g) || g < BITMAP_MIN_GRANULARITY ||
        g > BITMAP_MAX_GRANULARITY)
        return fail(a, EINVAL, "Granularity must be power of 2 and at "
                    "least 512");
    if (len > QCOW2_MAX_BITMAP_NAME)
        return fail(a, EINVAL, "Can't make bitmap '%.200s...' persistent "
                    "in '%s': Name length exceeds maximum (%d characters)",
                    a->name, s->node->filename, QCOW2_MAX_BITMAP_NAME);
    if (w->n >= QCOW2_MAX_BITMAPS)
        return fail(a, ENOSPC, "Can't make bitmap '%s' persistent in "
                    "'%s': Too many persistent bitmaps", a->name,
                    s->node->filename);
    e = realloc(w->e, (w->n + 1) * sizeof *w->e);
    if (!e)
        return fail(a, ENOMEM, "%s", strerror(ENOMEM));
    w->e = e;
    e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    e->info.name = strdup(a->name);
    e->info.extra = malloc(1);
    w->n++; /* owned by w from here */
    if (!e->info.name || !e->info.extra)
        return fail(a, ENOMEM, "%s", strerror(ENOMEM));
    e->info.granularity = g;
    e->info.type = 1;
    e->info.flags = a->disabled ? 0 : QCOW2_BME_AUTO;
    e->bm = bitmap_new(s->node->size, g);
    return e->bm ? 0 : -1;
}

/* Find NAME in W for action A; it must be consistent unless ANY. */
static struct wbm *
lookup(struct work *w, const struct bitmap_action *a, const char *name,
       bool any)
{
    struct wbm *e = find(w, name);

    if (!e) {
        fail(a, ENOENT, "Dirty bitmap '%s' not found", name);
        return NULL;
    }
    if (!any && (e->info.flags & QCOW2_BME_IN_USE)) {
        fail(a, EBUSY, "Bitmap '%s' is inconsistent and cannot be used\n"
             "Try block-dirty-bitmap-remove to delete this bitmap from "
             "disk", name);
        return NULL;
    }
    if (!any && e->info.type != 1) {
        fail(a, ENOTSUP, "Bitmap '%s' has an unknown type", name);
        return NULL;
    }
    return e;
}

/* A copy of E's content: its new content, its live copy, or from disk.
 * The node's dirty_lock is held. */
static struct bitmap *
content_copy(struct qcow2_state *s, const struct wbm *e)
{
    if (e->bm)
        return bitmap_copy(e->bm);
    if (e->info.live)
        return bitmap_copy(e->info.live);
    return qcow2_bitmap_load(s, &e->info);
}

/* Make E's content available in e->bm (to change it). */
static int
ensure_loaded(struct qcow2_state *s, struct wbm *e)
{
    if (!e->bm)
        e->bm = content_copy(s, e);
    return e->bm ? 0 : -1;
}

/* OR SRC into DST, whatever their granularities. */
static int
merge_into(const struct bitmap_action *a, struct bitmap *dst,
           const struct bitmap *src)
{
    uint64_t off = 0, len;

    if (bitmap_size(dst) != bitmap_size(src))
        return fail(a, EINVAL, "Bitmaps are of different sizes "
                    "(destination size is %" PRIu64 ", source size is %"
                    PRIu64 ") and can't be merged", bitmap_size(dst),
                    bitmap_size(src));
    if (bitmap_granularity(dst) == bitmap_granularity(src))
        return bitmap_merge(dst, src);
    for (;;) {
        len = bitmap_size(src) - off;
        if (!len || !bitmap_next_dirty_area(src, &off, &len, 0))
            break;
        bitmap_set(dst, off, len);
        off += len;
    }
    return 0;
}

/* Load source bitmap of merge action A from another qcow2 node. */
static struct bitmap *
load_foreign(const struct bitmap_action *a)
{
    struct qcow2_state *ss = a->src->state;
    struct bitmap *bm = NULL;

    if (a->src->drv != &qcow2_format) {
        fail(a, ENOENT, "Dirty bitmap '%s' not found", a->src_name);
        return NULL;
    }
    LOCK_GUARD(&ss->lock);
    for (uint32_t i = 0; i < ss->nb_bitmaps; i++) {
        const struct qcow2_bitmap_info *b = &ss->bitmaps[i];
        if (strcmp(b->name, a->src_name))
            continue;
        if (b->flags & QCOW2_BME_IN_USE)
            fail(a, EBUSY, "Bitmap '%s' is inconsistent and cannot be "
                 "used\nTry block-dirty-bitmap-remove to delete this "
                 "bitmap from disk", a->src_name);
        else
            bm = qcow2_bitmap_live_copy(ss, b);
        return bm;
    }
    fail(a, ENOENT, "Dirty bitmap '%s' not found", a->src_name);
    return NULL;
}

static int
do_merge(struct qcow2_state *s, struct work *w,
         const struct bitmap_action *a)
{
    struct wbm *d = lookup(w, a, a->name, false), *se;
    struct bitmap *src;
    int r;

    if (!d)
        return -1;
    if (a->src && a->src != s->node) {
        src = load_foreign(a);
        if (!src)
            return -1;
    } else {
        /* Read the source without marking it changed. */
        se = lookup(w, a, a->src_name, false);
        if (!se)
            return -1;
        src = content_copy(s, se);
        if (!src)
            return -1;
    }
    r = ensure_loaded(s, d);
    if (r == 0)
        r = merge_into(a, d->bm, src);
    bitmap_free(src);
    return r;
}

static int
apply(struct qcow2_state *s, struct work *w, const struct bitmap_action *a)
{
    struct wbm *e;

    if (a->op == BITMAP_OP_ADD)
        return do_add(s, w, a);
    if (a->op == BITMAP_OP_MERGE)
        return do_merge(s, w, a);
    e = lookup(w, a, a->name, a->op == BITMAP_OP_REMOVE);
    if (!e)
        return -1;
    switch (a->op) {
    case BITMAP_OP_REMOVE:
        qcow2_bitmap_info_free(&e->info);
        bitmap_free(e->bm);
        memmove(e, e + 1, (size_t)(w->e + w->n - (e + 1)) * sizeof *e);
        w->n--;
        return 0;
    case BITMAP_OP_CLEAR:
        bitmap_free(e->bm);
        e->bm = bitmap_new(s->node->size, e->info.granularity);
        return e->bm ? 0 : -1;
    case BITMAP_OP_ENABLE:
        e->info.flags |= QCOW2_BME_AUTO;
        return 0;
    case BITMAP_OP_DISABLE:
        e->info.flags &= ~QCOW2_BME_AUTO;
        return 0;
    default:
        vimg_error(EINVAL, "unknown bitmap operation");
        return -1;
    }
}

/* ---- Writing ---- */

static int64_t
alloc_write(struct qcow2_state *s, struct work *w, const void *buf,
            uint64_t len)
{
    uint64_t n = DIV_ROUND_UP(len, s->cluster_size);
    int64_t off = qcow2_alloc_clusters_locked(s, n);

    if (off < 0)
        return -1;
    if (u64_vector_append(&w->alloced, (uint64_t)off) == -1 ||
        u64_vector_append(&w->alloced, n) == -1)
        return -1;
    if (node_pwrite(s->node->file, buf, len, (uint64_t)off, 0) == -1)
        return -1;
    return off;
}

/* Write E's new content: data clusters (none for all-zero ones) and the
 * table, recording the new table in e->info. */
static int
write_bitmap(struct qcow2_state *s, struct work *w, struct wbm *e)
{
    uint64_t cs = s->cluster_size, ser = bitmap_serial_size(e->bm);
    uint64_t n = DIV_ROUND_UP(ser, cs);
    CLEANUP_FREE uint64_t *t = calloc(n ? n : 1, 8);
    CLEANUP_FREE uint8_t *buf = calloc(1, cs);
    int64_t off;

    if (!t || !buf) {
        vimg_error(errno, "calloc: %m");
        return -1;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t first = i * cs, len = MIN(cs, ser - first);
        if (bitmap_range_is_zero(e->bm, first, len))
            continue;
        memset(buf, 0, cs);
        bitmap_serialise(e->bm, buf, first, len);
        off = alloc_write(s, w, buf, cs);
        if (off < 0)
            return -1;
        t[i] = htobe64((uint64_t)off);
    }
    off = 0;
    if (n && (off = alloc_write(s, w, t, n * 8)) < 0)
        return -1;
    e->info.table_offset = (uint64_t)off;
    e->info.table_size = (uint32_t)n;
    return 0;
}

static uint8_t *
build_dir(struct qcow2_state *s, struct work *w, uint64_t *size)
{
    uint64_t total = 0, pos = 0;
    uint8_t *dir;

    for (uint32_t i = 0; i < w->n; i++)
        total += ALIGN_UP(sizeof(struct qcow2_bitmap_dir_entry) +
                              w->e[i].info.extra_size +
                              strlen(w->e[i].info.name),
                          8);
    if (total > QCOW2_MAX_BITMAP_DIR_SIZE) {
        vimg_error(ENOSPC, "bitmap directory is too large");
        return NULL;
    }
    dir = calloc(1, total ? total : 1);
    if (!dir) {
        vimg_error(errno, "calloc: %m");
        return NULL;
    }
    for (uint32_t i = 0; i < w->n; i++) {
        const struct qcow2_bitmap_info *b = &w->e[i].info;
        struct qcow2_bitmap_dir_entry d;
        size_t nl = strlen(b->name);

        d.bitmap_table_offset = htobe64(b->table_offset);
        d.bitmap_table_size = htobe32(b->table_size);
        /* While live, every bitmap on disk is in_use. */
        d.flags = htobe32(b->flags | (s->bitmaps_live ? QCOW2_BME_IN_USE : 0));
        d.type = b->type;
        d.granularity_bits = (uint8_t)__builtin_ctz(b->granularity);
        d.name_size = htobe16((uint16_t)nl);
        d.extra_data_size = htobe32(b->extra_size);
        memcpy(dir + pos, &d, sizeof d);
        memcpy(dir + pos + sizeof d, b->extra, b->extra_size);
        memcpy(dir + pos + sizeof d + b->extra_size, b->name, nl);
        pos += ALIGN_UP(sizeof d + b->extra_size + nl, 8);
    }
    *size = total;
    return dir;
}

/* Whether the on-disk table at OFF is still used by W unchanged. */
static bool
kept(const struct work *w, uint64_t off)
{
    for (uint32_t i = 0; i < w->n; i++)
        if (!w->e[i].bm && w->e[i].info.table_offset == off)
            return true;
    return false;
}

/* Queue freeing the table and data clusters of old bitmap B. */
static int
free_old(struct qcow2_state *s, const struct qcow2_bitmap_info *b)
{
    CLEANUP_FREE uint64_t *t = NULL;

    if (!b->table_offset)
        return 0;
    t = qcow2_bitmap_read_table(s, b);
    if (!t)
        return -1;
    for (uint32_t i = 0; i < b->table_size; i++)
        if ((t[i] & QCOW2_OFFSET_MASK) &&
            qcow2_free_clusters_later_locked(s, t[i] & QCOW2_OFFSET_MASK,
                                             1) == -1)
            return -1;
    return qcow2_free_clusters_later_locked(
        s, b->table_offset,
        DIV_ROUND_UP((uint64_t)b->table_size * 8, s->cluster_size));
}

/* Switch the header to W's directory (DIR, SIZE bytes, already durable
 * at OFF; SIZE 0: no bitmaps) with one header write. */
static int
switch_header(struct qcow2_state *s, struct work *w, uint64_t off,
              uint64_t size)
{
    struct qcow2_bitmaps_ext old_ext = s->bitmaps_ext;
    bool old_has = s->has_bitmaps_ext;
    uint64_t old_ac = s->autoclear;
    struct node *n = s->node;

    s->has_bitmaps_ext = w->n != 0;
    s->bitmaps_ext.nb_bitmaps = w->n;
    s->bitmaps_ext.reserved = 0;
    s->bitmaps_ext.directory_size = size;
    s->bitmaps_ext.directory_offset = off;
    if (w->n)
        s->autoclear |= QCOW2_AUTOCLEAR_BITMAPS;
    else
        s->autoclear &= ~QCOW2_AUTOCLEAR_BITMAPS;
    if (qcow2_header_write_locked(s, n->backing_name, n->backing_fmt) ==
        -1) {
        s->bitmaps_ext = old_ext;
        s->has_bitmaps_ext = old_has;
        s->autoclear = old_ac;
        return -1;
    }
    return 0;
}

static int
commit(struct qcow2_state *s, struct work *w)
{
    CLEANUP_FREE uint8_t *dir = NULL;
    uint64_t size = 0;
    int64_t off = 0;

    for (uint32_t i = 0; i < w->n; i++)
        if (w->e[i].bm && write_bitmap(s, w, &w->e[i]) == -1)
            return -1;
    dir = build_dir(s, w, &size);
    if (!dir)
        return -1;
    if (size && (off = alloc_write(s, w, dir, size)) < 0)
        return -1;
    if (qcow2_flush_all_locked(s) == -1 ||
        switch_header(s, w, (uint64_t)off, size) == -1)
        return -1;
    w->alloced.len = 0; /* now owned by the image */
    w->switched = true;
    return 0;
}

/* The new directory (EXT) is live: free what only the old one used. */
static int
release_old(struct qcow2_state *s, struct work *w,
            const struct qcow2_bitmaps_ext *old_ext)
{
    for (uint32_t i = 0; i < s->nb_bitmaps; i++)
        if (!kept(w, s->bitmaps[i].table_offset) &&
            free_old(s, &s->bitmaps[i]) == -1)
            return -1;
    if (s->nb_bitmaps &&
        qcow2_free_clusters_later_locked(
            s, old_ext->directory_offset,
            DIV_ROUND_UP(old_ext->directory_size, s->cluster_size)) == -1)
        return -1;
    return qcow2_flush_all_locked(s);
}

/* Whether W still uses live copy BM unchanged. */
static bool
carried(const struct work *w, const struct bitmap *bm)
{
    for (uint32_t i = 0; i < w->n; i++)
        if (!w->e[i].bm && w->e[i].info.live == bm)
            return true;
    return false;
}

/* Move W's directory into S (after a successful commit).  While live,
 * changed content becomes the new live copy and tracking follows the
 * auto flag.  The node's dirty_lock is held, with room reserved in the
 * tracking list for every bitmap. */
static void
install(struct qcow2_state *s, struct work *w)
{
    struct node *n = s->node;

    for (uint32_t i = 0; i < s->nb_bitmaps; i++)
        if (s->bitmaps[i].live && carried(w, s->bitmaps[i].live))
            s->bitmaps[i].live = NULL;
    qcow2_bitmaps_drop_live_dirty_locked(s);
    qcow2_bitmaps_free_entries(s);
    s->bitmaps = calloc(w->n ? w->n : 1, sizeof *s->bitmaps);
    if (!s->bitmaps)
        abort(); /* tiny, and the image is already switched */
    for (uint32_t i = 0; i < w->n; i++) {
        struct qcow2_bitmap_info *b = &s->bitmaps[i];

        *b = w->e[i].info;
        memset(&w->e[i].info, 0, sizeof w->e[i].info);
        if (w->e[i].bm)
            b->live = NULL; /* replaced: the old copy was dropped */
        if (w->e[i].bm && s->bitmaps_live && b->type == 1 &&
            !(b->flags & QCOW2_BME_IN_USE))
            b->live = TAKE_PTR(w->e[i].bm);
        if (!b->live)
            continue;
        if (b->flags & QCOW2_BME_AUTO)
            dirty_track_locked(n, b->live); /* room reserved */
        else
            dirty_untrack_locked(n, b->live);
    }
    s->nb_bitmaps = w->n;
}

/* Apply the action list A (may be NULL) to W and write the result.
 * Caller holds s->lock and the node's dirty_lock. */
static int
op_locked(struct qcow2_state *s, struct work *w,
          const struct bitmap_action *a)
{
    struct qcow2_bitmaps_ext old_ext = s->bitmaps_ext;
    int r;

    for (; a; a = a->next)
        if (apply(s, w, a) == -1)
            return -1;
    /* Room for tracking every bitmap, so install cannot fail. */
    if (bitmap_ptr_vector_reserve(&s->node->dirty, w->n) == -1)
        return -1;
    if (commit(s, w) == -1) {
        if (w->switched)
            return -1;
        /* Give back what the failed commit allocated (best effort). */
        for (size_t i = 0; i < w->alloced.len; i += 2)
            qcow2_free_clusters_later_locked(s, w->alloced.ptr[i],
                                             w->alloced.ptr[i + 1]);
        qcow2_flush_all_locked(s);
        return -1;
    }
    /* From here on a failure can only leak clusters. */
    r = release_old(s, w, &old_ext);
    install(s, w);
    return r;
}

int
qcow2_bitmap_op(struct node *n, const struct bitmap_action *a)
{
    struct qcow2_state *s = n->state;
    struct work w;
    int r;

    LOCK_GUARD(&s->lock);
    if (s->readonly) {
        vimg_error(EROFS, "image is opened read-only");
        return -1;
    }
    /* Writes wait to mark their bitmaps until the new ones are in. */
    dirty_lock(n);
    r = work_init(s, &w);
    if (r == 0)
        r = op_locked(s, &w, a);
    work_free(&w);
    dirty_unlock(n);
    return r;
}

int
qcow2_bitmaps_store_locked(struct qcow2_state *s)
{
    struct node *n = s->node;
    struct work w;
    int r;

    if (!s->bitmaps_live)
        return 0;
    if (!s->nb_bitmaps) {
        s->bitmaps_live = false;
        return 0;
    }
    dirty_lock(n);
    r = work_init(s, &w);
    for (uint32_t i = 0; r == 0 && i < w.n; i++) {
        struct wbm *e = &w.e[i];
        if (e->info.live && !(e->bm = bitmap_copy(e->info.live)))
            r = -1;
    }
    if (r == 0) {
        /* The directory written now has in_use clear. */
        s->bitmaps_live = false;
        r = op_locked(s, &w, NULL);
        if (r == -1 && !w.switched)
            s->bitmaps_live = true;
    }
    work_free(&w);
    dirty_unlock(n);
    return r;
}
