/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 write path for runs of whole clusters (the bulk of convert,
 * commit and stream): one lock section looks up every cluster of a batch
 * and allocates all the clusters that need a new host cluster as one
 * contiguous run; the caller's buffer is then written outside the lock,
 * with no bounce copy and one node_pwrite per contiguous host range; a
 * second lock section installs the L2 entries and queues the frees of
 * the clusters they replace.  Partial clusters stay in alloc.c.
 *
 * Why the gap between the sections is safe: io.c serialises write-type
 * requests per cluster, so no other request changes these clusters' L2
 * entries meanwhile.  A fresh cluster has its refcount raised (and
 * need_sync set) in the first section but is reachable from no L2 table
 * until the second, so concurrent readers see the old mapping until its
 * data is written.  The second section sets need_sync again, so the L2
 * write-back (l2.c) syncs the data before the entries that point to it
 * (DESIGN.md).  If a data write fails, the fresh clusters are queued for
 * freeing and no entry changes.
 *
 * Locking: takes s->lock itself; data I/O runs without it.
 */
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "io.h"
#include "qcow2.h"

#define RUN_MAX 256 /* clusters per batch (state is on the stack) */

enum run_kind {
    RUN_PLAIN,   /* in place, entry unchanged */
    RUN_INSTALL, /* host kept, entry rewritten after the data */
    RUN_ALLOC,   /* fresh host cluster, old one freed after install */
};

struct run_cl {
    uint64_t host;
    struct qcow2_l2e old, ne;
    enum run_kind kind;
};

/* Decide how to write the whole guest cluster CL whose entry is E (the
 * same outcome as alloc.c's write_cluster for a full cluster). */
static void
plan(const struct qcow2_state *s, uint64_t cl, const struct qcow2_l2e *e,
     struct run_cl *r)
{
    bool compressed = e->entry & QCOW2_OFLAG_COMPRESSED;
    bool copied = e->entry & QCOW2_OFLAG_COPIED;
    bool inplace = !compressed && copied && qcow2_entry_has_host(s, e->entry);

    r->old = *e;
    if (inplace && !s->extl2 && (e->entry & QCOW2_OFLAG_ZERO))
        inplace = false;
    if (inplace) {
        r->host = s->data_file_name ? cl : e->entry & QCOW2_OFFSET_MASK;
        r->ne = *e;
        r->ne.bitmap = QCOW2_SC_ALL;
        r->kind =
            s->extl2 && e->bitmap != QCOW2_SC_ALL ? RUN_INSTALL : RUN_PLAIN;
        return;
    }
    r->ne.entry = QCOW2_OFLAG_COPIED;
    r->ne.bitmap = s->extl2 ? QCOW2_SC_ALL : 0;
    if (s->data_file_name) {
        r->host = cl; /* guest offset = host offset */
        r->kind = RUN_INSTALL;
    } else if (!compressed && copied && (e->entry & QCOW2_OFFSET_MASK)) {
        r->host = e->entry & QCOW2_OFFSET_MASK; /* ours: zero-allocated */
        r->kind = RUN_INSTALL;
    } else {
        r->host = 0; /* set by map_locked */
        r->kind = RUN_ALLOC;
    }
    r->ne.entry |= r->host;
}

/* First section: plan the N clusters at OFF, allocate the fresh ones. */
static int
map_locked(struct qcow2_state *s, uint64_t off, uint32_t n, struct run_cl *r)
{
    uint64_t need = 0;
    int64_t h;

    if (qcow2_before_write_locked(s) == -1)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t cl = off + ((uint64_t)i << s->cluster_bits);
        struct qcow2_l2e e;
        if (qcow2_lookup_locked(s, cl, &e) == -1)
            return -1;
        plan(s, cl, &e, &r[i]);
        need += r[i].kind == RUN_ALLOC;
    }
    if (!need)
        return 0;
    h = qcow2_alloc_clusters_locked(s, need);
    if (h == -1)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        if (r[i].kind != RUN_ALLOC)
            continue;
        r[i].host = h;
        r[i].ne.entry |= h;
        h += s->cluster_size;
    }
    return 0;
}

/* Unlocked: write BUF for the N clusters, one pwrite per host run. */
static int
write_data(struct qcow2_state *s, const uint8_t *buf, uint32_t n,
           const struct run_cl *r)
{
    for (uint32_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && r[j].host == r[j - 1].host + s->cluster_size;
             j++)
            ;
        if (node_pwrite(s->data, buf + ((uint64_t)i << s->cluster_bits),
                        (uint64_t)(j - i) << s->cluster_bits, r[i].host,
                        0) == -1)
            return -1;
    }
    return 0;
}

/* Second section: install the changed entries, queue the frees. */
static int
install_locked(struct qcow2_state *s, uint64_t off, uint32_t n,
               const struct run_cl *r)
{
    bool any = false;

    for (uint32_t i = 0; i < n; i++) {
        uint64_t cl = off + ((uint64_t)i << s->cluster_bits);
        if (r[i].kind == RUN_PLAIN)
            continue;
        if (!any) {
            s->need_sync = true; /* the data goes to disk first */
            any = true;
        }
        if (qcow2_set_entry_locked(s, cl, &r[i].ne) == -1)
            return -1;
        if (r[i].kind == RUN_ALLOC && qcow2_entry_has_host(s, r[i].old.entry) &&
            qcow2_free_entry_locked(s, r[i].old.entry) == -1)
            return -1;
    }
    return any ? qcow2_maybe_flush_locked(s) : 0;
}

/* The data write failed: give the fresh clusters back. */
static void
unmap_locked(struct qcow2_state *s, uint32_t n, const struct run_cl *r)
{
    for (uint32_t i = 0; i < n; i++)
        if (r[i].kind == RUN_ALLOC &&
            qcow2_free_clusters_later_locked(s, r[i].host, 1) == -1)
            return; /* leaked: check repairs it */
}

static int
write_batch(struct qcow2_state *s, const uint8_t *buf, uint64_t off, uint32_t n)
{
    struct run_cl r[RUN_MAX];
    int ret;

    pthread_mutex_lock(&s->lock);
    ret = map_locked(s, off, n, r);
    pthread_mutex_unlock(&s->lock);
    if (ret == -1)
        return -1;
    ret = write_data(s, buf, n, r);
    pthread_mutex_lock(&s->lock);
    if (ret == -1)
        unmap_locked(s, n, r);
    else
        ret = install_locked(s, off, n, r);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int
qcow2_write_whole(struct qcow2_state *s, const uint8_t *buf, uint64_t off,
                  uint64_t count)
{
    while (count) {
        uint32_t n = MIN(count >> s->cluster_bits, RUN_MAX);
        uint64_t len = (uint64_t)n << s->cluster_bits;
        if (write_batch(s, buf, off, n) == -1)
            return -1;
        buf += len;
        off += len;
        count -= len;
    }
    return 0;
}
