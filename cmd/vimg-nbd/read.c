/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * READ.  The range is cut into pieces: holes (read as zeroes), bytes
 * read into the worker's buffer, and, on plain (not TLS) connections,
 * ranges of a host file that go to the socket with sendfile() without
 * passing through user space (raw images and uncompressed qcow2
 * clusters in a file opened without O_DIRECT).  With structured
 * replies holes become OFFSET_HOLE chunks and each run of data one
 * OFFSET_DATA chunk; with DF, or with simple replies, the whole range
 * is one stream of bytes (holes sent as zeroes).  The data is located
 * before wlock is taken; the reply goes out whole under it.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>

#include "checked.h"
#include "io.h"
#include "nbd-proto.h"
#include "reply.h"
#include "vector.h"
#include "vimg.h"

enum pkind { P_HOLE, P_BUF, P_FILE };

struct piece {
    uint64_t off, len; /* relative to the request */
    enum pkind kind;
    int fd;            /* P_FILE */
    uint64_t host;     /* P_FILE: offset in fd */
};
DEFINE_VECTOR(struct piece, piece_vector);

static const char zeroes[65536];

static int
add_piece(struct piece_vector *v, struct piece p)
{
    struct piece *l = v->len ? &v->ptr[v->len - 1] : NULL;

    if (l && l->kind == p.kind && l->off + l->len == p.off &&
        (p.kind != P_FILE || (l->fd == p.fd && l->host + l->len == p.host))) {
        l->len += p.len;
        return 0;
    }
    return piece_vector_append(v, p);
}

/* Locate RQ's data; P_BUF pieces are read into BUF at their offset.
 * -1 with vimg_error on a read error. */
static int
map_pieces(struct node *n, const struct req *rq, uint8_t *buf, bool zcopy,
           struct piece_vector *v)
{
    uint64_t done = 0;

    while (done < rq->len) {
        uint64_t off = rq->offset + done;
        struct piece p = { .off = done, .kind = P_BUF, .fd = -1 };
        struct extent e;

        if (node_map(n, off, rq->len - done, &e) == -1)
            return -1;
        p.len = e.length;
        if (!(e.flags & EXT_ALLOCATED) || (e.flags & EXT_ZERO))
            p.kind = P_HOLE;
        else if (zcopy && (e.flags & EXT_DATA) &&
                 (e.flags & EXT_OFFSET) && !(e.flags & EXT_COMPRESSED) &&
                 (p.fd = file_proto_fd(e.file)) >= 0) {
            p.kind = P_FILE;
            p.host = e.offset;
        }
        if (p.kind == P_BUF && node_pread(n, buf + done, p.len, off) == -1)
            return -1;
        if (add_piece(v, p) == -1)
            return -1;
        done += p.len;
    }
    return 0;
}

/* Send LEN bytes of FD from HOST; past the end of the file, zeroes. */
static int
send_file(struct conn *c, int fd, uint64_t host, uint64_t len)
{
    off_t pos = (off_t)host;

    while (len > 0) {
        ssize_t r = sendfile(c->fd, fd, &pos, MIN(len, 1u << 30));

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0) { /* short file: the rest reads as zeroes */
            while (len > 0) {
                size_t n = MIN(len, sizeof zeroes);

                if (conn_send(c, zeroes, n) == -1)
                    return -1;
                len -= n;
            }
            return 0;
        }
        len -= (uint64_t)r;
    }
    return 0;
}

static int
send_piece_bytes(struct conn *c, const struct piece *p, const uint8_t *buf)
{
    uint64_t len = p->len;

    switch (p->kind) {
    case P_FILE:
        return send_file(c, p->fd, p->host, p->len);
    case P_BUF:
        return conn_send(c, buf + p->off, p->len);
    case P_HOLE:
        while (len > 0) {
            size_t n = MIN(len, sizeof zeroes);

            if (conn_send(c, zeroes, n) == -1)
                return -1;
            len -= n;
        }
        return 0;
    }
    return -1;
}

/* Send a header (with MSG_MORE: its data follows). */
static int
send_head(struct conn *c, const void *h, size_t len)
{
    while (len > 0) {
        ssize_t r = send(c->fd, h, len, MSG_MORE | MSG_NOSIGNAL);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        h = (const char *)h + r;
        len -= (size_t)r;
    }
    return 0;
}

/* One OFFSET_DATA chunk (or hole) for pieces [A, B); LAST sets DONE. */
static int
send_group(struct conn *c, const struct req *rq, const struct piece *p,
           size_t a, size_t b, const uint8_t *buf, bool last)
{
    uint8_t h[32 + 12];
    uint64_t be = htobe64(rq->offset + p[a].off), len = 0;
    uint16_t fl = last ? NBD_REPLY_FLAG_DONE : 0;
    size_t hl;

    for (size_t i = a; i < b; i++)
        len += p[i].len;
    if (p[a].kind == P_HOLE) {
        uint32_t l32 = htobe32((uint32_t)len);

        hl = reply_chunk_header(c, rq, h, fl, NBD_REPLY_TYPE_OFFSET_HOLE, 12);
        memcpy(h + hl, &be, 8);
        memcpy(h + hl + 8, &l32, 4);
        return conn_send(c, h, hl + 12);
    }
    hl = reply_chunk_header(c, rq, h, fl, NBD_REPLY_TYPE_OFFSET_DATA,
                            8 + len);
    memcpy(h + hl, &be, 8);
    if (send_head(c, h, hl + 8) == -1)
        return -1;
    for (size_t i = a; i < b; i++)
        if (send_piece_bytes(c, &p[i], buf) == -1)
            return -1;
    return 0;
}

