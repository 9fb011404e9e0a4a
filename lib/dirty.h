/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Write tracking: the bitmaps that every write to a node marks.
 *
 * A node keeps a list of tracked bitmaps (its enabled dirty bitmaps; later
 * also the internal bitmaps of jobs).  lib/io.c calls dirty_mark() after
 * each pwrite, pwrite_zeroes and discard on the node, whatever the result
 * (a failed write may have changed some of the range).  The owner of a
 * bitmap (the qcow2 driver for persistent bitmaps) registers it with
 * dirty_track() and must dirty_untrack() it before freeing it.
 *
 * Locking: n->dirty_lock protects the list and the content of every
 * tracked bitmap.  Anyone reading or changing a tracked bitmap holds it
 * (dirty_lock/dirty_unlock).  Lock order: a driver's own lock, then
 * dirty_lock; dirty_mark takes only dirty_lock.
 */
#ifndef VIMG_DIRTY_H
#define VIMG_DIRTY_H

#include <stdint.h>

#include "node.h"

struct bitmap;

/* Start marking BM (borrowed) on every write to N.  -1 + vimg_error
 * (ENOMEM) on failure.  Caller holds dirty_lock. */
int dirty_track_locked(struct node *n, struct bitmap *bm);
/* Stop marking BM; a no-op if it is not tracked.  Caller holds
 * dirty_lock. */
void dirty_untrack_locked(struct node *n, struct bitmap *bm);
/* Mark [OFF, OFF+LEN) in every bitmap tracked by N. */
void dirty_mark(struct node *n, uint64_t off, uint64_t len);

void dirty_lock(struct node *n);
void dirty_unlock(struct node *n);

#endif
