/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fixed-newstyle handshake: greeting, then the option loop until GO
 * or EXPORT_NAME picks an export.  Every option's payload is consumed
 * whole before it is answered, so an error never desynchronises the
 * stream (an option over NBD_MAX_PAYLOAD closes the connection instead);
 * unknown options get ERR_UNSUP and the loop goes on.  When TLS
 * credentials are configured, TLS is forced: before STARTTLS everything
 * but ABORT gets ERR_TLS_REQD (EXPORT_NAME, which cannot be refused
 * politely, closes the connection), and STARTTLS wipes what was
 * negotiated before it.  INFO and GO give identical answers.
 */
#include <endian.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "nbd-proto.h"
#include "server.h"

#define HS_CLOSE (-1)
#define HS_NEXT 0
#define HS_GO 1

static int
send_rep(struct conn *c, uint32_t opt, uint32_t type, const void *data,
         uint32_t len)
{
    struct {
        uint64_t magic;
        uint32_t opt, type, len;
    } __attribute__((packed)) h = { htobe64(NBD_REP_MAGIC), htobe32(opt),
                                    htobe32(type), htobe32(len) };
    struct iovec iov[2] = { { &h, sizeof h }, { (void *)data, len } };

    _Static_assert(sizeof h == 20, "option reply header");
    return conn_sendv(c, iov, len ? 2 : 1);
}

static int __attribute__((format(printf, 4, 5)))
send_err(struct conn *c, uint32_t opt, uint32_t type, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = sizeof msg - 1;
    return send_rep(c, opt, type, msg, (uint32_t)n);
}

static int
send_ack(struct conn *c, uint32_t opt)
{
    return send_rep(c, opt, NBD_REP_ACK, NULL, 0);
}

uint16_t
handshake_eflags(const struct conn *c, const struct export *e)
{
    uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
                 NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;

    if (c->structured)
        f |= NBD_FLAG_SEND_DF;
    if (e->writable)
        f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
             NBD_FLAG_SEND_FAST_ZERO;
    else
        f |= NBD_FLAG_READ_ONLY;
    if (e->multi_conn)
        f |= NBD_FLAG_CAN_MULTI_CONN;
    return f;
}

static void
reset_meta(struct conn *c)
{
    export_put(c->srv, c->meta_exp);
    c->meta_exp = NULL;
    c->meta_base = c->meta_depth = false;
    c->meta_bitmaps = 0;
}

/* A bounded reader over one option's payload. */
struct rd {
    const uint8_t *p;
    uint32_t left;
};

static bool
rd_u32(struct rd *r, uint32_t *v)
{
    if (r->left < 4)
        return false;
    memcpy(v, r->p, 4);
    *v = be32toh(*v);
    r->p += 4;
    r->left -= 4;
    return true;
}

static bool
rd_u16(struct rd *r, uint16_t *v)
{
    if (r->left < 2)
        return false;
    memcpy(v, r->p, 2);
    *v = be16toh(*v);
    r->p += 2;
    r->left -= 2;
    return true;
}

/* A length-prefixed string, as a malloc'd C string (NULs refused). */
static char *
rd_str(struct rd *r)
{
    uint32_t len;
    char *s;

    if (!rd_u32(r, &len) || len > r->left || len > NBD_MAX_STRING ||
        memchr(r->p, 0, len))
        return NULL;
    s = strndup((const char *)r->p, len);
    r->p += len;
    r->left -= len;
    return s;
}

static int
send_server_rep(struct conn *c, const struct export *e)
{
    size_t nl = strlen(e->name);
    size_t dl = e->description ? strlen(e->description) : 0;
    CLEANUP_FREE uint8_t *buf = malloc(4 + nl + dl);
    uint32_t be = htobe32((uint32_t)nl);

    if (!buf)
        return -1;
    memcpy(buf, &be, 4);
    memcpy(buf + 4, e->name, nl);
    if (dl)
        memcpy(buf + 4 + nl, e->description, dl);
    return send_rep(c, NBD_OPT_LIST, NBD_REP_SERVER, buf,
                    (uint32_t)(4 + nl + dl));
}

static int
opt_list(struct conn *c, uint32_t len)
{
    struct server *srv = c->srv;
    struct export **v;
    size_t n;
    int r = 0;

    if (len)
        return send_err(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
                        "OPT_LIST should not have length");
    /* Take the list with references, then send without the lock. */
    pthread_rwlock_rdlock(&srv->exports_lock);
    n = srv->nr_exports;
    v = calloc(n + 1, sizeof *v);
    for (size_t i = 0; v && i < n; i++) {
        v[i] = srv->exports[i];
        atomic_fetch_add(&v[i]->refcnt, 1);
    }
    pthread_rwlock_unlock(&srv->exports_lock);
    if (!v)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (r == 0)
            r = send_server_rep(c, v[i]);
        export_put(srv, v[i]);
    }
    free(v);
    return r == -1 ? -1 : send_ack(c, NBD_OPT_LIST);
}