/* The reply on a plain connection, under wlock. */
static int
send_read_locked(struct conn *c, const struct req *rq,
                 const struct piece *p, size_t n, const uint8_t *buf)
{
    if (!c->structured) {
        uint8_t h[16];
        uint32_t v[2] = { htobe32(NBD_SIMPLE_REPLY_MAGIC), 0 };
        uint64_t ck = htobe64(rq->cookie);

        memcpy(h, v, 8);
        memcpy(h + 8, &ck, 8);
        if (send_head(c, h, 16) == -1)
            return -1;
        for (size_t i = 0; i < n; i++)
            if (send_piece_bytes(c, &p[i], buf) == -1)
                return -1;
        return 0;
    }
    if (rq->flags & NBD_CMD_FLAG_DF) {
        /* One data chunk: holes go as zeroes inside it. */
        uint8_t h[40];
        uint64_t be = htobe64(rq->offset);
        size_t hl = reply_chunk_header(c, rq, h, NBD_REPLY_FLAG_DONE,
                                       NBD_REPLY_TYPE_OFFSET_DATA,
                                       8 + rq->len);

        memcpy(h + hl, &be, 8);
        if (send_head(c, h, hl + 8) == -1)
            return -1;
        for (size_t i = 0; i < n; i++)
            if (send_piece_bytes(c, &p[i], buf) == -1)
                return -1;
        return 0;
    }
    for (size_t a = 0; a < n;) {
        size_t b = a + 1;

        /* Data pieces that follow each other make one chunk. */
        while (b < n && p[a].kind != P_HOLE && p[b].kind != P_HOLE)
            b++;
        if (send_group(c, rq, p, a, b, buf, b == n) == -1)
            return -1;
        a = b;
    }
    return 0;
}

/* The TLS path: everything through the worker's buffer and sendmsg. */
static int
read_buffered(struct worker *w, const struct req *rq,
              const struct piece *p, size_t n)
{
    struct conn *c = w->c;
    struct chunk *ch;
    uint8_t(*pre)[12];
    int r;

    for (size_t i = 0; i < n; i++)
        if (p[i].kind == P_HOLE)
            memset(w->buf + p[i].off, 0, p[i].len);
    if (!c->structured)
        return reply_simple(c, rq, 0, w->buf, rq->len);
    if ((rq->flags & NBD_CMD_FLAG_DF) || n == 1) {
        uint8_t off[8];
        uint64_t be = htobe64(rq->offset);
        struct chunk one = { NBD_REPLY_TYPE_OFFSET_DATA, off, 8, w->buf,
                             rq->len };

        if (n == 1 && p[0].kind == P_HOLE && !(rq->flags & NBD_CMD_FLAG_DF))
            one = (struct chunk){ 0 };
        if (one.type) {
            memcpy(off, &be, 8);
            return reply_chunks(c, rq, &one, 1);
        }
    }
    ch = calloc(n, sizeof *ch);
    pre = calloc(n, sizeof *pre);
    if (!ch || !pre) {
        free(ch);
        free(pre);
        return reply_error(c, rq, NBD_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t be = htobe64(rq->offset + p[i].off);
        uint32_t be32 = htobe32((uint32_t)p[i].len);

        memcpy(pre[i], &be, 8);
        if (p[i].kind == P_HOLE) {
            memcpy(pre[i] + 8, &be32, 4);
            ch[i] = (struct chunk){ NBD_REPLY_TYPE_OFFSET_HOLE, pre[i], 12,
                                    NULL, 0 };
        } else {
            ch[i] = (struct chunk){ NBD_REPLY_TYPE_OFFSET_DATA, pre[i], 8,
                                    w->buf + p[i].off, p[i].len };
        }
    }
    r = reply_chunks(c, rq, ch, n);
    free(ch);
    free(pre);
    return r;
}

int
do_read(struct worker *w, const struct req *rq)
{
    struct conn *c = w->c;
    bool zcopy = c->io == &conn_plain_io;
    struct piece_vector v = { 0 };
    int r;

    if (map_pieces(c->exp->node, rq, w->buf, zcopy, &v) == -1) {
        r = reply_error(c, rq, nbd_errno(errno), vimg_get_error());
    } else if (!zcopy) {
        r = read_buffered(w, rq, v.ptr, v.len);
    } else {
        pthread_mutex_lock(&c->wlock);
        r = send_read_locked(c, rq, v.ptr, v.len, w->buf);
        if (r == -1)
            conn_break(c);
        pthread_mutex_unlock(&c->wlock);
    }
    piece_vector_reset(&v);
    return r;
}
