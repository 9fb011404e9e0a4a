/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Replies (see reply.h): simple replies, structured and extended chunk
 * headers, batches of chunks in one sendmsg, errors.  Each reply goes
 * out whole under wlock; a failed send breaks the connection.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "nbd-proto.h"
#include "reply.h"

int
nbd_errno(int e)
{
    switch (e) {
    case EPERM: return NBD_EPERM;
    case EIO: return NBD_EIO;
    case ENOMEM: return NBD_ENOMEM;
    case EINVAL: return NBD_EINVAL;
    case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
    case EOVERFLOW: return NBD_EOVERFLOW;
    case ENOTSUP: return NBD_ENOTSUP;
    case ESHUTDOWN: return NBD_ESHUTDOWN;
    default: return NBD_EIO;
    }
}

void
conn_break(struct conn *c)
{
    atomic_store(&c->quit, true);
    shutdown(c->fd, SHUT_RDWR);
}

/* The simple reply: 16 bytes, then DATA (a READ's) when ERROR is 0. */
int
reply_simple(struct conn *c, const struct req *rq, int error,
            const void *data, size_t len)
{
    uint8_t h[16];
    uint32_t v[2] = { htobe32(NBD_SIMPLE_REPLY_MAGIC), htobe32(error) };
    uint64_t ck = htobe64(rq->cookie);
    struct iovec iov[2] = { { h, 16 }, { (void *)data, len } };
    int r;

    memcpy(h, v, 8);
    memcpy(h + 8, &ck, 8);
    pthread_mutex_lock(&c->wlock);
    r = conn_sendv(c, iov, !error && len ? 2 : 1);
    if (r == -1)
        conn_break(c);
    pthread_mutex_unlock(&c->wlock);
    return r;
}

/* Build the structured (or extended) chunk header for RQ in H; returns
 * its size. */
size_t
reply_chunk_header(const struct conn *c, const struct req *rq, uint8_t *h,
             uint16_t flags, uint16_t type, uint64_t plen)
{
    uint16_t v16;
    uint32_t v32;
    uint64_t v64;

    if (c->extended) {
        v32 = htobe32(NBD_EXTENDED_REPLY_MAGIC);
        memcpy(h, &v32, 4);
        v64 = htobe64(rq->offset);
        memcpy(h + 16, &v64, 8);
        v64 = htobe64(plen);
        memcpy(h + 24, &v64, 8);
    } else {
        v32 = htobe32(NBD_STRUCTURED_REPLY_MAGIC);
        memcpy(h, &v32, 4);
        v32 = htobe32((uint32_t)plen);
        memcpy(h + 16, &v32, 4);
    }
    v16 = htobe16(flags);
    memcpy(h + 4, &v16, 2);
    v16 = htobe16(type);
    memcpy(h + 6, &v16, 2);
    v64 = htobe64(rq->cookie);
    memcpy(h + 8, &v64, 8);
    return c->extended ? 32 : 20;
}

/* Send chunks CH[0..N) (N >= 1) as RQ's structured reply; the last one
 * carries the DONE flag.  Batches of chunks go out in one sendmsg. */
int
reply_chunks(struct conn *c, const struct req *rq, const struct chunk *ch,
            size_t n)
{
    enum { BATCH = 128 };
    uint8_t hdr[BATCH][32];
    struct iovec iov[BATCH * 3];
    size_t i = 0;
    int r = 0;

    pthread_mutex_lock(&c->wlock);
    while (r == 0 && i < n) {
        int cnt = 0;

        for (size_t b = 0; b < BATCH && i < n; b++, i++) {
            const struct chunk *k = &ch[i];
            uint16_t fl = i == n - 1 ? NBD_REPLY_FLAG_DONE : 0;

            iov[cnt].iov_base = hdr[b];
            iov[cnt++].iov_len = reply_chunk_header(c, rq, hdr[b], fl, k->type,
                                              k->pre_len + k->data_len);
            if (k->pre_len)
                iov[cnt++] = (struct iovec){ (void *)k->pre, k->pre_len };
            if (k->data_len)
                iov[cnt++] = (struct iovec){ (void *)k->data, k->data_len };
        }
        r = conn_sendv(c, iov, cnt);
    }
    if (r == -1)
        conn_break(c);
    pthread_mutex_unlock(&c->wlock);
    return r;
}

/* A success without payload: simple where allowed, else a NONE chunk. */
int
reply_ok(struct conn *c, const struct req *rq)
{
    struct chunk none = { NBD_REPLY_TYPE_NONE, NULL, 0, NULL, 0 };

    /* Once negotiated, a READ always gets a structured reply. */
    if (!c->extended && !(c->structured && rq->type == NBD_CMD_READ))
        return reply_simple(c, rq, 0, NULL, 0);
    return reply_chunks(c, rq, &none, 1);
}

int
reply_error(struct conn *c, const struct req *rq, int err, const char *msg)
{
    uint8_t pre[6 + 256];
    size_t ml = msg ? strnlen(msg, 256) : 0;
    uint32_t e = htobe32(err);
    uint16_t l = htobe16((uint16_t)ml);
    struct chunk ch = { NBD_REPLY_TYPE_ERROR, pre, 6 + ml, NULL, 0 };

    if (!c->structured)
        return reply_simple(c, rq, err, NULL, 0);
    memcpy(pre, &e, 4);
    memcpy(pre + 4, &l, 2);
    if (ml)
        memcpy(pre + 6, msg, ml);
    return reply_chunks(c, rq, &ch, 1);
}
