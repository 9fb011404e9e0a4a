/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The commit job for a layer below the active one (intermediate
 * commit): the data that TOP and the layers between it and BASE hold
 * goes into BASE, then the node above TOP gets BASE as its backing (its
 * metadata first, then the graph, with that node drained) and the
 * layers in between are released.  Nothing writes to TOP and the
 * layers below it meanwhile (they are backing layers), so a plain copy
 * is consistent; what BASE shows through the chain does not change.
 * Active commit (TOP is the active layer) is a mirror: lib/jobs/mirror.c.
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

struct commit {
    struct node *above, *top, *base;
    char *backing_file;
    enum job_on_error on_error;
};

static int
depth_of(struct node *from, struct node *n)
{
    int d = 0;

    for (struct node *b = from; b; b = b->backing, d++)
        if (b == n)
            return d;
    return INT_MAX;
}

static int
commit_run(struct job *j)
{
    struct commit *c = j->opaque;
    uint64_t size = MIN(c->top->size, c->base->size), off = 0;
    int bd = depth_of(c->top, c->base);

    job_set_progress(j, 0, size);
    while (off < size) {
        struct vimg_extent e;
        bool is_read;
        uint64_t len;

        if (job_pause_point(j))
            return 0;
        if (node_block_status(c->top, false, off, MIN(size - off, CHUNK),
                              &e) == -1)
            return -1;
        len = e.length;
        if ((e.flags & VIMG_EXT_ALLOCATED) && e.depth < bd &&
            job_copy_range(c->top, c->base, off, len, 0, &is_read) == -1) {
            if (job_copy_failed(j, c->on_error, is_read) == -1)
                return -1;
            continue; /* ignore and stop retry (stop after resume) */
        }
        off += len;
        job_set_progress(j, off, size);
        job_rate_limit(j, len);
    }
    return node_flush(c->base);
}

static int
commit_commit(struct job *j)
{
    struct commit *c = j->opaque;

    return node_change_backing(c->above, c->base, c->backing_file);
}

static void
commit_clean(struct job *j)
{
    struct commit *c = j->opaque;

    node_unref(c->above);
    node_unref(c->top);
    node_unref(c->base);
    free(c->backing_file);
    free(c);
}

static const struct job_driver commit_driver = {
    .type = "commit",
    .run = commit_run,
    .commit = commit_commit,
    .clean = commit_clean,
};

struct job *
commit_create(struct job_registry *reg, const char *id,
              const struct commit_params *p, bool auto_finalize,
              bool auto_dismiss, uint64_t speed)
{
    struct commit *c;
    struct job *j;

    if (p->above->backing != p->top || depth_of(p->top, p->base) == INT_MAX ||
        p->top == p->base) {
        vimg_error(EINVAL, "'%s' is not in the backing chain of '%s' above "
                           "'%s'",
                   p->top->node_name, p->above->node_name,
                   p->base->node_name);
        return NULL;
    }
    if (node_reopen_rw(p->base) == -1)
        return NULL;
    c = calloc(1, sizeof *c);
    if (!c) {
        vimg_error(ENOMEM, "out of memory");
        return NULL;
    }
    c->above = p->above;
    c->top = p->top;
    c->base = p->base;
    c->on_error = p->on_error;
    c->backing_file = p->backing_file ? strdup(p->backing_file) : NULL;
    node_ref(c->above);
    node_ref(c->top);
    node_ref(c->base);
    j = job_create(reg, id, &commit_driver, c, auto_finalize, auto_dismiss,
                   speed, NULL);
    if (!j)
        commit_clean(&(struct job){ .opaque = c });
    return j;
}