static int
send_info(struct conn *c, uint32_t opt, uint16_t type, const void *data,
          size_t len)
{
    uint8_t buf[2 + NBD_MAX_STRING];
    uint16_t be = htobe16(type);

    memcpy(buf, &be, 2);
    memcpy(buf + 2, data, len);
    return send_rep(c, opt, NBD_REP_INFO, buf, (uint32_t)(2 + len));
}

static int info_replies(struct conn *c, uint32_t opt, struct export *e,
                        bool want_name);

/* INFO and GO: the same replies, then GO starts transmission. */
static int
opt_info_go(struct conn *c, uint32_t opt, struct rd *r)
{
    CLEANUP_FREE char *name = rd_str(r);
    bool want_name = false;
    struct export *e;
    uint16_t nreq, id;

    if (!name || !rd_u16(r, &nreq) || r->left != 2u * nreq)
        return send_err(c, opt, NBD_REP_ERR_INVALID,
                        "malformed option request");
    while (rd_u16(r, &id))
        want_name |= id == NBD_INFO_NAME;
    e = export_get(c->srv, name);
    if (!e)
        return send_err(c, opt, NBD_REP_ERR_UNKNOWN,
                        "export '%s' not present", name);
    if (info_replies(c, opt, e, want_name) == -1) {
        export_put(c->srv, e);
        return HS_CLOSE;
    }
    if (opt == NBD_OPT_INFO) {
        export_put(c->srv, e);
        return HS_NEXT;
    }
    export_put(c->srv, c->exp);
    c->exp = e;
    if (c->meta_exp != e)
        reset_meta(c);
    return HS_GO;
}

/* The INFO replies for E and the final ACK (INFO and GO alike). */
static int
info_replies(struct conn *c, uint32_t opt, struct export *e, bool want_name)
{
    uint8_t bs[12], ex[10];
    uint32_t v32;
    uint64_t v64;
    uint16_t v16;

    if (want_name && send_info(c, opt, NBD_INFO_NAME, e->name,
                               strlen(e->name)) == -1)
        return -1;
    /* Like qemu-nbd, the description goes out whether asked or not. */
    if (e->description &&
        send_info(c, opt, NBD_INFO_DESCRIPTION, e->description,
                  strlen(e->description)) == -1)
        return -1;
    v32 = htobe32(1);
    memcpy(bs, &v32, 4);
    v32 = htobe32(4096);
    memcpy(bs + 4, &v32, 4);
    v32 = htobe32(NBD_MAX_PAYLOAD);
    memcpy(bs + 8, &v32, 4);
    if (send_info(c, opt, NBD_INFO_BLOCK_SIZE, bs, sizeof bs) == -1)
        return -1;
    v64 = htobe64(e->size);
    memcpy(ex, &v64, 8);
    v16 = htobe16(handshake_eflags(c, e));
    memcpy(ex + 8, &v16, 2);
    if (send_info(c, opt, NBD_INFO_EXPORT, ex, sizeof ex) == -1 ||
        send_ack(c, opt) == -1)
        return -1;
    return 0;
}

static int
opt_export_name(struct conn *c, const uint8_t *data, uint32_t len)
{
    char name[NBD_MAX_STRING + 1];
    uint8_t reply[8 + 2 + 124] = { 0 };
    struct export *e;
    uint64_t v64;
    uint16_t v16;

    if (c->extended || len > NBD_MAX_STRING || memchr(data, 0, len))
        return HS_CLOSE;
    memcpy(name, data, len);
    name[len] = '\0';
    e = export_get(c->srv, name);
    if (!e)
        return HS_CLOSE;
    export_put(c->srv, c->exp);
    c->exp = e;
    reset_meta(c);
    v64 = htobe64(e->size);
    memcpy(reply, &v64, 8);
    v16 = htobe16(handshake_eflags(c, e));
    memcpy(reply + 8, &v16, 2);
    if (conn_send(c, reply, c->no_zeroes ? 10 : sizeof reply) == -1)
        return HS_CLOSE;
    return HS_GO;
}

/* Does QUERY (from LIST or SET) select the contexts of E?  Adds them to
 * *BASE, *DEPTH and *BITMAPS. */
