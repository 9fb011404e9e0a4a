/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 consistency check: state shared by check.c (counting references
 * and comparing them with the stored refcounts) and repair.c (rebuilding
 * the refcount structure, fixing single entries, clearing the dirty and
 * corrupt bits).  Everything here runs with s->lock held.
 */
#ifndef VIMG_QCOW2_CHECK_H
#define VIMG_QCOW2_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "qcow2.h"

/* qemu's masks for the check (qcow2.h in QEMU). */
#define QCK_L2_STD_RESERVED 0x3f000000000001feull
#define QCK_RT_RESERVED 0x1ffull
#define QCK_BME_RESERVED 0xff000000000001feull
#define QCK_SC_ALLOC_MASK 0xffffffffull

/* QEMU's cluster types (qcow2_get_cluster_type). */
enum qck_type { QCK_UNALLOC, QCK_ZERO_PLAIN, QCK_ZERO_ALLOC, QCK_NORMAL,
                QCK_COMPRESSED };

struct qck {
    struct qcow2_state *s;
    struct check_result *r;
    uint64_t file_size;
    /* The in-memory refcount table (references counted so far), NREF
     * clusters, CAP allocated; counts saturate at MAX. */
    uint32_t *ref;
    uint64_t nref, cap;
    uint32_t max;
    bool rebuild;      /* the refcount structure must be rebuilt */
    uint64_t highest;  /* highest cluster with a refcount or reference */
    /* One stored refcount block, read directly from the file. */
    uint8_t *rb;
    uint64_t rb_off; /* 0: none loaded */
};

/* check.c */
/* Report one finding (printf format) through r->report. */
void qck_report(struct qck *ck, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Make the in-memory table cover N clusters (new ones zero). */
int qck_grow(struct qck *ck, uint64_t n);
/* Stored refcount of CLUSTER (0 without a block); -1 if unreadable. */
int qck_get_refcount(struct qck *ck, uint64_t cluster, uint64_t *rc);
/* Count all references into ck->ref; FIX may repair single entries. */
int qck_calculate(struct qck *ck, unsigned fix);
/* QEMU's cluster type of a descriptor. */
enum qck_type qck_type(const struct qcow2_state *s, uint64_t entry);

/* repair.c */
/* Write a new refcount structure from ck->ref into free clusters and
 * switch the header to it (crash-safe: one header write). */
int qck_rebuild_structure(struct qck *ck);
/* Rewrite the L2 entry IDX of the table at L2_OFF so that the guest
 * cluster reads as zeroes without a host cluster (unallocated on v2). */
int qck_zero_l2_entry(struct qck *ck, uint64_t l2_off, uint32_t idx);
/* Write L1 entry I of the active table (host order s->l1[i]); sync. */
int qck_write_l1_entry(struct qck *ck, uint32_t i);
/* Grow the image file so that it ends at SIZE. */
int qck_extend_file(struct qck *ck, uint64_t size);
/* Clear the dirty and corrupt bits (after a successful repair). */
int qck_mark_consistent(struct qck *ck);

#endif
