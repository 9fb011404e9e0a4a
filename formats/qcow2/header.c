/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 header: read and validate at open, parse the header extensions,
 * and rewrite the header cluster.
 *
 * Every value read here is input: each check fails with one short error
 * and never allocates more than the limits in qcow2.h.  The raw header
 * bytes (header_length of them) are kept in s->hdr_raw so that fields
 * we do not know survive a rewrite; all extensions are kept in file
 * order in s->exts, and the rewrite regenerates only those whose
 * content we own (backing format, data file, bitmaps).
 */
#include <endian.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "io.h"
#include "qcow2.h"

static int
parse_ext(struct qcow2_state *s, struct node *n, uint32_t type,
          const uint8_t *data, uint32_t len)
{
    uint64_t file_size = n->file->size;

    switch (type) {
    case QCOW2_EXT_BACKING_FMT:
        if (len > QCOW2_MAX_BACKING_NAME) {
            vimg_error(EINVAL, "backing format name too long");
            return -1;
        }
        free(n->backing_fmt);
        n->backing_fmt = strndup((const char *)data, len);
        if (!n->backing_fmt) {
            vimg_error(errno, "strndup: %m");
            return -1;
        }
        break;
    case QCOW2_EXT_DATA_FILE:
        free(s->data_file_name);
        s->data_file_name = strndup((const char *)data, len);
        if (!s->data_file_name) {
            vimg_error(errno, "strndup: %m");
            return -1;
        }
        break;
    case QCOW2_EXT_BITMAPS: {
        struct qcow2_bitmaps_ext b;
        if (len != sizeof b) {
            vimg_error(EINVAL, "bitmaps extension has invalid length");
            return -1;
        }
        memcpy(&b, data, sizeof b);
        b.nb_bitmaps = be32toh(b.nb_bitmaps);
        b.reserved = be32toh(b.reserved);
        b.directory_size = be64toh(b.directory_size);
        b.directory_offset = be64toh(b.directory_offset);
        if (b.reserved != 0 || b.nb_bitmaps == 0 || b.nb_bitmaps > 65535) {
            vimg_error(EINVAL, "bitmaps extension is invalid");
            return -1;
        }
        if (b.directory_size > QCOW2_MAX_SNAPSHOT_TABLE ||
            !IS_ALIGNED(b.directory_offset, s->cluster_size) ||
            b.directory_offset > file_size ||
            b.directory_size > file_size - b.directory_offset) {
            vimg_error(EINVAL, "bitmap directory beyond end of file");
            return -1;
        }
        s->has_bitmaps_ext = true;
        s->bitmaps_ext = b;
        break;
    }
    default:
        break;
    }
    return 0;
}

/* Walk the extension area [start, end) of the header cluster BUF. */
static int
read_extensions(struct qcow2_state *s, struct node *n, const uint8_t *buf,
                uint64_t start, uint64_t end)
{
    uint64_t pos = start;

    while (pos < end) {
        struct qcow2_ext_hdr h;
        struct qcow2_ext e;
        uint64_t padded;

        if (end - pos < sizeof h) {
            vimg_error(EINVAL, "header extension area truncated");
            return -1;
        }
        memcpy(&h, buf + pos, sizeof h);
        h.type = be32toh(h.type);
        h.len = be32toh(h.len);
        pos += sizeof h;
        if (h.type == QCOW2_EXT_END)
            return 0;
        padded = ALIGN_UP((uint64_t)h.len, 8);
        if (padded > end - pos) {
            vimg_error(EINVAL, "header extension 0x%08" PRIx32
                       " too large", h.type);
            return -1;
        }
        for (size_t i = 0; i < s->exts.len; i++) {
            if (s->exts.ptr[i].type == h.type) {
                vimg_error(EINVAL, "duplicate header extension 0x%08"
                           PRIx32, h.type);
                return -1;
            }
        }
        if (parse_ext(s, n, h.type, buf + pos, h.len) == -1)
            return -1;
        e.type = h.type;
        e.len = h.len;
        e.data = malloc(h.len ? h.len : 1);
        if (!e.data) {
            vimg_error(errno, "malloc: %m");
            return -1;
        }
        memcpy(e.data, buf + pos, h.len);
        if (qcow2_ext_vector_append(&s->exts, e) == -1) {
            free(e.data);
            return -1;
        }
        pos += padded;
    }
    return 0;
}

