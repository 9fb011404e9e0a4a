/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The backup job: a point-in-time copy of a node that stays in use.
 *
 * At creation the source is drained and a write hook installed: from
 * then on, before a write changes a cluster that still has to be
 * copied, the hook copies the cluster's old data to the target
 * (copy-before-write).  The job's thread copies the remaining clusters
 * in the background.  "todo" holds the clusters still to copy, "busy"
 * those being copied (by the job or by a hook); a cluster is claimed by
 * moving it from todo to busy under b->lock, copied without the lock,
 * and released.  A hook that meets a busy cluster waits for it, so no
 * write lands on a cluster before its old data has reached the target.
 *
 * sync=full copies everything (skipping what reads as zero on both
 * sides), top what the source's own layer allocates, bitmap the dirty
 * clusters of a bitmap, and none nothing but the copy-before-write
 * (pull-mode fleecing: the target is an overlay over the source).
 *
 * With a bitmap, the bitmap's content at the start is kept (snapshot)
 * and, unless the mode is never, the bitmap restarts from clean so that
 * it records only newer writes; if the job fails, on-success gives the
 * snapshot back, always only the clusters that were not copied.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitmap.h"
#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "hook.h"
#include "io.h"
#include "jobs.h"
#include "node-bitmaps.h"
#include "vimg.h"

#define CLUSTER (64u * 1024)
#define CHUNK (1u << 20)

struct backup {
    struct write_hook hook; /* first: the hook finds its backup */
    struct job *job;
    struct node *src, *dst;
    struct backup_params p;
    char *bitmap_name;
    struct bitmap *snapshot; /* the user bitmap at the start, or NULL */
    bool hooked;

    pthread_mutex_t lock;
    pthread_cond_t cond;      /* a busy cluster was released */
    struct bitmap *todo;      /* by lock */
    struct bitmap *busy;      /* by lock */
    uint64_t done, total;     /* by lock */
    char *hook_error;         /* the first copy-before-write failure */
};

static int
copy_range(struct backup *b, uint64_t off, uint64_t len, bool *is_read)
{
    return job_copy_range(b->src, b->dst, off, len,
                          b->p.compress ? CLUSTER : 0, is_read);
}

/* Release [S, E) from busy; the bytes count as done unless PUT_BACK,
 * which returns them to todo. */
static void
release_locked(struct backup *b, uint64_t s, uint64_t e, bool put_back)
{
    bitmap_reset(b->busy, s, e - s);
    if (put_back)
        bitmap_set(b->todo, s, e - s);
    else
        b->done += e - s;
    pthread_cond_broadcast(&b->cond);
}

/* Claim the run of todo clusters that starts at T (<= END), stopping at
 * END, at a busy cluster or after CHUNK bytes. */
static uint64_t
claim_locked(struct backup *b, uint64_t t, uint64_t end)
{
    uint64_t lim = MIN(end, t + CHUNK);
    int64_t e = bitmap_next_clean(b->todo, t, lim);
    int64_t busy = bitmap_next_dirty(b->busy, t, lim);
    uint64_t stop = e < 0 ? lim : (uint64_t)e;

    if (busy >= 0 && (uint64_t)busy < stop)
        stop = (uint64_t)busy;
    bitmap_reset(b->todo, t, stop - t);
    bitmap_set(b->busy, t, stop - t);
    return stop;
}

static void
hook_failed_locked(struct backup *b)
{
    if (!b->hook_error)
        b->hook_error = strdup(vimg_get_error());
}

/* Copy-before-write: every cluster of [OFF, OFF+LEN) still to copy is
 * copied now; clusters being copied are waited for. */
static void
backup_before_write(struct write_hook *h, struct node *n, uint64_t off,
                    uint64_t len)
{
    struct backup *b = (struct backup *)h;
    uint64_t pos = ALIGN_DOWN(off, CLUSTER);
    uint64_t end = MIN(ALIGN_UP(off + len, CLUSTER), n->size);

    (void)n;
    pthread_mutex_lock(&b->lock);
    while (pos < end && !b->hook_error) {
        int64_t t = bitmap_next_dirty(b->todo, pos, end);
        int64_t c = bitmap_next_dirty(b->busy, pos, end);
        uint64_t stop;
        bool is_read;
        int r;

        if (t < 0 && c < 0)
            break;
        if (c >= 0 && (t < 0 || c < t)) {
            pthread_cond_wait(&b->cond, &b->lock);
            continue;
        }
        stop = claim_locked(b, (uint64_t)t, end);
        pthread_mutex_unlock(&b->lock);
        r = copy_range(b, (uint64_t)t, stop - (uint64_t)t, &is_read);
        pthread_mutex_lock(&b->lock);
        if (r == -1)
            hook_failed_locked(b);
        release_locked(b, (uint64_t)t, stop, false);
    }
    pthread_mutex_unlock(&b->lock);
}

/* An error of the background copy of [S, E): BLOCK_JOB_ERROR, then as
 * the on-*-error action says.  Returns -1 if the job must fail. */
