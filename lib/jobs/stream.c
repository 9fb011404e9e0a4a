/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The stream job: makes an image independent of the layers of its
 * backing chain above BASE while it stays in use.
 *
 * The job walks TOP's chain with block status: every range allocated
 * by a layer between TOP and BASE (exclusive) is copied into TOP with
 * node_populate(), which holds the range against writes so that a newer
 * write to TOP is never overwritten.  When all is copied, TOP is
 * drained and its backing link changes to BASE (metadata first, then
 * the graph); the layers in between are released.  A cancelled stream
 * leaves TOP as it was, apart from data it now holds itself (the same
 * content).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "io.h"
#include "jobs.h"
#include "vimg.h"

#define CHUNK (1u << 20)

struct stream {
    struct job *job;
    struct node *top, *base;
    char *backing_file;
    enum job_on_error on_error;
};

/* Depth of BASE in TOP's chain (TOP = 0), INT_MAX for none. */
static int
base_depth(struct stream *s)
{
    int d = 0;

    if (!s->base)
        return INT_MAX;
    for (struct node *n = s->top; n; n = n->backing, d++)
        if (n == s->base)
            return d;
    return INT_MAX;
}

static int
stream_run(struct job *j)
{
    struct stream *s = j->opaque;
    uint64_t size = s->top->size, off = 0;
    int bd = base_depth(s);

    job_set_progress(j, 0, size);
    while (off < size) {
        struct vimg_extent e;
        uint64_t len;

        if (job_pause_point(j))
            return 0;
        if (node_block_status(s->top, false, off, MIN(size - off, CHUNK),
                              &e) == -1)
            return -1;
        len = e.length;
        if ((e.flags & VIMG_EXT_ALLOCATED) && e.depth > 0 && e.depth < bd &&
            !(bd == INT_MAX && (e.flags & VIMG_EXT_ZERO)) &&
            node_populate(s->top, off, len) == -1) {
            if (job_copy_failed(j, s->on_error, true) == -1)
                return -1;
            continue; /* ignore and stop retry (stop after resume) */
        }
        off += len;
        job_set_progress(j, off, size);
        job_rate_limit(j, len);
    }
    return node_flush(s->top);
}

/* Point TOP at BASE: the image's metadata first, then the graph. */
static int
stream_commit(struct job *j)
{
    struct stream *s = j->opaque;

    return node_change_backing(s->top, s->base, s->backing_file);
}

static void
stream_clean(struct job *j)
{
    struct stream *s = j->opaque;

    node_unref(s->top);
    node_unref(s->base);
    free(s->backing_file);
    free(s);
}

static const struct job_driver stream_driver = {
    .type = "stream",
    .run = stream_run,
    .commit = stream_commit,
    .clean = stream_clean,
};

struct job *
stream_create(struct job_registry *reg, const char *id,
              const struct stream_params *p, bool auto_finalize,
              bool auto_dismiss, uint64_t speed)
{
    struct stream *s;
    struct job *j;

    if (!(p->top->flags & NODE_RDWR)) {
        vimg_error(EROFS, "Node '%s' is read-only", p->top->node_name);
        return NULL;
    }
    if (p->base) {
        struct node *n = p->top->backing;

        while (n && n != p->base)
            n = n->backing;
        if (!n) {
            vimg_error(EINVAL, "Node '%s' is not a backing image of '%s'",
                       p->base->node_name, p->top->node_name);
            return NULL;
        }
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        vimg_error(ENOMEM, "out of memory");
        return NULL;
    }
    s->top = p->top;
    s->base = p->base;
    s->on_error = p->on_error;
    s->backing_file = p->backing_file ? strdup(p->backing_file) : NULL;
    node_ref(s->top);
    if (s->base)
        node_ref(s->base);
    j = job_create(reg, id, &stream_driver, s, auto_finalize, auto_dismiss,
                   speed, NULL);
    if (!j)
        stream_clean(&(struct job){ .opaque = s });
    else
        s->job = j;
    return j;
}