static void
meta_match(const struct export *e, const char *q, bool list, bool *base,
           bool *depth, uint64_t *bitmaps)
{
    static const char bm_prefix[] = "qemu:dirty-bitmap:";
    const size_t bpl = sizeof bm_prefix - 1;

    if (!strcmp(q, "base:allocation") || (list && !strcmp(q, "base:")))
        *base = true;
    if (e->alloc_depth && (!strcmp(q, "qemu:allocation-depth") ||
                           (list && !strcmp(q, "qemu:"))))
        *depth = true;
    if (list && (!strcmp(q, "qemu:") || !strcmp(q, bm_prefix))) {
        for (unsigned i = 0; i < e->nr_bitmaps; i++)
            *bitmaps |= 1ull << i;
        return;
    }
    if (strncmp(q, bm_prefix, bpl))
        return;
    for (unsigned i = 0; i < e->nr_bitmaps; i++)
        if (!strcmp(q + bpl, e->bitmaps[i].name))
            *bitmaps |= 1ull << i;
}

static int
send_meta(struct conn *c, uint32_t opt, uint32_t id, const char *prefix,
          const char *name)
{
    char buf[4 + 64 + NBD_MAX_STRING];
    uint32_t be = htobe32(id);
    int n = snprintf(buf + 4, sizeof buf - 4, "%s%s", prefix, name);

    memcpy(buf, &be, 4);
    if (n < 0 || (size_t)n >= sizeof buf - 4)
        return -1;
    return send_rep(c, opt, NBD_REP_META_CONTEXT, buf, (uint32_t)(4 + n));
}

/* Answer LIST or SET for export E: the contexts, then ACK.  Sets
 * *SET_OK when a SET selection was made. */
static int
meta_replies(struct conn *c, uint32_t opt, struct rd *r, struct export *e,
             bool *set_ok)
{
    bool list = opt == NBD_OPT_LIST_META_CONTEXT;
    bool base = false, depth = false;
    uint64_t bitmaps = 0;
    uint32_t nq;

    if (!rd_u32(r, &nq))
        return send_err(c, opt, NBD_REP_ERR_INVALID,
                        "malformed option request");
    if (list && nq == 0) {
        base = true;
        meta_match(e, "qemu:", true, &base, &depth, &bitmaps);
    }
    for (uint32_t i = 0; i < nq; i++) {
        CLEANUP_FREE char *q = rd_str(r);

        if (!q)
            return send_err(c, opt, NBD_REP_ERR_INVALID,
                            "malformed option request");
        meta_match(e, q, list, &base, &depth, &bitmaps);
    }
    if (r->left)
        return send_err(c, opt, NBD_REP_ERR_INVALID,
                        "malformed option request");
    if (base && send_meta(c, opt, list ? 0 : META_ID_BASE, "",
                          "base:allocation") == -1)
        return HS_CLOSE;
    if (depth && send_meta(c, opt, list ? 0 : META_ID_DEPTH, "",
                           "qemu:allocation-depth") == -1)
        return HS_CLOSE;
    for (unsigned i = 0; i < e->nr_bitmaps; i++)
        if ((bitmaps & (1ull << i)) &&
            send_meta(c, opt, list ? 0 : META_ID_BITMAP0 + i,
                      "qemu:dirty-bitmap:", e->bitmaps[i].name) == -1)
            return HS_CLOSE;
    if (!list) {
        c->meta_base = base;
        c->meta_depth = depth;
        c->meta_bitmaps = bitmaps;
        *set_ok = true;
    }
    return send_ack(c, opt);
}

static int
opt_meta(struct conn *c, uint32_t opt, struct rd *r)
{
    bool list = opt == NBD_OPT_LIST_META_CONTEXT, set_ok = false;
    CLEANUP_FREE char *name = NULL;
    struct export *e;
    int ret;

    if (!list)
        reset_meta(c); /* SET replaces the selection, even on failure */
    if (!list && !c->structured)
        return send_err(c, opt, NBD_REP_ERR_INVALID,
                        "structured replies not negotiated");
    name = rd_str(r);
    if (!name)
        return send_err(c, opt, NBD_REP_ERR_INVALID,
                        "malformed option request");
    e = export_get(c->srv, name);
    if (!e)
        return send_err(c, opt, NBD_REP_ERR_UNKNOWN,
                        "export '%s' not present", name);
    ret = meta_replies(c, opt, r, e, &set_ok);
    if (set_ok && ret != HS_CLOSE)
        c->meta_exp = e; /* keeps the reference */
    else
        export_put(c->srv, e);
    return ret;
}

