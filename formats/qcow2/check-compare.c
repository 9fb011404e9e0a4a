/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 check, second half: comparing the counted references with the
 * stored refcounts, the COPIED flags of the active tables, and the
 * driver's check callback that runs the whole sequence the way
 * qcow2_check_refcounts() and qcow2_co_check_locked() do in QEMU 7.2.
 * Also the dirty-bit repair run on a read-write open.  s->lock held
 * (qcow2_check takes it).
 */
#include <endian.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "io.h"

/* Write back and forget every cached refcount block; the check reads
 * them from the file. */
static int
sync_refcounts(struct qck *ck)
{
    struct qcow2_state *s = ck->s;

    ck->rb_off = 0;
    if (s->readonly)
        return 0;
    if (qcow2_flush_refcounts_locked(s) == -1)
        return -1;
    qcow2_cache_drop(&s->rb_cache);
    return 0;
}

static void
compare(struct qck *ck, unsigned fix)
{
    struct qcow2_state *s = ck->s;
    struct check_result *r = ck->r;

    ck->highest = 0;
    for (uint64_t i = 0; i < ck->nref; i++) {
        uint64_t rc, refs = ck->ref[i], *fixed = NULL;

        if (qck_get_refcount(ck, i, &rc) == -1) {
            qck_report(ck, "Can't get refcount for cluster %" PRIu64 ": %s",
                       i, vimg_get_error());
            r->check_errors++;
            continue;
        }
        if (rc || refs)
            ck->highest = i;
        if (rc == refs)
            continue;
        if (rc == 0)
            ck->rebuild = true;
        else if (rc > refs && (fix & CHECK_FIX_LEAKS))
            fixed = &r->leaks_fixed;
        else if (rc < refs && (fix & CHECK_FIX_ERRORS))
            fixed = &r->corruptions_fixed;
        qck_report(ck, "%s cluster %" PRIu64 " refcount=%" PRIu64
                   " reference=%" PRIu64,
                   fixed ? "Repairing" : rc < refs ? "ERROR" : "Leaked", i,
                   rc, refs);
        if (fixed) {
            if (qcow2_refcount_update_locked(s, i, (int64_t)(refs - rc)) ==
                0) {
                (*fixed)++;
                continue;
            }
            qck_report(ck, "ERROR: %s", vimg_get_error());
        }
        if (rc < refs)
            r->corruptions++;
        else
            r->leaks++;
    }
}

/* The COPIED flags of one active L2 table. */
static int
copied_l2(struct qck *ck, uint64_t l2_off, bool repair, uint8_t *tbl)
{
    struct qcow2_state *s = ck->s;
    bool data_file = s->incompat & QCOW2_INCOMPAT_DATA_FILE;
    uint64_t dirty = 0;

    if (node_pread(s->node->file, tbl, s->cluster_size, l2_off) == -1) {
        qck_report(ck, "ERROR: Could not read L2 table: %s",
                   vimg_get_error());
        ck->r->check_errors++;
        return -1;
    }
    for (uint32_t j = 0; j < s->l2_entries; j++) {
        struct qcow2_l2e e;
        enum qck_type t;
        uint64_t rc = 1;

        qcow2_l2_read_entry(s, tbl, j, &e);
        t = qck_type(s, e.entry);
        if (t != QCK_NORMAL && t != QCK_ZERO_ALLOC)
            continue;
        if (!data_file &&
            qck_get_refcount(ck, (e.entry & QCOW2_OFFSET_MASK) >>
                                     s->cluster_bits, &rc) == -1)
            continue;
        if ((rc == 1) == !!(e.entry & QCOW2_OFLAG_COPIED))
            continue;
        ck->r->corruptions++;
        qck_report(ck, "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64
                   " refcount=%" PRIu64, repair ? "Repairing" : "ERROR",
                   e.entry, rc);
        if (repair) {
            e.entry = rc == 1 ? e.entry | QCOW2_OFLAG_COPIED
                              : e.entry & ~QCOW2_OFLAG_COPIED;
            qcow2_l2_write_entry(s, tbl, j, &e);
            dirty++;
        }
    }
    if (!dirty)
        return 0;
    if (node_pwrite(s->node->file, tbl, s->cluster_size, l2_off, 0) == -1) {
        qck_report(ck, "ERROR: Could not write L2 table: %s",
                   vimg_get_error());
        ck->r->check_errors++;
        return -1;
    }
    ck->r->corruptions -= dirty;
    ck->r->corruptions_fixed += dirty;
    return 0;
}

static int
check_copied(struct qck *ck, unsigned fix)
{
    struct qcow2_state *s = ck->s;
    struct check_result *r = ck->r;
    CLEANUP_FREE uint8_t *tbl = malloc(s->cluster_size);
    bool repair;

    if (!tbl) {
        vimg_error(errno, "malloc: %m");
        r->check_errors++;
        return -1;
    }
    if (fix & CHECK_FIX_ERRORS)
        repair = true;
    else if (fix & CHECK_FIX_LEAKS)
        repair = !r->check_errors && !r->corruptions && !r->leaks;
    else
        repair = false;
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t e = s->l1[i], l2 = e & QCOW2_OFFSET_MASK, rc;

        if (!l2 || qck_get_refcount(ck, l2 >> s->cluster_bits, &rc) == -1)
            continue;
        if ((rc == 1) != !!(e & QCOW2_OFLAG_COPIED)) {
            r->corruptions++;
            qck_report(ck, "%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu32
                       " l1_entry=%" PRIx64 " refcount=%" PRIu64,
                       repair ? "Repairing" : "ERROR", i, e, rc);
            if (repair) {
                s->l1[i] = rc == 1 ? e | QCOW2_OFLAG_COPIED
                                   : e & ~QCOW2_OFLAG_COPIED;
                if (qck_write_l1_entry(ck, i) == -1) {
                    r->check_errors++;
                    return -1;
                }
                r->corruptions--;
                r->corruptions_fixed++;
            }
        }
        if (copied_l2(ck, l2, repair, tbl) == -1)
            return -1;
    }
    return 0;
}

