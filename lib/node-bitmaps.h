/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A node's dirty bitmaps as QMP sees them: in-memory (non-persistent)
 * bitmaps kept here, and the format's persistent ones (qcow2), behind
 * one set of calls.  An in-memory bitmap lives as long as the node; it
 * records writes through lib/dirty.c while enabled.
 */
#ifndef VIMG_NODE_BITMAPS_H
#define VIMG_NODE_BITMAPS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "node.h"

struct bitmap;

/* Add bitmap NAME: persistent (the format stores it) or in memory.
 * GRANULARITY 0: the default (the cluster size within 4k..64k, else
 * 64k).  -1 + vimg_error ("Bitmap already exists: NAME"). */
int node_bitmap_add(struct node *n, const char *name, uint32_t granularity,
                    bool persistent, bool disabled);
/* Remove, clear, enable, disable NAME, or merge A->src/A->src_name into
 * it (one action, A->next ignored).  -1 + vimg_error. */
int node_bitmap_action(struct node *n, const struct bitmap_action *a);
/* Run FN on the live content of NAME with n->dirty_lock held (see the
 * driver's bitmap_live); ENOENT if N has no such bitmap. */
int node_bitmap_with(struct node *n, const char *name,
                     int (*fn)(struct bitmap *bm, void *opaque),
                     void *opaque);
/* A copy of NAME's content (caller frees); NULL + vimg_error (ENOENT,
 * or EINVAL for an inconsistent persistent bitmap). */
struct bitmap *node_bitmap_copy(struct node *n, const char *name);
/* Does NAME record writes?  False if absent. */
bool node_bitmap_recording(struct node *n, const char *name);
/* query-named-block-nodes entries for the in-memory bitmaps (new
 * reference, an array). */
json_t *node_mem_bitmaps_json(struct node *n);
/* Free the in-memory bitmaps (node close). */
void node_mem_bitmaps_free(struct node *n);

#endif