static int
copy_failed(struct backup *b, uint64_t s, uint64_t e, bool is_read)
{
    int r = job_copy_failed(b->job, is_read ? b->p.on_source_error
                                            : b->p.on_target_error,
                            is_read);

    pthread_mutex_lock(&b->lock);
    /* The range goes back to be copied again (ignore and stop retry). */
    release_locked(b, s, e, true);
    pthread_mutex_unlock(&b->lock);
    return r;
}

static int
wait_cbw_only(struct job *j, struct backup *b)
{
    while (!job_pause_point(j)) {
        pthread_mutex_lock(&b->lock);
        if (b->hook_error) {
            vimg_error(EIO, "%s", b->hook_error);
            pthread_mutex_unlock(&b->lock);
            return -1;
        }
        job_set_progress(j, b->done, b->done);
        pthread_mutex_unlock(&b->lock);
        usleep(20000);
    }
    return 0;
}

static int
backup_run(struct job *j)
{
    struct backup *b = j->opaque;
    uint64_t size = b->src->size, pos = 0;

    if (b->p.sync == BACKUP_SYNC_NONE)
        return wait_cbw_only(j, b);
    for (;;) {
        uint64_t t, stop;
        int64_t next;
        bool is_read;

        if (job_pause_point(j))
            return 0;
        pthread_mutex_lock(&b->lock);
        if (b->hook_error) {
            vimg_error(EIO, "%s", b->hook_error);
            pthread_mutex_unlock(&b->lock);
            return -1;
        }
        next = bitmap_next_dirty(b->todo, pos, size);
        if (next < 0) {
            if (pos > 0) { /* clusters put back behind us */
                pos = 0;
                pthread_mutex_unlock(&b->lock);
                continue;
            }
            /* Nothing left to claim: wait for the hooks' copies. */
            while (bitmap_count(b->busy) && !b->hook_error)
                pthread_cond_wait(&b->cond, &b->lock);
            if (bitmap_count(b->todo) == 0 || b->hook_error) {
                pthread_mutex_unlock(&b->lock);
                if (b->hook_error)
                    continue;
                break;
            }
            pthread_mutex_unlock(&b->lock);
            continue;
        }
        t = (uint64_t)next;
        if (bitmap_get(b->busy, t)) {
            pos = t + CLUSTER;
            pthread_mutex_unlock(&b->lock);
            continue;
        }
        stop = claim_locked(b, t, size);
        pthread_mutex_unlock(&b->lock);
        if (copy_range(b, t, stop - t, &is_read) == -1) {
            if (copy_failed(b, t, stop, is_read) == -1)
                return -1;
            pos = stop;
            continue;
        }
        pthread_mutex_lock(&b->lock);
        release_locked(b, t, stop, false);
        job_set_progress(j, b->done, b->total);
        pthread_mutex_unlock(&b->lock);
        job_rate_limit(j, stop - t);
        pos = stop;
    }
    return node_flush(b->dst);
}

static int
snapshot_bitmap(struct bitmap *bm, void *opaque)
{
    struct backup *b = opaque;

    b->snapshot = bitmap_copy(bm);
    if (!b->snapshot)
        return -1;
    if (b->p.bitmap_mode != BITMAP_MODE_NEVER)
        bitmap_clear(bm);
    return 0;
}

/* Give the user bitmap back what this job took from it and did not
 * copy (always), or everything (on-success). */
static int
restore_bitmap(struct bitmap *bm, void *opaque)
{
    struct backup *b = opaque;
    uint64_t off = 0, len = bitmap_size(b->snapshot);

    if (b->p.bitmap_mode == BITMAP_MODE_ON_SUCCESS)
        return bitmap_merge(bm, b->snapshot);
    while (bitmap_next_dirty_area(b->snapshot, &off, &len, 0)) {
        uint64_t end = off + len, p = off;
        int64_t t;

        pthread_mutex_lock(&b->lock);
        while (p < end && (t = bitmap_next_dirty(b->todo, p, end)) >= 0) {
            int64_t e = bitmap_next_clean(b->todo, (uint64_t)t, end);
            uint64_t stop = e < 0 ? end : (uint64_t)e;

            bitmap_set(bm, (uint64_t)t, stop - (uint64_t)t);
            p = stop;
        }
        pthread_mutex_unlock(&b->lock);
        off = end;
        len = bitmap_size(b->snapshot) - end;
    }
    return 0;
}

static void
backup_abort(struct job *j)
{
    struct backup *b = j->opaque;

    if (b->snapshot && b->p.bitmap_mode != BITMAP_MODE_NEVER &&
        node_bitmap_with(b->src, b->bitmap_name, restore_bitmap, b) == -1)
        fprintf(stderr, "backup %s: bitmap '%s' not restored: %s\n", j->id,
                b->bitmap_name, vimg_get_error());
}

static void
backup_clean(struct job *j)
{
    struct backup *b = j->opaque;

    if (b->hooked)
        write_hook_remove(b->src, &b->hook);
    bitmap_free(b->todo);
    bitmap_free(b->busy);
    bitmap_free(b->snapshot);
    free(b->bitmap_name);
    free(b->hook_error);
    node_unref(b->src);
    node_unref(b->dst);
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cond);
    free(b);
}

