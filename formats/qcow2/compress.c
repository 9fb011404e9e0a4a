/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 compressed clusters: raw deflate (no zlib header, QEMU writes a
 * 4 KiB window, -12) and zstd frames.  Decompression stops once one
 * whole cluster has been produced; trailing bytes of the last sector are
 * ignored.  The codecs work on caller buffers only and need no lock
 * (reading the compressed bytes is a plain read of the image file).
 *
 * Compressed writes (qcow2_pwrite_compressed) pack clusters at byte
 * granularity one after the other, as QEMU does: s->comp_tail is the
 * next free byte of the host cluster being filled; a compressed cluster
 * that does not fit continues into the next host cluster when that one
 * is the next free cluster, and starts a fresh cluster otherwise.  Each
 * host cluster holds one reference per compressed cluster touching it.
 * Locking: the compression runs outside s->lock, so writer threads
 * compress in parallel; s->lock is taken once per batch to reserve the
 * bytes (and raise the refcounts), the data is written outside it, and
 * the lock is taken again to install the L2 entries (data before the
 * entry, refcount before the reference).
 */
#include <stdlib.h>
#include <string.h>

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "io.h"
#include "qcow2.h"

static int
inflate_raw(uint8_t *dst, size_t dstlen, const uint8_t *src, size_t srclen)
{
    z_stream z;
    int r;

    memset(&z, 0, sizeof z);
    /* -15 accepts every window up to 32 KiB, including QEMU's -12. */
    if (inflateInit2(&z, -15) != Z_OK) {
        vimg_error(ENOMEM, "inflateInit2 failed");
        return -1;
    }
    z.next_in = (Bytef *)src;
    z.avail_in = srclen;
    z.next_out = dst;
    z.avail_out = dstlen;
    r = inflate(&z, Z_FINISH);
    inflateEnd(&z);
    if ((r == Z_STREAM_END || r == Z_BUF_ERROR || r == Z_OK) &&
        z.avail_out == 0)
        return 0;
    vimg_error(EIO, "cannot decompress cluster (deflate)");
    return -1;
}

static int
unzstd(uint8_t *dst, size_t dstlen, const uint8_t *src, size_t srclen)
{
    ZSTD_DCtx *ctx = ZSTD_createDCtx();
    ZSTD_inBuffer in = { src, srclen, 0 };
    ZSTD_outBuffer out = { dst, dstlen, 0 };
    size_t r = 0;

    if (!ctx) {
        vimg_error(ENOMEM, "ZSTD_createDCtx failed");
        return -1;
    }
    while (out.pos < out.size) {
        size_t before_in = in.pos, before_out = out.pos;
        r = ZSTD_decompressStream(ctx, &out, &in);
        if (ZSTD_isError(r))
            break;
        if (r == 0 || (in.pos == before_in && out.pos == before_out))
            break; /* frame done or no progress */
    }
    ZSTD_freeDCtx(ctx);
    if (!ZSTD_isError(r) && out.pos == out.size)
        return 0;
    vimg_error(EIO, "cannot decompress cluster (zstd)");
    return -1;
}

int
qcow2_decompress(const struct qcow2_state *s, uint8_t *dst,
                 const uint8_t *src, size_t srclen)
{
    if (s->compression_type == 1)
        return unzstd(dst, s->cluster_size, src, srclen);
    return inflate_raw(dst, s->cluster_size, src, srclen);
}

/* Compression state reused across the clusters of one request. */
struct compressor {
    z_stream z;
    bool z_ready;
    ZSTD_CCtx *zc;
};

static void
compressor_fini(struct compressor *c)
{
    if (c->z_ready)
        deflateEnd(&c->z);
    ZSTD_freeCCtx(c->zc);
    memset(c, 0, sizeof *c);
}

/* Compress one cluster of SRC into at most DSTLEN bytes of DST; the
 * length, 0 if it does not fit, -1 on error. */
static ssize_t
compress_cluster(const struct qcow2_state *s, struct compressor *c,
                 uint8_t *dst, size_t dstlen, const uint8_t *src)
{
    int r;

    if (s->compression_type == 1) {
        size_t n;
        if (!c->zc && !(c->zc = ZSTD_createCCtx())) {
            vimg_error(ENOMEM, "ZSTD_createCCtx failed");
            return -1;
        }
        n = ZSTD_compressCCtx(c->zc, dst, dstlen, src, s->cluster_size, 3);
        if (ZSTD_isError(n)) {
            if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall)
                return 0;
            vimg_error(EIO, "zstd compression failed: %s",
                       ZSTD_getErrorName(n));
            return -1;
        }
        return n < s->cluster_size ? (ssize_t)n : 0;
    }
    if (!c->z_ready) {
        /* As QEMU: best compression, 4 KiB window, no zlib header. */
        if (deflateInit2(&c->z, 9, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) !=
            Z_OK) {
            vimg_error(ENOMEM, "deflateInit2 failed");
            return -1;
        }
        c->z_ready = true;
    } else if (deflateReset(&c->z) != Z_OK) {
        vimg_error(EIO, "deflateReset failed");
        return -1;
    }
    c->z.next_in = (Bytef *)src;
    c->z.avail_in = s->cluster_size;
    c->z.next_out = dst;
    c->z.avail_out = dstlen;
    r = deflate(&c->z, Z_FINISH);
    if (r != Z_STREAM_END)
        return 0; /* did not fit */
    return c->z.total_out < s->cluster_size ? (ssize_t)c->z.total_out : 0;
}