/* Check a table at OFF of LEN bytes: aligned and inside the file. */
static int
check_table(struct qcow2_state *s, uint64_t file_size, uint64_t off,
            uint64_t len, const char *what)
{
    if (!IS_ALIGNED(off, s->cluster_size)) {
        vimg_error(EINVAL, "%s offset 0x%" PRIx64 " is not cluster aligned",
                   what, off);
        return -1;
    }
    if (off > file_size || len > file_size - off) {
        vimg_error(EINVAL, "%s offset beyond end of file", what);
        return -1;
    }
    return 0;
}

static int
validate_features(struct qcow2_state *s, struct node *n)
{
    uint64_t unknown = s->incompat & ~QCOW2_INCOMPAT_KNOWN;

    if (unknown) {
        vimg_error(ENOTSUP, "unknown incompatible feature bits 0x%" PRIx64,
                   unknown);
        return -1;
    }
    if ((s->incompat & QCOW2_INCOMPAT_CORRUPT) && (n->flags & NODE_RDWR) &&
        !(n->flags & NODE_CHECK)) {
        vimg_error(EACCES, "image is corrupt; cannot be opened read/write");
        return -1;
    }
    if (s->refcount_order > 6) {
        vimg_error(EINVAL, "refcount_order %" PRIu32 " is too large",
                   s->refcount_order);
        return -1;
    }
    if (!!(s->incompat & QCOW2_INCOMPAT_COMPRESSION) !=
        (s->compression_type != 0)) {
        vimg_error(EINVAL, "compression type does not match feature bit");
        return -1;
    }
    if (s->compression_type > 1) {
        vimg_error(ENOTSUP, "unknown compression type %u",
                   s->compression_type);
        return -1;
    }
    if (s->crypt_method != 0) {
        vimg_error(ENOTSUP, "encrypted images are not supported");
        return -1;
    }
    if (s->extl2 && s->cluster_bits < 14) {
        vimg_error(EINVAL, "extended L2 entries need clusters of 16k or "
                   "more");
        return -1;
    }
    return 0;
}

static int
parse_fixed(struct qcow2_state *s, const struct qcow2_header *h)
{
    if (be32toh(h->magic) != QCOW2_MAGIC) {
        vimg_error(EINVAL, "not a qcow2 image (bad magic)");
        return -1;
    }
    s->version = be32toh(h->version);
    if (s->version != 2 && s->version != 3) {
        vimg_error(ENOTSUP, "unsupported qcow2 version %" PRIu32,
                   s->version);
        return -1;
    }
    s->cluster_bits = be32toh(h->cluster_bits);
    if (s->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
        s->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        vimg_error(EINVAL, "unsupported cluster_bits %" PRIu32,
                   s->cluster_bits);
        return -1;
    }
    s->cluster_size = 1ull << s->cluster_bits;
    s->crypt_method = be32toh(h->crypt_method);
    s->l1_size = be32toh(h->l1_size);
    s->l1_offset = be64toh(h->l1_table_offset);
    s->rt_offset = be64toh(h->refcount_table_offset);
    s->rt_clusters = be32toh(h->refcount_table_clusters);
    s->nb_snapshots = be32toh(h->nb_snapshots);
    s->snapshots_offset = be64toh(h->snapshots_offset);
    s->backing_offset = be64toh(h->backing_file_offset);
    s->backing_size = be32toh(h->backing_file_size);
    if (s->version == 2) {
        s->header_length = QCOW2_V2_HEADER_LEN;
        s->refcount_order = 4;
        return 0;
    }
    s->incompat = be64toh(h->incompatible_features);
    s->compat = be64toh(h->compatible_features);
    s->autoclear = be64toh(h->autoclear_features);
    s->refcount_order = be32toh(h->refcount_order);
    s->header_length = be32toh(h->header_length);
    if (s->header_length < 104 || s->header_length % 8 != 0) {
        vimg_error(EINVAL, "invalid header_length %" PRIu32,
                   s->header_length);
        return -1;
    }
    if (s->header_length > s->cluster_size) {
        vimg_error(EINVAL, "header_length exceeds the cluster size");
        return -1;
    }
    s->compression_type = s->header_length > 104 ? h->compression_type : 0;
    s->extl2 = s->incompat & QCOW2_INCOMPAT_EXTL2;
    return 0;
}