static const struct job_driver backup_driver = {
    .type = "backup",
    .run = backup_run,
    .abort = backup_abort,
    .clean = backup_clean,
};

/* Mark in todo what SYNC asks to copy. */
static int
fill_todo(struct backup *b)
{
    uint64_t size = b->src->size, off = 0, len = size;
    bool dst_zero = false;
    struct vimg_extent e;

    switch (b->p.sync) {
    case BACKUP_SYNC_NONE:
        bitmap_fill(b->todo);
        return 0;
    case BACKUP_SYNC_BITMAP:
        while (bitmap_next_dirty_area(b->snapshot, &off, &len, 0)) {
            bitmap_set(b->todo, off, len);
            off += len;
            len = size - off;
        }
        return 0;
    case BACKUP_SYNC_FULL:
        /* A target that reads as zeroes needs no zeroes written. */
        if (node_block_status(b->dst, true, 0, size, &e) == -1)
            return -1;
        dst_zero = (e.flags & VIMG_EXT_ZERO) && e.length == size;
        /* fall through */
    case BACKUP_SYNC_TOP:
        while (off < size) {
            struct extent le;
            bool copy;

            if (b->p.sync == BACKUP_SYNC_TOP) {
                if (node_block_status_layer(b->src, false, off, size - off,
                                            &le) == -1)
                    return -1;
                e.length = le.length;
                copy = le.flags & EXT_ALLOCATED;
            } else {
                if (node_block_status(b->src, false, off, size - off, &e) ==
                    -1)
                    return -1;
                copy = !(dst_zero && (e.flags & VIMG_EXT_ZERO));
            }
            if (copy)
                bitmap_set(b->todo, off, e.length);
            off += e.length;
        }
        return 0;
    }
    return 0;
}

static int
check_params(const struct backup_params *p)
{
    if (p->src->size != p->dst->size) {
        vimg_error(EINVAL, "Source and target image have different sizes");
        return -1;
    }
    if (!(p->dst->flags & NODE_RDWR)) {
        vimg_error(EROFS, "Target node '%s' is read-only",
                   p->dst->node_name);
        return -1;
    }
    if (p->sync == BACKUP_SYNC_BITMAP && !p->bitmap) {
        vimg_error(EINVAL, "must provide a valid bitmap name for 'bitmap' "
                           "sync mode");
        return -1;
    }
    if (p->bitmap && p->sync == BACKUP_SYNC_NONE) {
        vimg_error(EINVAL, "a bitmap cannot be used with sync mode 'none'");
        return -1;
    }
    return 0;
}

struct job *
backup_create(struct job_registry *reg, const char *id,
              const struct backup_params *p, bool auto_finalize,
              bool auto_dismiss, uint64_t speed, struct job_txn *txn)
{
    struct backup *b;
    struct job *j;
    int r = 0;

    if (check_params(p) == -1)
        return NULL;
    b = calloc(1, sizeof *b);
    if (!b) {
        vimg_error(ENOMEM, "out of memory");
        return NULL;
    }
    b->hook.before_write = backup_before_write;
    b->p = *p;
    b->src = p->src;
    b->dst = p->dst;
    node_ref(b->src);
    node_ref(b->dst);
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);
    b->bitmap_name = p->bitmap ? strdup(p->bitmap) : NULL;
    b->p.bitmap = b->bitmap_name;
    b->todo = bitmap_new(b->src->size ? b->src->size : 1, CLUSTER);
    b->busy = bitmap_new(b->src->size ? b->src->size : 1, CLUSTER);
    j = (b->todo && b->busy && (b->bitmap_name || !p->bitmap))
            ? job_create(reg, id, &backup_driver, b, auto_finalize,
                         auto_dismiss, speed, txn)
            : NULL;
    if (!j) {
        backup_clean(&(struct job){ .opaque = b });
        return NULL;
    }
    b->job = j;
    /* The point in time: no write in flight while the hook goes in. */
    node_drain_begin(b->src);
    if (p->bitmap)
        r = node_bitmap_with(b->src, p->bitmap, snapshot_bitmap, b);
    if (r == 0)
        r = fill_todo(b);
    if (r == 0) {
        /* As QEMU: full and top count the whole disk, what needs no
         * copy as done already; bitmap counts the dirty clusters. */
        b->total = bitmap_count(b->todo);
        if (b->p.sync == BACKUP_SYNC_FULL || b->p.sync == BACKUP_SYNC_TOP) {
            b->done = b->src->size - b->total;
            b->total = b->src->size;
        } else if (b->p.sync == BACKUP_SYNC_NONE) {
            b->total = 0;
        }
        job_set_progress(j, b->done, b->total);
        write_hook_add(b->src, &b->hook);
        b->hooked = true;
    }
    node_drain_end(b->src);
    if (r == -1) {
        CLEANUP_FREE char *msg = strdup(vimg_get_error());

        job_discard(j);
        vimg_error(EINVAL, "%s", msg ? msg : "backup failed");
        return NULL;
    }
    return j;
}