ssize_t
qcow2_compress(const struct qcow2_state *s, uint8_t *dst, size_t dstlen,
               const uint8_t *src)
{
    struct compressor c = { .z_ready = false };
    ssize_t r = compress_cluster(s, &c, dst, dstlen, src);

    compressor_fini(&c);
    return r;
}

int
qcow2_read_compressed(struct qcow2_state *s, uint64_t entry, uint8_t *dst)
{
    uint64_t off, len, fsize = s->node->file->size;
    CLEANUP_FREE uint8_t *src = NULL;

    qcow2_compressed_range(s, entry, &off, &len);
    if (off >= fsize) {
        vimg_error(EIO, "compressed cluster beyond end of file");
        return -1;
    }
    len = MIN(len, fsize - off);
    if (len > 2 * s->cluster_size + 512)
        len = 2 * s->cluster_size + 512;
    src = malloc(len);
    if (!src) {
        vimg_error(errno, "malloc: %m");
        return -1;
    }
    if (node_pread(s->node->file, src, len, off) == -1)
        return -1;
    return qcow2_decompress(s, dst, src, len);
}

/* ---- compressed writes ---------------------------------------------- */

#define BATCH_BYTES (1u << 20) /* guest bytes compressed per lock round */

/* One batch of guest clusters: compressed bytes packed in OUT. */
struct batch {
    uint64_t off;      /* guest offset of the first cluster */
    uint64_t n;        /* clusters */
    uint8_t *out;      /* n * cluster_size bytes */
    uint64_t *len;     /* compressed length per cluster, 0 = stored raw */
    uint64_t *pos;     /* offset in OUT */
    uint64_t *host;    /* reserved host byte offset (compressed only) */
    uint64_t *entry;   /* descriptor (compressed only) */
};

/* Bits of the host offset in a compressed descriptor. */
static unsigned
offset_bits(const struct qcow2_state *s)
{
    return 62 - (s->cluster_bits - 8);
}

/* Reserve LEN bytes (1..cluster_size-1) for one compressed cluster and
 * take one reference on every host cluster they touch.  Host offset. */
static int64_t
alloc_bytes_locked(struct qcow2_state *s, uint64_t len)
{
    uint64_t cs = s->cluster_size, off = s->comp_tail, rc;
    int64_t h;

    if (off) {
        if (qcow2_refcount_get_locked(s, off >> s->cluster_bits, &rc) == -1)
            return -1;
        if (rc == 0 || rc >= s->refcount_max)
            off = 0; /* freed meanwhile, or no reference left to take */
    }
    if (off && cs - off % cs >= len) {
        if (qcow2_refcount_update_locked(s, off >> s->cluster_bits, 1) == -1)
            return -1;
    } else {
        /* alloc takes the reference on the new cluster. */
        if ((h = qcow2_alloc_clusters_locked(s, 1)) == -1)
            return -1;
        if (off && ALIGN_UP(off, cs) == (uint64_t)h) {
            if (qcow2_refcount_update_locked(s, off >> s->cluster_bits, 1) ==
                -1)
                return -1;
        } else {
            off = h;
        }
    }
    s->comp_tail = (off + len) % cs ? off + len : 0;
    if (off + len > (1ull << offset_bits(s))) {
        vimg_error(EFBIG, "compressed cluster at host offset %" PRIu64
                   " is beyond what a descriptor can address", off);
        return -1;
    }
    return off;
}

static uint64_t
descriptor(const struct qcow2_state *s, uint64_t host, uint64_t len)
{
    uint64_t extra = (host + len - 1) / 512 - host / 512;

    return QCOW2_OFLAG_COMPRESSED | (extra << offset_bits(s)) | host;
}

/* Compress the clusters of B from BUF (COUNT guest bytes; the last
 * cluster may be short and is padded with zeroes, as QEMU does). */
static int
compress_batch(struct qcow2_state *s, struct compressor *c,
               struct batch *b, const uint8_t *buf, uint64_t count)
{
    uint64_t cs = s->cluster_size, pos = 0;
    CLEANUP_FREE uint8_t *pad = NULL;