static int
validate_tables(struct qcow2_state *s, struct node *n, uint64_t vsize)
{
    uint64_t file_size = n->file->size;
    uint64_t per_l1, need;

    per_l1 = s->cluster_size * s->l2_entries;
    need = vsize / per_l1 + (vsize % per_l1 != 0);
    if ((uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
        vimg_error(EFBIG, "L1 table is too large");
        return -1;
    }
    if (s->l1_size < need) {
        vimg_error(EINVAL, "L1 table is too small for the virtual size");
        return -1;
    }
    if (s->l1_size &&
        check_table(s, file_size, s->l1_offset, (uint64_t)s->l1_size * 8,
                    "L1 table") == -1)
        return -1;
    if (s->rt_clusters == 0) {
        vimg_error(EINVAL, "image has no refcount table");
        return -1;
    }
    if ((uint64_t)s->rt_clusters * s->cluster_size > QCOW2_MAX_RT_BYTES) {
        vimg_error(EFBIG, "refcount table is too large");
        return -1;
    }
    if (check_table(s, file_size, s->rt_offset,
                    (uint64_t)s->rt_clusters << s->cluster_bits,
                    "refcount table") == -1)
        return -1;
    if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
        vimg_error(EFBIG, "too many snapshots");
        return -1;
    }
    if (s->nb_snapshots &&
        check_table(s, file_size, s->snapshots_offset,
                    (uint64_t)s->nb_snapshots * 40, "snapshot table") == -1)
        return -1;
    return 0;
}

static int
read_backing_name(struct qcow2_state *s, struct node *n, const uint8_t *buf)
{
    if (s->backing_offset == 0)
        return 0;
    if (s->backing_size > QCOW2_MAX_BACKING_NAME ||
        s->backing_offset > s->cluster_size ||
        s->backing_size > s->cluster_size - s->backing_offset) {
        vimg_error(EINVAL, "backing file name too long");
        return -1;
    }
    if (s->backing_offset < s->header_length) {
        vimg_error(EINVAL, "backing file name overlaps the header");
        return -1;
    }
    free(n->backing_name);
    n->backing_name = strndup((const char *)buf + s->backing_offset,
                              s->backing_size);
    if (!n->backing_name) {
        vimg_error(errno, "strndup: %m");
        return -1;
    }
    return 0;
}

int
qcow2_header_read(struct node *n, struct qcow2_state *s)
{
    struct qcow2_header h;
    uint64_t file_size = n->file->size;
    uint64_t ext_end, hlen;
    CLEANUP_FREE uint8_t *buf = NULL;

    memset(&h, 0, sizeof h);
    if (file_size < QCOW2_V2_HEADER_LEN) {
        vimg_error(EINVAL, "qcow2 header truncated");
        return -1;
    }
    if (node_pread(n->file, &h, MIN(file_size, sizeof h), 0) == -1)
        return -1;
    if (parse_fixed(s, &h) == -1)
        return -1;
    if (file_size < s->header_length) {
        vimg_error(EINVAL, "qcow2 header truncated");
        return -1;
    }
    /* The header cluster; the part past EOF reads as zeroes. */
    buf = calloc(1, s->cluster_size);
    if (!buf) {
        vimg_error(errno, "calloc: %m");
        return -1;
    }
    hlen = MIN(file_size, s->cluster_size);
    if (node_pread(n->file, buf, hlen, 0) == -1)
        return -1;
    s->hdr_raw = malloc(s->header_length);
    if (!s->hdr_raw) {
        vimg_error(errno, "malloc: %m");
        return -1;
    }
    memcpy(s->hdr_raw, buf, s->header_length);

    if (validate_features(s, n) == -1) /* refcount_order <= 6 first */
        return -1;
    s->refcount_bits = 1u << s->refcount_order;
    s->refcount_max = s->refcount_bits == 64
                          ? UINT64_MAX
                          : (1ull << s->refcount_bits) - 1;
    s->l2_entry_size = s->extl2 ? 16 : 8;
    s->l2_entries = s->cluster_size / s->l2_entry_size;
    s->subcluster_size = s->extl2 ? s->cluster_size / 32 : s->cluster_size;
    s->rb_entries = s->cluster_size * 8 / s->refcount_bits;
    n->size = be64toh(h.size);
    if (n->size > INT64_MAX / 2) {
        vimg_error(EFBIG, "virtual size is too large");
        return -1;
    }
    if (validate_tables(s, n, n->size) == -1)
        return -1;
    if (read_backing_name(s, n, buf) == -1)
        return -1;
    ext_end = s->backing_offset ? s->backing_offset : s->cluster_size;
    if (ext_end > s->header_length &&
        read_extensions(s, n, buf, s->header_length, ext_end) == -1)
        return -1;
    if ((s->incompat & QCOW2_INCOMPAT_DATA_FILE) && s->nb_snapshots) {
        vimg_error(EINVAL, "image with an external data file has "
                   "snapshots");
        return -1;
    }
    return 0;
}

