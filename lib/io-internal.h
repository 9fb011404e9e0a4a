/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared between lib/io.c (the request path) and lib/io-direct.c (the
 * aligned path of O_DIRECT protocol nodes); nothing else includes it.
 * Locking as in io.c: n->io_lock protects n->inflight, n->in_flight,
 * n->exclusive and protocol growth of n->size.
 */
#ifndef VIMG_IO_INTERNAL_H
#define VIMG_IO_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "node.h"

/* One in-flight write-type range of a node, on n->inflight. */
struct inflight {
    uint64_t start, end;
    struct inflight *next;
};

/* Filters (DRV_FILTER) take the protocol path too: they forward to
 * their file, which grows when a format appends to it. */
static inline bool
io_is_protocol(struct node *n)
{
    return n->drv->kind != DRV_FORMAT;
}

/* io.c */
/* Does [START, END) overlap an in-flight range?  Caller holds io_lock. */
bool io_overlaps_locked(struct node *n, uint64_t start, uint64_t end);
/* Drop a range taken with range_lock or io_direct_lock; wakes waiters. */
void io_range_unlock(struct node *n, struct inflight *r);
/* A protocol node's data now reaches END: grow n->size to it. */
void io_protocol_grow(struct node *n, uint64_t end);
/* Zero whole units through the driver, or by writing zero buffers. */
int io_zero_whole(struct node *n, uint64_t off, uint64_t count,
                  unsigned flags);

/* io-direct.c */
/* A protocol node with request_align > 1 (O_DIRECT). */
bool io_needs_align(struct node *n);
/* An uninitialised buffer aligned for N; free() it.  NULL + vimg_error. */
char *io_aligned_alloc(struct node *n, size_t len);
/* Hold [OFF, OFF+COUNT) widened to whole blocks (to the end of
 * everything when it reaches past the end of the file). */
void io_direct_lock(struct node *n, struct inflight *r, uint64_t off,
                    uint64_t count);
int io_direct_pread(struct node *n, char *buf, uint64_t count, uint64_t off);
/* Under io_direct_lock. */
int io_direct_pwrite_locked(struct node *n, const char *buf, uint64_t count,
                            uint64_t off, unsigned flags);
int io_direct_zeroes_locked(struct node *n, uint64_t off, uint64_t count,
                            unsigned flags);

#endif