    for (uint64_t i = 0; i < b->n; i++) {
        const uint8_t *src = buf + i * cs;
        uint64_t have = MIN(cs, count - i * cs);
        ssize_t r;

        if (have < cs) {
            if (!(pad = calloc(1, cs))) {
                vimg_error(errno, "calloc: %m");
                return -1;
            }
            memcpy(pad, src, have);
            src = pad;
        }
        r = compress_cluster(s, c, b->out + pos, cs - 1, src);
        if (r == -1)
            return -1;
        b->len[i] = r;
        b->pos[i] = pos;
        pos += r;
    }
    return 0;
}

/* Give back the references of the first N reserved clusters of B. */
static void
unreserve_locked(struct qcow2_state *s, struct batch *b, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (b->len[i])
            qcow2_free_entry_locked(s, b->entry[i]);
}

static int
reserve(struct qcow2_state *s, struct batch *b)
{
    LOCK_GUARD(&s->lock);

    if (qcow2_before_write_locked(s) == -1)
        return -1;
    for (uint64_t i = 0; i < b->n; i++) {
        int64_t h;

        if (!b->len[i])
            continue;
        if ((h = alloc_bytes_locked(s, b->len[i])) == -1) {
            unreserve_locked(s, b, i);
            return -1;
        }
        b->host[i] = h;
        b->entry[i] = descriptor(s, h, b->len[i]);
    }
    return 0;
}

/* Write the compressed bytes, one pwrite per run of adjacent clusters. */
static int
write_data(struct qcow2_state *s, struct batch *b)
{
    for (uint64_t i = 0; i < b->n;) {
        uint64_t j = i + 1, bytes;

        if (!b->len[i]) {
            i++;
            continue;
        }
        bytes = b->len[i];
        while (j < b->n && b->len[j] && b->host[j] == b->host[i] + bytes &&
               b->pos[j] == b->pos[i] + bytes)
            bytes += b->len[j++];
        if (node_pwrite(s->node->file, b->out + b->pos[i], bytes, b->host[i],
                        0) == -1)
            return -1;
        i = j;
    }
    return 0;
}

static int
install(struct qcow2_state *s, struct batch *b)
{
    LOCK_GUARD(&s->lock);

    for (uint64_t i = 0; i < b->n; i++) {
        if (!b->len[i])
            continue;
        if (qcow2_set_compressed_locked(s, b->off + i * s->cluster_size,
                                        b->entry[i]) == -1) {
            /* Entry I may be installed: leak it rather than risk a
             * refcount below its references; release the rest. */
            for (uint64_t k = i + 1; k < b->n; k++)
                if (b->len[k])
                    qcow2_free_entry_locked(s, b->entry[k]);
            return -1;
        }
    }
    return 0;
}

/* Compress, reserve, write and map one batch; clusters that do not
 * shrink are written uncompressed. */
static int
write_batch(struct node *n, struct compressor *c, struct batch *b,
            const uint8_t *buf, uint64_t count)
{
    struct qcow2_state *s = n->state;
    uint64_t cs = s->cluster_size;

    if (compress_batch(s, c, b, buf, count) == -1 || reserve(s, b) == -1)
        return -1;
    if (write_data(s, b) == -1) {
        pthread_mutex_lock(&s->lock);
        unreserve_locked(s, b, b->n);
        pthread_mutex_unlock(&s->lock);
        return -1;
    }
    if (install(s, b) == -1)
        return -1;
    for (uint64_t i = 0; i < b->n; i++) {
        if (b->len[i])
            continue;
        if (qcow2_pwrite(n, buf + i * cs, MIN(cs, count - i * cs),
                         b->off + i * cs, 0) == -1)
            return -1;
    }
    return 0;
}

int
qcow2_pwrite_compressed(struct node *n, const uint8_t *buf, uint64_t count,
                        uint64_t off)
{
    struct qcow2_state *s = n->state;
    uint64_t cs = s->cluster_size;
    uint64_t max = MAX(1, BATCH_BYTES / cs);
    uint64_t nb = MIN(max, DIV_ROUND_UP(count, cs));
    struct compressor c = { .z_ready = false };
    struct batch b = { 0 };
    int r = 0;

    if (s->data_file_name) {
        vimg_error(ENOTSUP, "compressed writes are not supported with an "
                   "external data file");
        return -1;
    }
    b.out = malloc(nb * cs);
    b.len = calloc(nb * 4, sizeof(uint64_t));
    if (!b.out || !b.len) {
        vimg_error(ENOMEM, "out of memory");
        r = -1;
        goto out;
    }
    b.pos = b.len + nb;
    b.host = b.pos + nb;
    b.entry = b.host + nb;
    while (count && r == 0) {
        uint64_t bytes = MIN(count, nb * cs);

        b.off = off;
        b.n = DIV_ROUND_UP(bytes, cs);
        r = write_batch(n, &c, &b, buf, bytes);
        buf += bytes;
        off += bytes;
        count -= bytes;
    }
out:
    compressor_fini(&c);
    free(b.out);
    free(b.len);
    return r;
}
