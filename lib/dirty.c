/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Write tracking (see dirty.h): a node's list of tracked bitmaps, marked
 * by lib/io.c after every write-type request.
 *
 * Locking: n->dirty_lock protects n->dirty (the list) and the content of
 * every bitmap on it.
 */
#include <stdlib.h>

#include "bitmap.h"
#include "dirty.h"

int
dirty_track_locked(struct node *n, struct bitmap *bm)
{
    for (size_t i = 0; i < n->dirty.len; i++)
        if (n->dirty.ptr[i] == bm)
            return 0;
    return bitmap_ptr_vector_append(&n->dirty, bm);
}

void
dirty_untrack_locked(struct node *n, struct bitmap *bm)
{
    for (size_t i = 0; i < n->dirty.len; i++) {
        if (n->dirty.ptr[i] != bm)
            continue;
        n->dirty.ptr[i] = n->dirty.ptr[--n->dirty.len];
        return;
    }
}

void
dirty_mark(struct node *n, uint64_t off, uint64_t len)
{
    dirty_lock(n);
    for (size_t i = 0; i < n->dirty.len; i++)
        bitmap_set(n->dirty.ptr[i], off, len);
    dirty_unlock(n);
}

void
dirty_lock(struct node *n)
{
    pthread_mutex_lock(&n->dirty_lock);
}

void
dirty_unlock(struct node *n)
{
    pthread_mutex_unlock(&n->dirty_lock);
}
