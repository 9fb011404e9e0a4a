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

#include "io.h"
#include "nbd-proto.h"
#include "reply.h"

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
        return reply_error(c, rq, nbd_errno(errno), vimg_get_error());
    return reply_ok(c, rq);
}

static void
handle_on(struct worker *w, const struct req *rq, bool payload,
          struct node *n)
{
    struct conn *c = w->c;
    bool fua = rq->flags & NBD_CMD_FLAG_FUA;
    unsigned zf = 0;
    int err = check_request(c, rq, payload), r = 0;

    if (err) {
        reply_error(c, rq, err, NULL);
        return;
    }
    if (rq->len == 0 && rq->type != NBD_CMD_FLUSH) {
        reply_ok(c, rq);
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

/* Run RQ on the export's node; the export's gate keeps the node from
 * changing (a mirror or snapshot pivot) while it runs. */
static void
handle(struct worker *w, const struct req *rq, bool payload)
{
    struct export *e = w->c->exp;

    pthread_rwlock_rdlock(&e->gate);
    handle_on(w, rq, payload, e->node);
    pthread_rwlock_unlock(&e->gate);
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
