/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The transmission phase: a pool of workers per connection.  A worker
 * takes rlock, reads one request (and a WRITE's payload) into its own
 * buffer, drops rlock, runs the request on the export's node, and sends
 * the whole reply under wlock, so replies may complete out of order but
 * never interleave on the wire.  Requests are checked as the spec and
 * qemu-nbd do (EINVAL for bad ranges, flags and commands, ENOSPC for
 * writes past the end, EPERM on a read-only export, ESHUTDOWN while the
 * server stops); a bad magic, or a WRITE payload over the maximum, is a
 * broken stream and ends the connection.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "bitmap.h"
#include "dirty.h"
#include "io.h"
#include "nbd-proto.h"
#include "server.h"
#include "vector.h"

struct req {
    uint16_t flags, type;
    uint64_t cookie, offset, len;
};

struct worker {
    struct conn *c;
    uint8_t *buf;
    size_t cap;
};

/* One reply piece: a chunk header (built by send_reply) and payload. */
struct chunk {
    uint16_t type;
    const void *pre; /* small fixed payload (offset, context id...) */
    size_t pre_len;
    const void *data; /* bulk payload, may be NULL */
    size_t data_len;
};

DEFINE_VECTOR(struct chunk, chunk_vector);
DEFINE_VECTOR(uint8_t, byte_vector);

static int
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

static void
conn_break(struct conn *c)
{
    atomic_store(&c->quit, true);
    shutdown(c->fd, SHUT_RDWR);
}

/* The simple reply: 16 bytes, then DATA (a READ's) when ERROR is 0. */
static int
send_simple(struct conn *c, const struct req *rq, int error,
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
static size_t
chunk_header(const struct conn *c, const struct req *rq, uint8_t *h,
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
static int
send_chunks(struct conn *c, const struct req *rq, const struct chunk *ch,
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
            iov[cnt++].iov_len = chunk_header(c, rq, hdr[b], fl, k->type,
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
static int
send_ok(struct conn *c, const struct req *rq)
{
    struct chunk none = { NBD_REPLY_TYPE_NONE, NULL, 0, NULL, 0 };

    /* Once negotiated, a READ always gets a structured reply. */
    if (!c->extended && !(c->structured && rq->type == NBD_CMD_READ))
        return send_simple(c, rq, 0, NULL, 0);
    return send_chunks(c, rq, &none, 1);
}

static int
send_error(struct conn *c, const struct req *rq, int err, const char *msg)
{
    uint8_t pre[6 + 256];
    size_t ml = msg ? strnlen(msg, 256) : 0;
    uint32_t e = htobe32(err);
    uint16_t l = htobe16((uint16_t)ml);
    struct chunk ch = { NBD_REPLY_TYPE_ERROR, pre, 6 + ml, NULL, 0 };

    if (!c->structured)
        return send_simple(c, rq, err, NULL, 0);
    memcpy(pre, &e, 4);
    memcpy(pre + 4, &l, 2);
    memcpy(pre + 6, msg, ml);
    return send_chunks(c, rq, &ch, 1);
}

/* --- READ ------------------------------------------------------------ */

struct piece {
    uint64_t off, len; /* relative to the request */
    bool hole;
};
DEFINE_VECTOR(struct piece, piece_vector);

/* Split RQ's range into data and hole pieces and read the data ones
 * into BUF.  -1 with vimg_error on a read error. */
static int
read_pieces(struct node *n, const struct req *rq, uint8_t *buf,
            struct piece_vector *v)
{
    uint64_t done = 0;

    while (done < rq->len) {
        struct vimg_extent ext;
        bool hole;

        if (node_block_status(n, false, rq->offset + done, rq->len - done,
                              &ext) == -1)
            return -1;
        hole = ext.flags & VIMG_EXT_ZERO;
        if (!hole && node_pread(n, buf + done, ext.length,
                                rq->offset + done) == -1)
            return -1;
        if (v->len && v->ptr[v->len - 1].hole == hole)
            v->ptr[v->len - 1].len += ext.length;
        else if (piece_vector_append(v, (struct piece){ done, ext.length,
                                                         hole }) == -1)
            return -1;
        done += ext.length;
    }
    return 0;
}

static int
do_read(struct worker *w, const struct req *rq)
{
    struct conn *c = w->c;
    struct node *n = c->exp->node;
    struct piece_vector v = { 0 };
    struct chunk *ch = NULL;
    uint8_t (*pre)[12] = NULL;
    int r;

    if (!c->structured || (rq->flags & NBD_CMD_FLAG_DF)) {
        uint8_t off[8];
        uint64_t be = htobe64(rq->offset);
        struct chunk one = { NBD_REPLY_TYPE_OFFSET_DATA, off, 8, w->buf,
                             rq->len };

        if (node_pread(n, w->buf, rq->len, rq->offset) == -1)
            return send_error(c, rq, nbd_errno(errno), vimg_get_error());
        if (!c->structured)
            return send_simple(c, rq, 0, w->buf, rq->len);
        memcpy(off, &be, 8);
        return send_chunks(c, rq, &one, 1);
    }
    if (read_pieces(n, rq, w->buf, &v) == -1) {
        r = send_error(c, rq, nbd_errno(errno), vimg_get_error());
        goto out;
    }
    ch = calloc(v.len, sizeof *ch);
    pre = calloc(v.len, sizeof *pre);
    if (!ch || !pre) {
        r = send_error(c, rq, NBD_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < v.len; i++) {
        const struct piece *p = &v.ptr[i];
        uint64_t be = htobe64(rq->offset + p->off);
        uint32_t be32 = htobe32((uint32_t)p->len);

        memcpy(pre[i], &be, 8);
        if (p->hole) {
            memcpy(pre[i] + 8, &be32, 4);
            ch[i] = (struct chunk){ NBD_REPLY_TYPE_OFFSET_HOLE, pre[i], 12,
                                    NULL, 0 };
        } else {
            ch[i] = (struct chunk){ NBD_REPLY_TYPE_OFFSET_DATA, pre[i], 8,
                                    w->buf + p->off, p->len };
        }
    }
    r = send_chunks(c, rq, ch, v.len);
out:
    free(ch);
    free(pre);
    piece_vector_reset(&v);
    return r;
}

/* --- BLOCK_STATUS ---------------------------------------------------- */

struct bs_ext {
    uint64_t len;
    uint32_t flags;
};
DEFINE_VECTOR(struct bs_ext, bs_vector);

/* Append (LEN, FLAGS), merging with the previous extent. */
static int
bs_add(struct bs_vector *v, uint64_t len, uint32_t flags)
{
    if (v->len && v->ptr[v->len - 1].flags == flags) {
        v->ptr[v->len - 1].len += len;
        return 0;
    }
    return bs_vector_append(v, (struct bs_ext){ len, flags });
}

static bool
bs_full(const struct bs_vector *v, bool one)
{
    return one ? v->len >= 1 : v->len >= NBD_MAX_EXTENTS;
}

/* base:allocation (DEPTH false) or qemu:allocation-depth (true). */
static int
bs_chain(struct node *n, bool depth, uint64_t off, uint64_t end, bool one,
         struct bs_vector *v)
{
    while (off < end && !bs_full(v, one)) {
        struct vimg_extent ext;
        uint32_t f;

        if (node_block_status(n, !depth, off, end - off, &ext) == -1)
            return -1;
        if (depth)
            f = ext.flags & VIMG_EXT_ALLOCATED ? (uint32_t)ext.depth + 1 : 0;
        else
            f = (ext.flags & VIMG_EXT_DATA ? 0 : NBD_STATE_HOLE) |
                (ext.flags & VIMG_EXT_ZERO ? NBD_STATE_ZERO : 0);
        if (bs_add(v, ext.length, f) == -1)
            return -1;
        off += ext.length;
    }
    return 0;
}

static int
bs_bitmap(const struct export_bitmap *eb, uint64_t off, uint64_t end,
          bool one, struct bs_vector *v)
{
    const struct bitmap *bm = eb->bm;
    uint64_t bend;
    int r = 0;

    if (eb->owner)
        dirty_lock(eb->owner);
    bend = end < bitmap_size(bm) ? end : bitmap_size(bm);
    while (off < bend && !bs_full(v, one) && r == 0) {
        bool dirty = bitmap_get(bm, off);
        int64_t next = dirty ? bitmap_next_clean(bm, off, bend)
                             : bitmap_next_dirty(bm, off, bend);
        uint64_t stop = next < 0 ? bend : (uint64_t)next;

        r = bs_add(v, stop - off, dirty ? NBD_STATE_DIRTY : 0);
        off = stop;
    }
    if (eb->owner)
        dirty_unlock(eb->owner);
    if (r == 0 && off < end && !bs_full(v, one))
        r = bs_add(v, end - off, 0);
    return r;
}

/* Encode V as the payload of one status chunk for context ID. */
static int
bs_encode(const struct conn *c, uint32_t id, const struct bs_vector *v,
          struct byte_vector *out)
{
    size_t each = c->extended ? 16 : 8;
    size_t head = c->extended ? 8 : 4;
    uint8_t *p;
    uint32_t be = htobe32(id);

    if (byte_vector_reserve(out, head + v->len * each) == -1)
        return -1;
    p = out->ptr;
    memcpy(p, &be, 4);
    if (c->extended) {
        be = htobe32((uint32_t)v->len);
        memcpy(p + 4, &be, 4);
    }
    p += head;
    for (size_t i = 0; i < v->len; i++, p += each) {
        if (c->extended) {
            uint64_t a = htobe64(v->ptr[i].len), b = htobe64(v->ptr[i].flags);

            memcpy(p, &a, 8);
            memcpy(p + 8, &b, 8);
        } else {
            uint32_t a = htobe32((uint32_t)v->ptr[i].len);
            uint32_t b = htobe32(v->ptr[i].flags);

            memcpy(p, &a, 4);
            memcpy(p + 4, &b, 4);
        }
    }
    out->len = head + v->len * each;
    return 0;
}

static int
do_block_status(struct worker *w, const struct req *rq)
{
    struct conn *c = w->c;
    struct export *e = c->exp;
    bool one = rq->flags & NBD_CMD_FLAG_REQ_ONE;
    uint64_t end = rq->offset + rq->len;
    struct byte_vector bufs[2 + EXPORT_MAX_BITMAPS] = { 0 };
    struct chunk ch[2 + EXPORT_MAX_BITMAPS] = { 0 };
    uint16_t type = c->extended ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT
                                : NBD_REPLY_TYPE_BLOCK_STATUS;
    size_t n = 0;
    int r = 0;

    for (unsigned id = 0; id < 2 + e->nr_bitmaps && r == 0; id++) {
        struct bs_vector v = { 0 };

        if (id == META_ID_BASE && c->meta_base)
            r = bs_chain(e->node, false, rq->offset, end, one, &v);
        else if (id == META_ID_DEPTH && c->meta_depth)
            r = bs_chain(e->node, true, rq->offset, end, one, &v);
        else if (id >= META_ID_BITMAP0 &&
                 (c->meta_bitmaps & (1ull << (id - META_ID_BITMAP0))))
            r = bs_bitmap(&e->bitmaps[id - META_ID_BITMAP0], rq->offset,
                          end, one, &v);
        else
            continue;
        if (r == 0)
            r = bs_encode(c, id, &v, &bufs[n]);
        if (r == 0)
            ch[n] = (struct chunk){ type, NULL, 0, bufs[n].ptr, bufs[n].len };
        n++;
        bs_vector_reset(&v);
    }
    if (r == -1)
        r = send_error(c, rq, nbd_errno(errno), vimg_get_error());
    else
        r = send_chunks(c, rq, ch, n);
    for (size_t i = 0; i < n; i++)
        byte_vector_reset(&bufs[i]);
    return r;
}

/* --- the rest, and the worker loop ----------------------------------- */

/* 0, or the NBD error RQ deserves before it runs. */
static int
check_request(struct conn *c, const struct req *rq, bool payload)
{
    const struct export *e = c->exp;
    uint16_t valid = NBD_CMD_FLAG_FUA;
    bool write = false;

    switch (rq->type) {
    case NBD_CMD_READ:
        if (c->structured)
            valid |= NBD_CMD_FLAG_DF;
        break;
    case NBD_CMD_WRITE:
        if (c->extended)
            valid |= NBD_CMD_FLAG_PAYLOAD_LEN;
        write = true;
        break;
    case NBD_CMD_TRIM:
        write = true;
        break;
    case NBD_CMD_WRITE_ZEROES:
        valid |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
        write = true;
        break;
    case NBD_CMD_BLOCK_STATUS:
        valid |= NBD_CMD_FLAG_REQ_ONE;
        break;
    case NBD_CMD_FLUSH:
    case NBD_CMD_CACHE:
        break;
    default:
        return NBD_EINVAL;
    }
    if ((rq->flags & ~valid) || (payload && rq->type != NBD_CMD_WRITE))
        return NBD_EINVAL;
    if (atomic_load(&c->srv->stopping))
        return NBD_ESHUTDOWN;
    if (write && !e->writable)
        return NBD_EPERM;
    if (rq->type == NBD_CMD_FLUSH)
        return 0;
    if (rq->offset > e->size || rq->len > e->size - rq->offset)
        return rq->type == NBD_CMD_WRITE ||
                       rq->type == NBD_CMD_WRITE_ZEROES
                   ? NBD_ENOSPC
                   : NBD_EINVAL;
    if (rq->type == NBD_CMD_READ && rq->len > NBD_MAX_PAYLOAD)
        return rq->flags & NBD_CMD_FLAG_DF ? NBD_EOVERFLOW : NBD_EINVAL;
    if (rq->type == NBD_CMD_BLOCK_STATUS &&
        ((!c->meta_base && !c->meta_depth && !c->meta_bitmaps) ||
         rq->len == 0))
        return NBD_EINVAL;
    return 0;
}

static int
reply_result(struct conn *c, const struct req *rq, int r)
{
    if (r == -1)
        return send_error(c, rq, nbd_errno(errno), vimg_get_error());
    return send_ok(c, rq);
}

static void
handle(struct worker *w, const struct req *rq, bool payload)
{
    struct conn *c = w->c;
    struct node *n = c->exp->node;
    bool fua = rq->flags & NBD_CMD_FLAG_FUA;
    unsigned zf = 0;
    int err = check_request(c, rq, payload), r = 0;

    if (err) {
        send_error(c, rq, err, NULL);
        return;
    }
    if (rq->len == 0 && rq->type != NBD_CMD_FLUSH) {
        send_ok(c, rq);
        return;
    }
    switch (rq->type) {
    case NBD_CMD_READ:
        do_read(w, rq);
        return;
    case NBD_CMD_BLOCK_STATUS:
        do_block_status(w, rq);
        return;
    case NBD_CMD_WRITE:
        r = node_pwrite(n, w->buf, rq->len, rq->offset, fua ? REQ_FUA : 0);
        break;
    case NBD_CMD_WRITE_ZEROES:
        if (!(rq->flags & NBD_CMD_FLAG_NO_HOLE))
            zf |= REQ_MAY_UNMAP;
        if (rq->flags & NBD_CMD_FLAG_FAST_ZERO)
            zf |= REQ_FAST;
        r = node_pwrite_zeroes(n, rq->offset, rq->len,
                               zf | (fua ? REQ_FUA : 0));
        break;
    case NBD_CMD_TRIM:
        r = node_discard(n, rq->offset, rq->len);
        if (r == 0 && fua)
            r = node_flush(n);
        break;
    case NBD_CMD_FLUSH:
        r = node_flush(n);
        break;
    case NBD_CMD_CACHE:
        break; /* a hint; the page cache does the rest */
    }
    reply_result(c, rq, r);
}

static int
buf_reserve(struct worker *w, uint64_t len)
{
    uint8_t *p;

    if (len <= w->cap)
        return 0;
    p = realloc(w->buf, len);
    if (!p)
        return -1;
    w->buf = p;
    w->cap = len;
    return 0;
}

/* Read one request under rlock: 1 to serve it, 0 at DISC or end of
 * stream, -1 when the stream is broken. */
static int
read_request(struct worker *w, struct req *rq, bool *payload)
{
    struct conn *c = w->c;
    uint8_t h[32];
    uint32_t magic;
    uint16_t v16;
    uint64_t v64;

    if (conn_recv(c, h, c->extended ? 32 : 28) == -1)
        return 0;
    memcpy(&magic, h, 4);
    magic = be32toh(magic);
    if (magic != (c->extended ? NBD_EXTENDED_REQUEST_MAGIC
                              : NBD_REQUEST_MAGIC))
        return -1;
    memcpy(&v16, h + 4, 2);
    rq->flags = be16toh(v16);
    memcpy(&v16, h + 6, 2);
    rq->type = be16toh(v16);
    memcpy(&v64, h + 8, 8);
    rq->cookie = be64toh(v64);
    memcpy(&v64, h + 16, 8);
    rq->offset = be64toh(v64);
    if (c->extended) {
        memcpy(&v64, h + 24, 8);
        rq->len = be64toh(v64);
    } else {
        uint32_t v32;

        memcpy(&v32, h + 24, 4);
        rq->len = be32toh(v32);
    }
    if (rq->type == NBD_CMD_DISC)
        return 0;
    *payload = rq->type == NBD_CMD_WRITE ||
               (c->extended && (rq->flags & NBD_CMD_FLAG_PAYLOAD_LEN));
    if (rq->type == NBD_CMD_READ && rq->len <= NBD_MAX_PAYLOAD &&
        buf_reserve(w, rq->len) == -1)
        return -1;
    if (!*payload)
        return 1;
    if (rq->len > NBD_MAX_PAYLOAD || buf_reserve(w, rq->len) == -1 ||
        conn_recv(c, w->buf, rq->len) == -1)
        return -1;
    return 1;
}

static void *
worker_main(void *arg)
{
    struct worker w = { .c = arg };
    struct conn *c = w.c;

    for (;;) {
        struct req rq;
        bool payload = false;
        int r;

        pthread_mutex_lock(&c->rlock);
        if (atomic_load(&c->quit)) {
            pthread_mutex_unlock(&c->rlock);
            break;
        }
        r = read_request(&w, &rq, &payload);
        if (r <= 0)
            atomic_store(&c->quit, true);
        pthread_mutex_unlock(&c->rlock);
        if (r == -1)
            conn_break(c);
        if (r <= 0)
            break;
        handle(&w, &rq, payload);
    }
    free(w.buf);
    return NULL;
}

void
transmission(struct conn *c)
{
    unsigned nw = c->srv->workers ? c->srv->workers : 1;
    pthread_t *th = calloc(nw, sizeof *th);
    unsigned started = 0;

    c->eflags = handshake_eflags(c, c->exp);
    if (th)
        for (; started + 1 < nw; started++)
            if (pthread_create(&th[started], NULL, worker_main, c) != 0)
                break;
    worker_main(c);
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    free(th);
}
