/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 create: parse qemu-img's -o options, write a minimal image the
 * way qemu-img 7.2 lays it out (header and extensions in cluster 0, the
 * refcount table in cluster 1, the first refcount block in cluster 2),
 * then open it with this driver to size it (the L1 table lands in
 * cluster 3) and preallocate.
 */
#include <endian.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "io.h"
#include "options.h"
#include "qcow2.h"

struct create_opts {
    uint64_t size;
    uint64_t cluster_size;
    unsigned version;
    const char *backing_file, *backing_fmt;
    bool lazy_refcounts, extended_l2, data_file_raw;
    enum prealloc prealloc;
    uint64_t refcount_bits;
    uint8_t compression_type;
    const char *data_file;
};

static int
parse_prealloc(const char *v, enum prealloc *p)
{
    static const char *const names[] = { "off", "metadata", "falloc",
                                         "full" };

    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (!strcmp(v, names[i])) {
            *p = (enum prealloc)i;
            return 0;
        }
    vimg_error(EINVAL, "invalid preallocation mode '%s'", v);
    return -1;
}

static int
parse_strings(json_t *opts, struct create_opts *o)
{
    const char *v;

    o->version = 3;
    if ((v = opts_get_str(opts, "compat"))) {
        if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
            o->version = 2;
        else if (strcmp(v, "1.1") && strcmp(v, "v3")) {
            vimg_error(EINVAL, "invalid compatibility level '%s'", v);
            return -1;
        }
    }
    if ((v = opts_get_str(opts, "preallocation")) &&
        parse_prealloc(v, &o->prealloc) == -1)
        return -1;
    if ((v = opts_get_str(opts, "compression_type"))) {
        if (!strcmp(v, "zstd"))
            o->compression_type = 1;
        else if (strcmp(v, "zlib")) {
            vimg_error(EINVAL, "invalid compression type '%s'", v);
            return -1;
        }
    }
    o->backing_file = opts_get_str(opts, "backing_file");
    if (o->backing_file && !*o->backing_file)
        o->backing_file = NULL;
    o->backing_fmt = opts_get_str(opts, "backing_fmt");
    o->data_file = opts_get_str(opts, "data_file");
    if (o->data_file && !*o->data_file)
        o->data_file = NULL;
    return 0;
}

static int
validate(struct create_opts *o)
{
    if (!is_power_of_2(o->cluster_size) || o->cluster_size < 512 ||
        o->cluster_size > (1u << QCOW2_MAX_CLUSTER_BITS)) {
        vimg_error(EINVAL, "cluster size must be a power of two between "
                   "512 and 2048k");
        return -1;
    }
    if (!is_power_of_2(o->refcount_bits) || o->refcount_bits > 64) {
        vimg_error(EINVAL, "refcount width must be a power of two and may "
                   "not exceed 64 bits");
        return -1;
    }
    if (o->version == 2 &&
        (o->refcount_bits != 16 || o->lazy_refcounts || o->extended_l2 ||
         o->data_file || o->compression_type)) {
        vimg_error(EINVAL, "this option requires compat=1.1 or above");
        return -1;
    }
    if (o->extended_l2 && o->cluster_size < 16384) {
        vimg_error(EINVAL, "extended L2 entries are only supported with "
                   "cluster sizes of at least 16384 bytes");
        return -1;
    }
    if (o->data_file_raw && !o->data_file) {
        vimg_error(EINVAL, "data_file_raw requires data_file");
        return -1;
    }
    if (o->data_file_raw && o->backing_file) {
        vimg_error(EINVAL, "backing file and data_file_raw cannot be "
                   "combined");
        return -1;
    }
    if (o->backing_file && strlen(o->backing_file) > QCOW2_MAX_BACKING_NAME) {
        vimg_error(EINVAL, "backing file name too long");
        return -1;
    }
    /* data_file_raw wants every cluster mapped to the data file. */
    if (o->data_file_raw && o->prealloc == PREALLOC_OFF)
        o->prealloc = PREALLOC_METADATA;
    return 0;
}