static int
opt_starttls(struct conn *c, uint32_t len)
{
    if (len)
        return send_err(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID,
                        "OPT_STARTTLS should not have length");
    if (!c->srv->tls)
        return send_err(c, NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY,
                        "TLS not configured");
    if (c->tls)
        return send_err(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID,
                        "TLS already active");
    if (send_ack(c, NBD_OPT_STARTTLS) == -1 || tls_start(c) == -1)
        return HS_CLOSE;
    /* Nothing negotiated in clear survives. */
    c->tls = true;
    c->structured = c->extended = false;
    reset_meta(c);
    return HS_NEXT;
}

static int
opt_flag(struct conn *c, uint32_t opt, uint32_t len)
{
    if (len)
        return send_err(c, opt, NBD_REP_ERR_INVALID,
                        "option should not have length");
    if (opt == NBD_OPT_STRUCTURED_REPLY) {
        if (c->extended)
            return send_err(c, opt, NBD_REP_ERR_EXT_HEADER_REQD,
                            "extended headers already negotiated");
        if (c->structured)
            return send_err(c, opt, NBD_REP_ERR_INVALID,
                            "structured replies already negotiated");
        c->structured = true;
    } else {
        if (c->extended)
            return send_err(c, opt, NBD_REP_ERR_INVALID,
                            "extended headers already negotiated");
        c->extended = c->structured = true;
    }
    return send_ack(c, opt);
}

static int
option(struct conn *c, uint32_t opt, uint32_t len)
{
    CLEANUP_FREE uint8_t *data = NULL;
    struct rd r;

    if (len > NBD_MAX_OPTION) {
        /* Skip what a client may plausibly send; beyond that, like
         * qemu-nbd, hang up rather than read gigabytes. */
        if (len > NBD_MAX_PAYLOAD || opt == NBD_OPT_EXPORT_NAME ||
            conn_skip(c, len) == -1)
            return HS_CLOSE;
        return send_err(c, opt, NBD_REP_ERR_TOO_BIG, "option too long");
    }
    data = malloc(len ? len : 1);
    if (!data || conn_recv(c, data, len) == -1)
        return HS_CLOSE;
    r = (struct rd){ data, len };

    if (c->srv->tls && !c->tls && opt != NBD_OPT_STARTTLS &&
        opt != NBD_OPT_ABORT) {
        if (opt == NBD_OPT_EXPORT_NAME)
            return HS_CLOSE;
        return send_err(c, opt, NBD_REP_ERR_TLS_REQD,
                        "Option 0x%x not permitted before TLS", opt);
    }
    switch (opt) {
    case NBD_OPT_EXPORT_NAME:
        return opt_export_name(c, data, len);
    case NBD_OPT_ABORT:
        send_ack(c, opt);
        return HS_CLOSE;
    case NBD_OPT_LIST:
        return opt_list(c, len);
    case NBD_OPT_STARTTLS:
        return opt_starttls(c, len);
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        return opt_info_go(c, opt, &r);
    case NBD_OPT_STRUCTURED_REPLY:
    case NBD_OPT_EXTENDED_HEADERS:
        return opt_flag(c, opt, len);
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return opt_meta(c, opt, &r);
    default:
        return send_err(c, opt, NBD_REP_ERR_UNSUP,
                        "Unsupported option %u", opt);
    }
}

int
handshake(struct conn *c)
{
    struct {
        uint64_t magic, opt;
        uint16_t flags;
    } __attribute__((packed)) hello = {
        htobe64(NBD_MAGIC), htobe64(NBD_IHAVEOPT),
        htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)
    };
    struct {
        uint64_t magic;
        uint32_t opt, len;
    } __attribute__((packed)) h;
    uint32_t cflags;

    if (conn_send(c, &hello, sizeof hello) == -1 ||
        conn_recv(c, &cflags, 4) == -1)
        return -1;
    cflags = be32toh(cflags);
    if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
        return -1;
    c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;
    for (;;) {
        int r;

        if (conn_recv(c, &h, sizeof h) == -1 ||
            be64toh(h.magic) != NBD_IHAVEOPT)
            return -1;
        if (atomic_load(&c->srv->stopping)) {
            conn_skip(c, be32toh(h.len));
            send_err(c, be32toh(h.opt), NBD_REP_ERR_SHUTDOWN,
                     "server shutting down");
            return -1;
        }
        r = option(c, be32toh(h.opt), be32toh(h.len));
        if (r == HS_CLOSE)
            return -1;
        if (r == HS_GO)
            return 0;
    }
}