static int
put_ext(uint8_t *buf, size_t *pos, size_t end, uint32_t type,
        const void *data, uint32_t len)
{
    struct qcow2_ext_hdr h = { htobe32(type), htobe32(len) };
    size_t padded = ALIGN_UP((size_t)len, 8);

    if (*pos + sizeof h + padded > end) {
        vimg_error(ENOSPC, "header extensions do not fit in the first "
                   "cluster");
        return -1;
    }
    memcpy(buf + *pos, &h, sizeof h);
    *pos += sizeof h;
    if (len)
        memcpy(buf + *pos, data, len);
    memset(buf + *pos + len, 0, padded - len);
    *pos += padded;
    return 0;
}

/* Emit one kept extension, replacing the content of those we own. */
static int
put_kept_ext(struct qcow2_state *s, uint8_t *buf, size_t *pos, size_t end,
             const struct qcow2_ext *e, const char *backing_fmt)
{
    struct qcow2_bitmaps_ext b;

    switch (e->type) {
    case QCOW2_EXT_BACKING_FMT:
        if (!backing_fmt)
            return 0;
        return put_ext(buf, pos, end, e->type, backing_fmt,
                       strlen(backing_fmt));
    case QCOW2_EXT_DATA_FILE:
        if (!s->data_file_name)
            return 0;
        return put_ext(buf, pos, end, e->type, s->data_file_name,
                       strlen(s->data_file_name));
    case QCOW2_EXT_BITMAPS:
        if (!s->has_bitmaps_ext)
            return 0;
        b.nb_bitmaps = htobe32(s->bitmaps_ext.nb_bitmaps);
        b.reserved = 0;
        b.directory_size = htobe64(s->bitmaps_ext.directory_size);
        b.directory_offset = htobe64(s->bitmaps_ext.directory_offset);
        return put_ext(buf, pos, end, e->type, &b, sizeof b);
    default:
        return put_ext(buf, pos, end, e->type, e->data, e->len);
    }
}

static bool
has_ext(const struct qcow2_state *s, uint32_t type)
{
    for (size_t i = 0; i < s->exts.len; i++)
        if (s->exts.ptr[i].type == type)
            return true;
    return false;
}

/* Fill the known fields of the raw header from S. */
static void
fill_fixed(struct qcow2_state *s, uint8_t *buf, uint64_t boff,
           uint32_t blen)
{
    struct qcow2_header h;

    memset(&h, 0, sizeof h);
    memcpy(&h, s->hdr_raw, MIN(sizeof h, (size_t)s->header_length));
    h.magic = htobe32(QCOW2_MAGIC);
    h.version = htobe32(s->version);
    h.backing_file_offset = htobe64(boff);
    h.backing_file_size = htobe32(blen);
    h.cluster_bits = htobe32(s->cluster_bits);
    h.size = htobe64(s->node->size);
    h.crypt_method = 0;
    h.l1_size = htobe32(s->l1_size);
    h.l1_table_offset = htobe64(s->l1_offset);
    h.refcount_table_offset = htobe64(s->rt_offset);
    h.refcount_table_clusters = htobe32(s->rt_clusters);
    h.nb_snapshots = htobe32(s->nb_snapshots);
    h.snapshots_offset = htobe64(s->snapshots_offset);
    if (s->version >= 3) {
        h.incompatible_features = htobe64(s->incompat);
        h.compatible_features = htobe64(s->compat);
        h.autoclear_features = htobe64(s->autoclear);
        h.refcount_order = htobe32(s->refcount_order);
        h.header_length = htobe32(s->header_length);
        h.compression_type = s->compression_type;
    }
    memcpy(buf, &h, MIN(sizeof h, (size_t)s->header_length));
    if (s->header_length > sizeof h)
        memcpy(buf + sizeof h, s->hdr_raw + sizeof h,
               s->header_length - sizeof h);
}

