/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The request path (lib/io.c).  These are what every caller uses: the
 * public vimg_* I/O functions, the commands, and format drivers doing
 * I/O on their children (qcow2 reading its "file").
 *
 * On a protocol node they go straight to the driver, through an aligned
 * bounce buffer (read-modify-write for writes) when the node needs
 * aligned requests (request_align > 1: O_DIRECT).  On a format node
 * they walk the backing chain (reads, block status), widen partial
 * writes to cow_align units (copy-on-write from the chain), serialise
 * overlapping write-type requests per serialise_align unit, and clip to
 * the node's size.  Ranges past the end fail with EINVAL (reads of a
 * backing node past its end are done by the parent as zeroes).
 */
#ifndef VIMG_IO_H
#define VIMG_IO_H

#include <stdint.h>

#include "node.h"

int node_pread(struct node *n, void *buf, uint64_t count, uint64_t off);
int node_pwrite(struct node *n, const void *buf, uint64_t count,
                uint64_t off, unsigned flags);
int node_pwrite_zeroes(struct node *n, uint64_t off, uint64_t count,
                       unsigned flags);
int node_discard(struct node *n, uint64_t off, uint64_t count);
/* Flush this node and then its children (file, data-file). */
int node_flush(struct node *n);
/* Whole-chain status of one extent at OFF (see struct vimg_extent). */
int node_block_status(struct node *n, bool want_zero, uint64_t off,
                      uint64_t count, struct vimg_extent *ext);
/* Copy-on-read: whatever N's backing chain shows in [OFF, OFF+COUNT)
 * and N itself does not allocate is written into N (widened to whole
 * cow_align units), atomically with respect to other writes to N, so a
 * newer write is never overwritten.  The content N shows is unchanged
 * (no bitmap marks, no hooks).  Live streaming uses it. */
int node_populate(struct node *n, uint64_t off, uint64_t count);
/* Where the data at OFF lives: like node_block_status (walking the
 * chain), but the extent is the allocating layer's own, with EXT_*
 * flags and, with EXT_OFFSET, the host offset in E->file (a protocol
 * node).  Unallocated ranges come back with flags 0 (read as zeroes). */
int node_map(struct node *n, uint64_t off, uint64_t count, struct extent *e);
/* This layer only, with the driver's EXT_* flags; a node without
 * block_status reports one allocated data extent. */
int node_block_status_layer(struct node *n, bool want_zero, uint64_t off,
                            uint64_t count, struct extent *ext);
int node_truncate(struct node *n, uint64_t size, enum prealloc prealloc);
/* Quiesce N: wait for its requests to finish and hold new ones back
 * (they wait) until node_drain_end, except those of the calling thread
 * (reads and block status; not writes).  Not nestable. */
void node_drain_begin(struct node *n);
void node_drain_end(struct node *n);

#endif
