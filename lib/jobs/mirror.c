/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The mirror job: makes DST a copy of SRC while SRC stays in use, then
 * (on job-complete) switches SRC's users over to DST.
 *
 * A dirty bitmap registered with SRC's write tracking (lib/dirty.c)
 * holds what DST still lacks: everything at the start (sync=full), what
 * SRC's own layer allocates (top), or nothing (none); every write to
 * SRC sets its bits again.  The job claims a run of dirty bits (clears
 * them under SRC's dirty_lock), copies it, and on failure sets the bits
 * again.  A write that lands while a run is being copied re-dirties it,
 * so the copy converges.  Once the bitmap is clean the job is ready and
 * keeps copying new writes.  On completion the switch_over callback
 * holds SRC's users back, the last dirty runs are copied and DST
 * flushed, and the users move to DST.  A soft cancel of a ready job does
 * the same without the switch.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitmap.h"
#include "checked.h"
#include "dirty.h"
#include "error.h"
#include "io.h"
#include "jobs.h"
#include "vimg.h"

#define CHUNK (1u << 20)

struct mirror {
    struct job *job;
    struct node *src, *dst;
    struct mirror_params p;
    struct bitmap *dirty; /* by src->dirty_lock while tracked */
    bool tracked;
    uint64_t done;
};

/* Claim the next dirty run at or after *POS: [*S, *E). */
static bool
claim(struct mirror *m, uint64_t *pos, uint64_t *s, uint64_t *e)
{
    uint64_t size = bitmap_size(m->dirty);
    int64_t t, c;

    dirty_lock(m->src);
    t = bitmap_next_dirty(m->dirty, *pos, size);
    if (t < 0 && *pos > 0)
        t = bitmap_next_dirty(m->dirty, 0, size);
    if (t >= 0) {
        uint64_t lim = MIN(size, (uint64_t)t + CHUNK);

        c = bitmap_next_clean(m->dirty, (uint64_t)t, lim);
        *s = (uint64_t)t;
        *e = c < 0 ? lim : (uint64_t)c;
        bitmap_reset(m->dirty, *s, *e - *s);
        *pos = *e;
    }
    dirty_unlock(m->src);
    return t >= 0;
}

static uint64_t
remaining(struct mirror *m)
{
    uint64_t n;

    dirty_lock(m->src);
    n = bitmap_count(m->dirty);
    dirty_unlock(m->src);
    return n;
}

static void
redirty(struct mirror *m, uint64_t s, uint64_t e)
{
    dirty_lock(m->src);
    bitmap_set(m->dirty, s, e - s);
    dirty_unlock(m->src);
}

/* Copy one claimed run; on error, act as on-*-error says.  Returns -1
 * when the job must fail. */
static int
copy_run(struct mirror *m, uint64_t s, uint64_t e)
{
    bool is_read;
    int r;

    if (job_copy_range(m->src, m->dst, s, e - s, 0, &is_read) == 0) {
        m->done += e - s;
        job_set_progress(m->job, m->done, m->done + remaining(m));
        return 0;
    }
    r = job_copy_failed(m->job, is_read ? m->p.on_source_error
                                        : m->p.on_target_error,
                        is_read);
    redirty(m, s, e); /* retried: ignore and stop as QEMU */
    return r;
}

/* With SRC's users held back: copy what is left, flush DST. */
static int
final_sync(void *opaque)
{
    struct mirror *m = opaque;
    uint64_t pos = 0, s, e;

    while (claim(m, &pos, &s, &e))
        if (copy_run(m, s, e) == -1)
            return -1;
    return node_flush(m->dst);
}

static int
finish(struct mirror *m, bool do_switch)
{
    if (!m->p.switch_over)
        return final_sync(m);
    return m->p.switch_over(m->p.opaque, m->src, m->dst, do_switch,
                            final_sync, m);
}

static int
mirror_run(struct job *j)
{
    struct mirror *m = j->opaque;
    uint64_t pos = 0, s, e;
    bool ready = false;

    for (;;) {
        if (job_pause_point(j)) {
            if (ready && job_cancel_is_soft(j))
                return finish(m, false);
            return 0;
        }
        if (claim(m, &pos, &s, &e)) {
            if (copy_run(m, s, e) == -1)
                return -1;
            job_rate_limit(j, e - s);
            continue;
        }
        if (!ready) {
            job_set_progress(j, m->done, m->done);
            job_set_ready(j);
            ready = true;
        }
        if (job_should_complete(j))
            return finish(m, true);
        usleep(10000); /* wait for new writes */
    }
}

static void
mirror_clean(struct job *j)
{
    struct mirror *m = j->opaque;

    if (m->tracked) {
        dirty_lock(m->src);
        dirty_untrack_locked(m->src, m->dirty);
        dirty_unlock(m->src);
    }
    bitmap_free(m->dirty);
    node_unref(m->src);
    node_unref(m->dst);
    free(m);
}

static const struct job_driver mirror_driver = {
    .type = "mirror",
    .run = mirror_run,
    .clean = mirror_clean,
};

/* Active commit is a mirror into the chain's base, called "commit". */
static const struct job_driver commit_active_driver = {
    .type = "commit",
    .run = mirror_run,
    .clean = mirror_clean,
};

/* Mark what the sync mode copies (SRC drained). */
static int
fill(struct mirror *m)
{
    uint64_t size = m->src->size, off = 0;
    struct vimg_extent ve;
    bool dst_zero;

    if (m->p.sync == MIRROR_SYNC_NONE)
        return 0;
    if (m->p.sync == MIRROR_SYNC_FULL) {
        if (node_block_status(m->dst, true, 0, size, &ve) == -1)
            return -1;
        dst_zero = (ve.flags & VIMG_EXT_ZERO) && ve.length == size;
        while (off < size) {
            if (node_block_status(m->src, false, off, size - off, &ve) == -1)
                return -1;
            if (!dst_zero || !(ve.flags & VIMG_EXT_ZERO))
                bitmap_set(m->dirty, off, ve.length);
            off += ve.length;
        }
        return 0;
    }
    while (off < size) {
        int top = m->p.top_depth ? m->p.top_depth : 1;

        if (node_block_status(m->src, false, off, size - off, &ve) == -1)
            return -1;
        if ((ve.flags & VIMG_EXT_ALLOCATED) && ve.depth < top)
            bitmap_set(m->dirty, off, ve.length);
        off += ve.length;
    }
    return 0;
}

struct job *
mirror_create(struct job_registry *reg, const char *id,
              const struct mirror_params *p, bool auto_finalize,
              bool auto_dismiss, uint64_t speed)
{
    uint32_t gran = p->granularity ? p->granularity : 65536;
    struct mirror *m;
    struct job *j;
    int r;

    if (p->src->size != p->dst->size) {
        vimg_error(EINVAL, "Source and target image have different sizes");
        return NULL;
    }
    if (!(p->dst->flags & NODE_RDWR)) {
        vimg_error(EROFS, "Target node '%s' is read-only",
                   p->dst->node_name);
        return NULL;
    }
    if (gran < 512 || gran > (64u << 20) || (gran & (gran - 1))) {
        vimg_error(EINVAL, "Parameter 'granularity' expects a power of 2 "
                           "between 512 and 64M");
        return NULL;
    }
    m = calloc(1, sizeof *m);
    if (!m || !(m->dirty = bitmap_new(p->src->size ? p->src->size : 1,
                                      gran))) {
        free(m);
        vimg_error(ENOMEM, "out of memory");
        return NULL;
    }
    m->p = *p;
    m->src = p->src;
    m->dst = p->dst;
    node_ref(m->src);
    node_ref(m->dst);
    j = job_create(reg, id, p->commit ? &commit_active_driver
                                      : &mirror_driver,
                   m, auto_finalize, auto_dismiss, speed, NULL);
    if (!j) {
        mirror_clean(&(struct job){ .opaque = m });
        return NULL;
    }
    m->job = j;
    /* From here on every write to SRC is recorded. */
    node_drain_begin(m->src);
    r = fill(m);
    if (r == 0) {
        dirty_lock(m->src);
        r = dirty_track_locked(m->src, m->dirty);
        m->tracked = r == 0;
        dirty_unlock(m->src);
    }
    node_drain_end(m->src);
    if (r == -1) {
        char *msg = strdup(vimg_get_error());

        job_discard(j);
        vimg_error(EINVAL, "%s", msg ? msg : "mirror failed");
        free(msg);
        return NULL;
    }
    job_set_progress(j, 0, remaining(m));
    return j;
}
