/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 operations on the layer as a whole, for commit, stream-local and
 * rebase: changing the recorded backing file, and emptying the layer.
 *
 * Both follow DESIGN.md's durability rules: everything written so far
 * (data and metadata) is flushed before the header changes how data is
 * read, and references are dropped (L1 written and synced) before the
 * refcounts they held are decreased (the pending-free queue applied by
 * qcow2_flush_all_locked).  Locking: s->lock throughout.
 */
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "error.h"
#include "io.h"
#include "qcow2.h"

int
qcow2_change_backing(struct node *n, const char *name, const char *fmt)
{
    struct qcow2_state *s = n->state;
    char *new_name = NULL, *new_fmt = NULL;
    LOCK_GUARD(&s->lock);

    if (name && s->data_file_name && s->raw_data) {
        vimg_error(EINVAL, "an image with a raw external data file cannot "
                   "have a backing file");
        return -1;
    }
    if ((name && !(new_name = strdup(name))) ||
        (name && fmt && !(new_fmt = strdup(fmt)))) {
        free(new_name);
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    if (qcow2_before_write_locked(s) == -1 ||
        qcow2_flush_all_locked(s) == -1 ||
        qcow2_header_write_locked(s, name, name ? fmt : NULL) == -1) {
        free(new_name);
        free(new_fmt);
        return -1;
    }
    free(n->backing_name);
    free(n->backing_fmt);
    n->backing_name = new_name;
    n->backing_fmt = new_fmt;
    return 0;
}

/* Drop L1 entry I: its L2 table and, unless a snapshot shares the table,
 * the clusters the table references.  Frees are queued. */
static int
drop_l1_entry_locked(struct qcow2_state *s, uint32_t i)
{
    uint64_t l2off = s->l1[i] & QCOW2_OFFSET_MASK, rc;

    if (!l2off)
        return 0;
    if (qcow2_refcount_get_locked(s, l2off >> s->cluster_bits, &rc) == -1)
        return -1;
    if (rc == 1) {
        for (uint32_t j = 0; j < s->l2_entries; j++) {
            const uint8_t *tbl = qcow2_l2_get_locked(s, l2off);
            struct qcow2_l2e e;

            if (!tbl)
                return -1;
            qcow2_l2_read_entry(s, tbl, j, &e);
            if (e.entry && qcow2_free_entry_locked(s, e.entry) == -1)
                return -1;
        }
    }
    qcow2_l2_forget_locked(s, l2off);
    if (qcow2_free_clusters_later_locked(s, l2off, 1) == -1)
        return -1;
    s->l1[i] = 0;
    return 0;
}

int
qcow2_make_empty(struct node *n)
{
    struct qcow2_state *s = n->state;
    LOCK_GUARD(&s->lock);

    /* Nothing dirty may be written back over a cluster freed below. */
    if (qcow2_before_write_locked(s) == -1 ||
        qcow2_flush_all_locked(s) == -1)
        return -1;
    for (uint32_t i = 0; i < s->l1_size; i++)
        if (drop_l1_entry_locked(s, i) == -1)
            return -1;
    if (qcow2_write_l1_locked(s) == -1)
        return -1;
    return qcow2_flush_all_locked(s);
}