static int
parse_opts(json_t *opts, struct create_opts *o)
{
    json_t *sz = json_object_get(opts, "size");

    static const char *const keys[] = {
        "size", "cluster_size", "compat", "backing_file", "backing_fmt",
        "lazy_refcounts", "preallocation", "refcount_bits",
        "compression_type", "extended_l2", "data_file", "data_file_raw",
        "nocow", "extent_size_hint", NULL };

    memset(o, 0, sizeof *o);
    if (opts_check_keys(opts, keys, "The 'qcow2' format") == -1)
        return -1;
    if (!json_is_integer(sz) || json_integer_value(sz) < 0) {
        vimg_error(EINVAL, "image creation needs a size");
        return -1;
    }
    o->size = json_integer_value(sz);
    if (opts_get_size(opts, "cluster_size", 65536, &o->cluster_size) == -1 ||
        opts_get_size(opts, "refcount_bits", 16, &o->refcount_bits) == -1 ||
        opts_get_bool(opts, "lazy_refcounts", false, &o->lazy_refcounts) ==
            -1 ||
        opts_get_bool(opts, "extended_l2", false, &o->extended_l2) == -1 ||
        opts_get_bool(opts, "data_file_raw", false, &o->data_file_raw) ==
            -1 ||
        parse_strings(opts, o) == -1)
        return -1;
    return validate(o);
}

static int
put_ext(uint8_t *buf, size_t *pos, size_t cs, uint32_t type,
        const void *data, size_t len)
{
    uint32_t h[2] = { htobe32(type), htobe32(len) };

    if (len > cs || *pos + 16 + ALIGN_UP(len, 8) > cs) {
        vimg_error(EINVAL, "header extensions do not fit in one cluster");
        return -1;
    }
    memcpy(buf + *pos, h, 8);
    memcpy(buf + *pos + 8, data, len);
    *pos += 8 + ALIGN_UP(len, 8);
    return 0;
}

