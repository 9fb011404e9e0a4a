/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 measure (qemu-img measure -O qcow2): the bytes a new qcow2 image
 * needs, computed exactly as QEMU 7.2's qcow2_measure() does, so the
 * numbers are the same: the fully allocated size is the data plus the
 * header, the L2 and L1 tables and the refcount structure that covers
 * all of it (a fixed point); the required size drops the data clusters
 * that the source does not hold (block status of the whole chain: a
 * cluster counts when any byte of it holds data and is not known zero).
 *
 * No locking of its own: it reads the source through lib/io.c.
 */
#include <errno.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "io.h"
#include "options.h"
#include "qcow2.h"

struct measure_opts {
    uint64_t size, cluster_size, refcount_bits;
    unsigned version;
    bool extended_l2, full, backing;
};

static bool
pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

/* Parse and check the create options the way qcow2_measure() does,
 * with the same messages, in the same order. */
static int
parse(json_t *opts, struct measure_opts *o)
{
    static const char *const keys[] = {
        "size", "cluster_size", "compat", "backing_file", "backing_fmt",
        "lazy_refcounts", "preallocation", "refcount_bits",
        "compression_type", "extended_l2", "data_file", "data_file_raw",
        "nocow", "extent_size_hint", NULL };
    const char *v;

    memset(o, 0, sizeof *o);
    if (opts_check_keys(opts, keys, "the 'qcow2' format") == -1 ||
        opts_get_bool(opts, "extended_l2", false, &o->extended_l2) == -1 ||
        opts_get_size(opts, "cluster_size", 65536, &o->cluster_size) == -1 ||
        opts_get_size(opts, "size", 0, &o->size) == -1)
        return -1;
    if (!pow2(o->cluster_size) || o->cluster_size < 512 ||
        o->cluster_size > (1u << QCOW2_MAX_CLUSTER_BITS)) {
        vimg_error(EINVAL, "Cluster size must be a power of two between "
                   "512 and 2048k");
        return -1;
    }
    if (o->extended_l2 && o->cluster_size < 16384) {
        vimg_error(EINVAL, "Extended L2 entries are only supported with "
                   "cluster sizes of at least 16384 bytes");
        return -1;
    }
    o->version = 3;
    if ((v = opts_get_str(opts, "compat"))) {
        if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
            o->version = 2;
        else if (strcmp(v, "1.1") && strcmp(v, "v3")) {
            vimg_error(EINVAL, "Invalid compatibility level: '%s'", v);
            return -1;
        }
    }
    if (opts_get_size(opts, "refcount_bits", 16, &o->refcount_bits) == -1)
        return -1;
    if (!pow2(o->refcount_bits) || o->refcount_bits > 64) {
        vimg_error(EINVAL, "Refcount width must be a power of two and may "
                   "not exceed 64 bits");
        return -1;
    }
    if (o->version < 3 && o->refcount_bits != 16) {
        vimg_error(EINVAL, "Different refcount widths than 16 bits require "
                   "compatibility level 1.1 or above (use compat=1.1 or "
                   "greater)");
        return -1;
    }
    if ((v = opts_get_str(opts, "preallocation"))) {
        if (!strcmp(v, "full") || !strcmp(v, "falloc"))
            o->full = true;
        else if (strcmp(v, "off") && strcmp(v, "metadata")) {
            vimg_error(EINVAL, "invalid parameter value: %s", v);
            return -1;
        }
    }
    v = opts_get_str(opts, "backing_file");
    o->backing = v != NULL;
    return 0;
}

/* qcow2_refcount_metadata_size(): refcount blocks and table clusters
 * that count CLUSTERS clusters and themselves. */
static uint64_t
refcount_metadata_size(uint64_t clusters, uint64_t cs, uint64_t rbits)
{
    uint64_t per_table = cs / 8, per_block = cs * 8 / rbits;
    uint64_t table = 0, blocks = 0, n = 0, last;

    do {
        last = n;
        blocks = DIV_ROUND_UP(clusters + table + blocks, per_block);
        table = DIV_ROUND_UP(blocks, per_table);
        n = clusters + blocks + table;
    } while (n != last);
    return (blocks + table) * cs;
}

/* qcow2_calc_prealloc_size(). */
static uint64_t
prealloc_size(uint64_t total, uint64_t cs, uint64_t rbits, bool extl2)
{
    uint64_t aligned = ALIGN_UP(total, cs), meta = cs, nl1e, nl2e;
    uint64_t l2e = extl2 ? 16 : 8;

    nl2e = ALIGN_UP(aligned / cs, cs / l2e);
    meta += nl2e * l2e;
    nl1e = ALIGN_UP(nl2e * l2e / cs, cs / 8);
    meta += nl1e * 8;
    meta += refcount_metadata_size((meta + aligned) / cs, cs, rbits);
    return meta + aligned;
}

/* Bytes of whole clusters of SRC that hold data. */
static int
data_clusters(struct node *src, uint64_t cs, uint64_t *required)
{
    uint64_t size = src->size, off = 0;

    *required = 0;
    while (off < size) {
        struct vimg_extent e;
        uint64_t len;

        if (node_block_status(src, true, off, size - off, &e) == -1) {
            vimg_error_prefix("Unable to get block status");
            return -1;
        }
        len = e.length;
        if (!(e.flags & VIMG_EXT_ZERO) && (e.flags & VIMG_EXT_DATA) &&
            (e.flags & VIMG_EXT_ALLOCATED)) {
            len = ALIGN_UP(off + len, cs) - off;
            *required += off % cs + len;
        }
        off += len;
    }
    return 0;
}

int
qcow2_measure(json_t *opts, struct node *src, uint64_t *required,
              uint64_t *fully_allocated)
{
    struct measure_opts o;
    uint64_t vsize, need = 0, l2_tables;

    if (parse(opts, &o) == -1)
        return -1;
    vsize = ALIGN_UP(o.size, o.cluster_size);
    l2_tables = DIV_ROUND_UP(vsize / o.cluster_size,
                             o.cluster_size / (o.extended_l2 ? 16 : 8));
    /* qemu checks the size given with --size / -o size only. */
    if (!src && l2_tables * 8 > QCOW2_MAX_L1_BYTES) {
        vimg_error(EFBIG, "The image size is too large (try using a larger "
                   "cluster size)");
        return -1;
    }
    if (src) {
        vsize = ALIGN_UP(src->size, o.cluster_size);
        if (o.backing)
            need = vsize; /* nothing known to be shared: count it all */
        else if (data_clusters(src, o.cluster_size, &need) == -1)
            return -1;
    }
    if (o.full)
        need = vsize;
    *fully_allocated = prealloc_size(vsize, o.cluster_size, o.refcount_bits,
                                     o.extended_l2);
    *required = *fully_allocated - vsize + need;
    return 0;
}