int
qcow2_header_write_locked(struct qcow2_state *s, const char *backing,
                          const char *backing_fmt)
{
    size_t end = s->cluster_size, pos = s->header_length;
    size_t blen = backing ? strlen(backing) : 0;
    CLEANUP_FREE uint8_t *buf = calloc(1, s->cluster_size);
    uint64_t boff = 0;

    if (!buf) {
        vimg_error(errno, "calloc: %m");
        return -1;
    }
    if (blen > QCOW2_MAX_BACKING_NAME ||
        (backing_fmt && strlen(backing_fmt) > QCOW2_MAX_BACKING_NAME)) {
        vimg_error(EINVAL, "backing file name too long");
        return -1;
    }
    end -= blen;
    if (backing_fmt && !has_ext(s, QCOW2_EXT_BACKING_FMT) &&
        put_ext(buf, &pos, end, QCOW2_EXT_BACKING_FMT, backing_fmt,
                strlen(backing_fmt)) == -1)
        return -1;
    if (s->data_file_name && !has_ext(s, QCOW2_EXT_DATA_FILE) &&
        put_ext(buf, &pos, end, QCOW2_EXT_DATA_FILE, s->data_file_name,
                strlen(s->data_file_name)) == -1)
        return -1;
    if (s->has_bitmaps_ext && !has_ext(s, QCOW2_EXT_BITMAPS)) {
        struct qcow2_ext be = { QCOW2_EXT_BITMAPS, 0, NULL };
        if (put_kept_ext(s, buf, &pos, end, &be, NULL) == -1)
            return -1;
    }
    for (size_t i = 0; i < s->exts.len; i++)
        if (put_kept_ext(s, buf, &pos, end, &s->exts.ptr[i],
                         backing_fmt) == -1)
            return -1;
    if (s->version >= 3 || pos > s->header_length) {
        if (pos + 8 > end) {
            vimg_error(ENOSPC, "header extensions do not fit in the first "
                       "cluster");
            return -1;
        }
        pos += 8; /* end marker, zeroes */
    }
    if (backing) {
        boff = pos;
        memcpy(buf + pos, backing, blen);
        pos += blen;
    }
    fill_fixed(s, buf, boff, blen);
    /* Header changes come after everything they describe is durable. */
    if (node_flush(s->node->file) == -1)
        return -1;
    if (node_pwrite(s->node->file, buf, pos, 0, 0) == -1)
        return -1;
    if (node_flush(s->node->file) == -1)
        return -1;
    memcpy(s->hdr_raw, buf, s->header_length);
    s->backing_offset = boff;
    s->backing_size = blen;
    return 0;
}

int
qcow2_header_update_u64_locked(struct qcow2_state *s, uint64_t off,
                               uint64_t val)
{
    uint64_t be = htobe64(val);

    if (s->version < 3 && off >= QCOW2_V2_HEADER_LEN)
        return 0;
    if (node_flush(s->node->file) == -1)
        return -1;
    if (node_pwrite(s->node->file, &be, 8, off, 0) == -1)
        return -1;
    if (node_flush(s->node->file) == -1)
        return -1;
    if (off + 8 <= s->header_length)
        memcpy(s->hdr_raw + off, &be, 8);
    return 0;
}

static const struct {
    uint8_t type, bit;
    const char *name;
} feature_names[] = {
    { 0, 0, "dirty bit" },
    { 0, 1, "corrupt bit" },
    { 0, 2, "external data file" },
    { 0, 3, "compression type" },
    { 0, 4, "extended L2 entries" },
    { 1, 0, "lazy refcounts" },
    { 2, 0, "bitmaps" },
    { 2, 1, "raw external data" },
};

int
qcow2_features_ext(struct qcow2_ext *ext)
{
    size_t n = ARRAY_SIZE(feature_names);
    struct qcow2_feature_name *t = calloc(n, sizeof *t);

    if (!t) {
        vimg_error(errno, "calloc: %m");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        t[i].type = feature_names[i].type;
        t[i].bit = feature_names[i].bit;
        strncpy(t[i].name, feature_names[i].name, sizeof t[i].name);
    }
    ext->type = QCOW2_EXT_FEATURES;
    ext->len = n * sizeof *t;
    ext->data = (uint8_t *)t;
    return 0;
}

void
qcow2_header_free(struct qcow2_state *s)
{
    for (size_t i = 0; i < s->exts.len; i++)
        free(s->exts.ptr[i].data);
    qcow2_ext_vector_reset(&s->exts);
    free(s->hdr_raw);
    s->hdr_raw = NULL;
    free(s->data_file_name);
    s->data_file_name = NULL;
}
