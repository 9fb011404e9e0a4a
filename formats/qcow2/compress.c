/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 compressed clusters: raw deflate (no zlib header, QEMU writes a
 * 4 KiB window, -12) and zstd frames.  Decompression stops once one
 * whole cluster has been produced; trailing bytes of the last sector are
 * ignored.  No lock needed: these work on caller buffers only (reading
 * the compressed bytes is a plain read of the image file).
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

ssize_t
qcow2_compress(const struct qcow2_state *s, uint8_t *dst, size_t dstlen,
               const uint8_t *src)
{
    if (s->compression_type == 1) {
        size_t r = ZSTD_compress(dst, dstlen, src, s->cluster_size, 3);
        if (ZSTD_isError(r)) {
            if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall)
                return 0;
            vimg_error(EIO, "zstd compression failed: %s",
                       ZSTD_getErrorName(r));
            return -1;
        }
        return r < s->cluster_size ? (ssize_t)r : 0;
    }

    z_stream z;
    int r;

    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 9, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) !=
        Z_OK) {
        vimg_error(ENOMEM, "deflateInit2 failed");
        return -1;
    }
    z.next_in = (Bytef *)src;
    z.avail_in = s->cluster_size;
    z.next_out = dst;
    z.avail_out = dstlen;
    r = deflate(&z, Z_FINISH);
    deflateEnd(&z);
    if (r != Z_STREAM_END)
        return 0; /* did not fit */
    return z.total_out < s->cluster_size ? (ssize_t)z.total_out : 0;
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
