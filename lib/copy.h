/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The copy engine (lib/copy.c): one implementation behind vimg convert,
 * commit, stream-local and rebase (and, later, the live jobs).
 *
 * It copies [src_off, src_off+length) of SRC, read through SRC's chain,
 * to DST at dst_off, driven by block status: it never reads ranges the
 * chain reports unallocated or zero, and it only touches the ranges the
 * depth filter selects.  For every selected range, DST reads afterwards
 * what SRC read before (zeroes included), except where DIFF_AGAINST is
 * set: then only the parts whose content differs from DIFF_AGAINST at
 * the same offset are written (convert -B, rebase), so DST's backing
 * file keeps showing through elsewhere.
 *
 * Work is cut into chunks handed to WORKERS threads.  Without
 * OUT_OF_ORDER, writes land in offset order (qemu-img's default).
 */
#ifndef VIMG_COPY_H
#define VIMG_COPY_H

#include <stdbool.h>
#include <stdint.h>

#include "node.h"

struct copy_params {
    struct node *src;
    uint64_t src_off;
    struct node *dst;
    uint64_t dst_off;
    uint64_t length;

    /* Copy only ranges whose allocation depth in SRC's chain (0 = SRC
     * itself; the chain length for ranges no layer allocates) lies in
     * [min_depth, max_depth).  0 and INT_MAX select everything. */
    int min_depth, max_depth;

    bool target_is_zero;   /* DST already reads zero: skip zero ranges */
    uint64_t sparse_size;  /* -S: zero runs of at least this many bytes
                            * inside data are written as zeroes (holes,
                            * zero clusters); 0 = write data as read */
    bool compress;         /* REQ_COMPRESSED for whole clusters */
    struct node *diff_against; /* see above; NULL = copy everything */
    /* Copy only the granules dirty in this bitmap (in SRC offsets;
     * borrowed, not changed): an incremental copy.  NULL = no filter. */
    const struct bitmap *only_dirty;
    unsigned workers;      /* 1..16, default 8 (-m) */
    bool out_of_order;     /* -W */

    /* Progress: called from any thread with bytes done / total. */
    void (*progress)(void *opaque, uint64_t done, uint64_t total);
    void *opaque;
};

/* Run the copy; 0 or -1 with vimg_error (the first error of any worker;
 * the others stop).  DST is flushed before returning 0. */
int copy_run(const struct copy_params *p);

#endif