/* Build the first three clusters of the new image into BUF. */
static int
build_image(const struct create_opts *o, uint8_t *buf)
{
    uint64_t cs = o->cluster_size;
    struct qcow2_header h;
    struct qcow2_ext feat;
    size_t pos;
    unsigned cbits = __builtin_ctzll(cs);
    uint64_t rt0 = htobe64(2 * cs);

    memset(&h, 0, sizeof h);
    h.magic = htobe32(QCOW2_MAGIC);
    h.version = htobe32(o->version);
    h.cluster_bits = htobe32(cbits);
    h.refcount_table_offset = htobe64(cs);
    h.refcount_table_clusters = htobe32(1);
    pos = o->version == 3 ? QCOW2_V3_HEADER_LEN : QCOW2_V2_HEADER_LEN;
    if (o->version == 3) {
        h.incompatible_features = htobe64(
            (o->data_file ? QCOW2_INCOMPAT_DATA_FILE : 0) |
            (o->compression_type ? QCOW2_INCOMPAT_COMPRESSION : 0) |
            (o->extended_l2 ? QCOW2_INCOMPAT_EXTL2 : 0));
        h.compatible_features =
            htobe64(o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
        h.autoclear_features =
            htobe64(o->data_file_raw ? QCOW2_AUTOCLEAR_DATA_FILE_RAW : 0);
        h.refcount_order = htobe32(__builtin_ctzll(o->refcount_bits));
        h.header_length = htobe32(QCOW2_V3_HEADER_LEN);
        h.compression_type = o->compression_type;
    }
    if (o->backing_fmt &&
        put_ext(buf, &pos, cs, QCOW2_EXT_BACKING_FMT, o->backing_fmt,
                strlen(o->backing_fmt)) == -1)
        return -1;
    if (o->data_file &&
        put_ext(buf, &pos, cs, QCOW2_EXT_DATA_FILE, o->data_file,
                strlen(o->data_file)) == -1)
        return -1;
    if (o->version == 3) {
        /* Like qemu-img: no feature name table with clusters of 4k or
         * less, nor if it would not leave room for the backing name. */
        size_t blen = o->backing_file ? strlen(o->backing_file) : 0;
        if (qcow2_features_ext(&feat) == -1)
            return -1;
        if (cs > 4096 && pos + 8 + feat.len + 8 + blen <= cs)
            put_ext(buf, &pos, cs, feat.type, feat.data, feat.len);
        free(feat.data);
    }
    pos += 8; /* end of extensions */
    if (o->backing_file) {
        size_t blen = strlen(o->backing_file);
        if (pos + blen > cs) {
            vimg_error(EINVAL, "backing file name does not fit in the "
                       "header cluster");
            return -1;
        }
        h.backing_file_offset = htobe64(pos);
        h.backing_file_size = htobe32(blen);
        memcpy(buf + pos, o->backing_file, blen);
        pos += blen;
    }
    if (pos > cs) {
        vimg_error(EINVAL, "header does not fit in one cluster");
        return -1;
    }
    memcpy(buf, &h, o->version == 3 ? sizeof h : QCOW2_V2_HEADER_LEN);
    memcpy(buf + cs, &rt0, 8);
    {
        /* Refcount 1 for clusters 0, 1 and 2. */
        struct qcow2_state tmp = { .refcount_bits = o->refcount_bits };
        for (uint64_t i = 0; i < 3; i++)
            qcow2_rb_set(&tmp, buf + 2 * cs, i, 1);
    }
    return 0;
}

static int
write_file(const char *filename, const uint8_t *buf, size_t len,
           uint64_t truncate_to)
{
    int fd = open(filename, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    if (fd == -1) {
        vimg_error(errno, "%s: %m", filename);
        return -1;
    }
    if ((len && pwrite(fd, buf, len, 0) != (ssize_t)len) ||
        (truncate_to && ftruncate(fd, truncate_to) == -1) ||
        fsync(fd) == -1) {
        vimg_error(errno, "%s: write: %m", filename);
        close(fd);
        return -1;
    }
    if (close(fd) == -1) {
        vimg_error(errno, "%s: close: %m", filename);
        return -1;
    }
    return 0;
}

/* Open the new image with this driver, size it and preallocate. */
static int
finish(const char *filename, const struct create_opts *o)
{
    json_t *opts = json_pack("{s:s, s:{s:s, s:s}}", "driver", "qcow2",
                             "file", "driver", "file", "filename",
                             filename);
    struct node *n;
    int r = -1;

    if (!opts) {
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    n = node_open(opts, NODE_RDWR | NODE_NO_BACKING);
    json_decref(opts);
    if (!n)
        return -1;
    if (node_truncate(n, o->size, PREALLOC_OFF) == 0 &&
        qcow2_preallocate(n, 0, o->size, o->prealloc) == 0)
        r = 0;
    if (node_unref(n) == -1)
        r = -1;
    return r;
}

int
qcow2_create(const char *filename, json_t *opts)
{
    struct create_opts o;
    CLEANUP_FREE uint8_t *buf = NULL;

    if (parse_opts(opts, &o) == -1)
        return -1;
    buf = calloc(3, o.cluster_size);
    if (!buf) {
        vimg_error(errno, "calloc: %m");
        return -1;
    }
    if (build_image(&o, buf) == -1)
        return -1;
    if (o.data_file) {
        CLEANUP_FREE char *path = node_path_relative(filename, o.data_file);
        if (!path || write_file(path, NULL, 0, o.size) == -1)
            return -1;
    }
    if (write_file(filename, buf, 3 * o.cluster_size, 0) == -1)
        return -1;
    return finish(filename, &o);
}
