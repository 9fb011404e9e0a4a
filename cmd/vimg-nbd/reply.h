/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The transmission phase's shared pieces: a request as read off the
 * wire, a worker's buffer, and the replies (reply.c): simple replies,
 * structured or extended chunks, errors.  Every reply is sent whole
 * under the connection's wlock.
 */
#ifndef VIMG_NBD_REPLY_H
#define VIMG_NBD_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

struct req {
    uint16_t flags, type;
    uint64_t cookie, offset, len;
};

struct worker {
    struct conn *c;
    uint8_t *buf;
    size_t cap;
};

/* One reply chunk: a header (built by reply_chunks) and its payload. */
struct chunk {
    uint16_t type;
    const void *pre;  /* small fixed payload (offset, context id...) */
    size_t pre_len;
    const void *data; /* bulk payload, may be NULL */
    size_t data_len;
};

/* errno -> NBD error. */
int nbd_errno(int e);
/* The stream is unusable: stop reading and wake the workers. */
void conn_break(struct conn *c);
/* The simple reply: 16 bytes, then DATA (a READ's) when ERROR is 0. */
int reply_simple(struct conn *c, const struct req *rq, int error,
                 const void *data, size_t len);
/* Build the structured (or extended) chunk header for RQ in H (32
 * bytes of room); returns its size. */
size_t reply_chunk_header(const struct conn *c, const struct req *rq,
                          uint8_t *h, uint16_t flags, uint16_t type,
                          uint64_t plen);
/* Send CH[0..N) (N >= 1) as RQ's structured reply, DONE on the last. */
int reply_chunks(struct conn *c, const struct req *rq,
                 const struct chunk *ch, size_t n);
/* Success without payload / an error with an optional message. */
int reply_ok(struct conn *c, const struct req *rq);
int reply_error(struct conn *c, const struct req *rq, int err,
                const char *msg);

/* read.c, blockstatus.c */
int do_read(struct worker *w, const struct req *rq);
int do_block_status(struct worker *w, const struct req *rq);

#endif