/* After a rebuild: count again, free the old structure (a leak now). */
static int
after_rebuild(struct qck *ck, unsigned fix)
{
    struct check_result *r = ck->r, old = *r, saved;
    uint64_t fresh_leaks = 0;

    r->corruptions = r->leaks = 0;
    ck->rebuild = false;
    memset(ck->ref, 0, ck->nref * sizeof *ck->ref);
    if (qck_calculate(ck, 0) == -1)
        return -1;
    if (fix & CHECK_FIX_LEAKS) {
        saved = *r;
        memset(r, 0, offsetof(struct check_result, report));
        compare(ck, CHECK_FIX_LEAKS);
        if (ck->rebuild)
            qck_report(ck, "ERROR rebuilt refcount structure is still "
                       "broken");
        fresh_leaks = r->leaks;
        *r = saved;
    }
    if (r->corruptions < old.corruptions)
        r->corruptions_fixed += old.corruptions - r->corruptions;
    if (r->leaks < old.leaks)
        r->leaks_fixed += old.leaks - r->leaks;
    r->leaks += fresh_leaks;
    return 0;
}

/* qcow2_check_refcounts: the whole check of the refcounts. */
static int
check_refcounts(struct qck *ck, unsigned fix)
{
    struct qcow2_state *s = ck->s;
    struct check_result *r = ck->r, pre;

    if (qck_grow(ck, DIV_ROUND_UP(ck->file_size, s->cluster_size)) == -1) {
        r->check_errors++;
        return -1;
    }
    r->total_clusters = DIV_ROUND_UP(s->node->size, s->cluster_size);
    r->has_cluster_stats = true;
    if (qck_calculate(ck, fix) == -1)
        return -1;
    pre = *r;
    compare(ck, 0);
    if (ck->rebuild && (fix & CHECK_FIX_ERRORS)) {
        qck_report(ck, "Rebuilding refcount structure");
        if (qck_rebuild_structure(ck) == -1) {
            qck_report(ck, "ERROR rebuilding the refcount structure: %s",
                       vimg_get_error());
            r->check_errors++;
            return -1;
        }
        if (after_rebuild(ck, fix) == -1)
            return -1;
    } else if (fix) {
        if (ck->rebuild) {
            qck_report(ck, "ERROR need to rebuild refcount structures");
            r->check_errors++;
            vimg_error(EIO, "the refcount structure must be rebuilt "
                       "(use -r all)");
            return -1;
        }
        if (r->leaks || r->corruptions) {
            *r = pre;
            compare(ck, fix);
        }
    }
    if (sync_refcounts(ck) == -1) {
        r->check_errors++;
        return -1;
    }
    if (check_copied(ck, fix) == -1)
        return -1;
    r->image_end_offset = (ck->highest + 1) << s->cluster_bits;
    return 0;
}

static int
check_locked(struct qcow2_state *s, struct check_result *r, unsigned fix)
{
    struct qck ck = { .s = s, .r = r };
    int ret = -1;

    memset(r, 0, offsetof(struct check_result, report));
    if (fix && s->readonly) {
        vimg_error(EROFS, "the image must be opened read-write to repair "
                   "it");
        return -1;
    }
    ck.max = s->refcount_max > UINT32_MAX ? UINT32_MAX : s->refcount_max;
    ck.rb = malloc(s->cluster_size);
    if (!ck.rb) {
        vimg_error(errno, "malloc: %m");
        return -1;
    }
    /* Everything cached goes to the file first: tables are read from
     * there and rewritten there. */
    if (!s->readonly && qcow2_flush_all_locked(s) == -1)
        goto out;
    qcow2_cache_drop(&s->l2_cache);
    ck.file_size = s->node->file->size;
    if (check_refcounts(&ck, fix) == 0)
        ret = 0;
    if (!s->readonly) {
        if (sync_refcounts(&ck) == -1 || node_flush(s->node->file) == -1)
            ret = -1;
        qcow2_cache_drop(&s->l2_cache);
        s->free_hint = 1;
    }
    if (ret == 0 && fix && !r->check_errors && !r->corruptions &&
        qck_mark_consistent(&ck) == -1)
        ret = -1;
    if (ret == -1 && !r->check_errors)
        r->check_errors++;
out:
    free(ck.ref);
    free(ck.rb);
    return ret;
}

int
qcow2_check(struct node *n, struct check_result *r, unsigned fix)
{
    struct qcow2_state *s = n->state;
    LOCK_GUARD(&s->lock);

    return check_locked(s, r, fix);
}

int
qcow2_rebuild_refcounts_locked(struct qcow2_state *s)
{
    struct check_result r = { 0 };

    if (check_locked(s, &r, CHECK_FIX_LEAKS | CHECK_FIX_ERRORS) == -1)
        return -1;
    if (r.check_errors) {
        vimg_error(EIO, "could not repair the dirty image");
        return -1;
    }
    return 0;
}
