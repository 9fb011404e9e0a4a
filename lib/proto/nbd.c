/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The "nbd" protocol: bytes of a remote NBD export, through libnbd.
 *
 * Options: uri (nbd://host[:port]/export, nbd+unix:///export?socket=PATH)
 * or QEMU's server.type=unix|inet with server.path or server.host and
 * server.port (default 10809), and export.  TLS (nbds://, tls-creds) is
 * refused for now.  The export decides its whole content, so every
 * extent is allocated; "base:allocation" tells data from zeroes.  The
 * size is fixed: writes past the end fail, truncate is not supported.
 *
 * Threads: libnbd serialises the synchronous calls made on one handle.
 * A read-only node whose server advertises multi-conn opens up to
 * POOL_MAX connections and hands each request an idle one, so requests
 * run in parallel; otherwise one handle serves every thread (libnbd's
 * own lock is the mutex).  s->lock protects s->busy.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "node.h"
#include "options.h"

#define POOL_MAX 4
#define BS_MAX (1u << 30) /* bytes asked per block status request */
#define MAX_PAYLOAD (32u << 20) /* the spec's default maximum */

struct nbd_state {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct nbd_handle *h[POOL_MAX];
    bool busy[POOL_MAX]; /* protected by lock */
    unsigned nh;
    uint64_t max_payload; /* bytes per read or write request */
    bool can_fua, can_flush, can_zero, can_fast_zero, can_trim;
    bool has_allocation; /* base:allocation negotiated */
};

/* Where to connect: a URI, or a unix socket / TCP address and export. */
struct target {
    const char *uri;
    const char *path, *host, *export;
    char port[16];
};

/* Record libnbd's last error (its message names the call; WHAT is used
 * when it has none). */
static void
nbd_err(struct node *n, const char *what)
{
    int err = nbd_get_errno();
    const char *msg = nbd_get_error();

    vimg_error(err ? err : EIO, "%s: %s", n->filename, msg ? msg : what);
}

static int
parse_server(json_t *server, json_t *opts, struct target *t)
{
    const char *type = opts_get_str(server, "type");
    uint64_t port;

    t->export = opts_get_str(opts, "export");
    if (!t->export)
        t->export = "";
    if (type && !strcmp(type, "unix")) {
        if (!(t->path = opts_get_str(server, "path"))) {
            vimg_error(EINVAL, "nbd: server.type=unix needs server.path");
            return -1;
        }
        return 0;
    }
    if (!type || strcmp(type, "inet")) {
        vimg_error(EINVAL, "nbd: server.type must be 'unix' or 'inet'");
        return -1;
    }
    if (!(t->host = opts_get_str(server, "host"))) {
        vimg_error(EINVAL, "nbd: server.type=inet needs server.host");
        return -1;
    }
    if (opts_get_size(server, "port", 10809, &port) == -1)
        return -1;
    if (port == 0 || port > 65535) {
        vimg_error(EINVAL, "nbd: invalid server.port");
        return -1;
    }
    snprintf(t->port, sizeof t->port, "%u", (unsigned)port);
    return 0;
}

/* Parse the options into T and set n->filename (a URI naming it). */
static int
parse_target(struct node *n, json_t *opts, struct target *t)
{
    static const char *const keys[] = { "driver", "node-name", "uri",
                                        "server", "export", "read-only",
                                        "cache", "tls-creds", NULL };
    json_t *server = json_object_get(opts, "server");
    int r;

    memset(t, 0, sizeof *t);
    if (opts_check_keys(opts, keys, "the 'nbd' driver") == -1)
        return -1;
    if (json_object_get(opts, "tls-creds")) {
        vimg_error(ENOTSUP, "nbd: TLS is not supported yet");
        return -1;
    }
    t->uri = opts_get_str(opts, "uri");
    if (t->uri && server) {
        vimg_error(EINVAL, "nbd: give either uri or server, not both");
        return -1;
    }
    if (t->uri) {
        if (!strncmp(t->uri, "nbds", 4)) {
            vimg_error(ENOTSUP, "nbd: TLS (nbds://) is not supported yet");
            return -1;
        }
        n->filename = strdup(t->uri);
    } else if (json_is_object(server)) {
        if (parse_server(server, opts, t) == -1)
            return -1;
        if (t->path)
            r = asprintf(&n->filename, "nbd+unix:///%s?socket=%s",
                         t->export, t->path);
        else
            r = asprintf(&n->filename, "nbd://%s:%s/%s", t->host, t->port,
                         t->export);
        if (r < 0)
            n->filename = NULL;
    } else {
        vimg_error(EINVAL, "the 'nbd' driver needs uri or server");
        return -1;
    }
    if (!n->filename) {
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    return 0;
}

/* Open one connection to T, asking for base:allocation.  REPORT: call
 * vimg_error on failure. */
static struct nbd_handle *
connect_one(struct node *n, const struct target *t, bool report)
{
    struct nbd_handle *h = nbd_create();

    if (!h) {
        if (report)
            nbd_err(n, "nbd_create");
        return NULL;
    }
    if (nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
        nbd_set_uri_allow_tls(h, LIBNBD_TLS_DISABLE) == -1)
        goto err;
    if (t->uri) {
        if (nbd_connect_uri(h, t->uri) == -1)
            goto err;
    } else if (nbd_set_export_name(h, t->export) == -1 ||
               (t->path ? nbd_connect_unix(h, t->path)
                        : nbd_connect_tcp(h, t->host, t->port)) == -1) {
        goto err;
    }
    return h;
err:
    if (report)
        nbd_err(n, "connect");
    nbd_close(h);
    return NULL;
}

/* Read the export's capabilities from the first handle. */
static int
read_caps(struct node *n, struct nbd_state *s)
{
    struct nbd_handle *h = s->h[0];
    int64_t size = nbd_get_size(h), max;
    int ro = nbd_is_read_only(h);

    if (size == -1 || ro == -1) {
        nbd_err(n, "negotiation");
        return -1;
    }
    if (ro && (n->flags & NODE_RDWR)) {
        vimg_error(EROFS, "%s: the NBD export is read-only", n->filename);
        return -1;
    }
    n->size = size;
    s->can_fua = nbd_can_fua(h) == 1;
    s->can_flush = nbd_can_flush(h) == 1;
    s->can_zero = nbd_can_zero(h) == 1;
    s->can_fast_zero = nbd_can_fast_zero(h) == 1;
    s->can_trim = nbd_can_trim(h) == 1;
    s->has_allocation =
        nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
    max = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
    s->max_payload = max > 0 ? MIN((uint64_t)max, MAX_PAYLOAD) : MAX_PAYLOAD;
    return 0;
}

static void
close_all(struct nbd_state *s)
{
    for (unsigned i = 0; i < s->nh; i++) {
        nbd_shutdown(s->h[i], 0);
        nbd_close(s->h[i]);
        s->h[i] = NULL;
    }
    s->nh = 0;
}

static int
nbd_open(struct node *n, json_t *opts)
{
    struct nbd_state *s = n->state;
    struct target t;

    if (parse_target(n, opts, &t) == -1)
        return -1;
    if (!(s->h[0] = connect_one(n, &t, true)))
        return -1;
    s->nh = 1;
    if (read_caps(n, s) == -1)
        goto err;
    /* Extra connections only where the server says they are coherent;
     * failing to open one is not an error. */
    if (!(n->flags & NODE_RDWR) && nbd_can_multi_conn(s->h[0]) == 1) {
        while (s->nh < POOL_MAX) {
            struct nbd_handle *h = connect_one(n, &t, false);

            if (!h)
                break;
            s->h[s->nh++] = h;
        }
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    return 0;
err:
    close_all(s);
    return -1;
}

static int
nbd_close_node(struct node *n)
{
    struct nbd_state *s = n->state;

    close_all(s);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    return 0;
}

/* Take an idle handle (waits while all are busy); give it back with
 * put_handle. */
static unsigned
get_handle(struct nbd_state *s)
{
    unsigned i;

    if (s->nh == 1)
        return 0; /* libnbd serialises the calls itself */
    pthread_mutex_lock(&s->lock);
    for (;;) {
        for (i = 0; i < s->nh; i++)
            if (!s->busy[i])
                break;
        if (i < s->nh)
            break;
        pthread_cond_wait(&s->cond, &s->lock);
    }
    s->busy[i] = true;
    pthread_mutex_unlock(&s->lock);
    return i;
}

static void
put_handle(struct nbd_state *s, unsigned i)
{
    if (s->nh == 1)
        return;
    pthread_mutex_lock(&s->lock);
    s->busy[i] = false;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* Writes may not grow an NBD export. */
static int
check_end(struct node *n, uint64_t off, uint64_t count)
{
    if (off + count > n->size) {
        vimg_error(ENOSPC, "%s: request past the end of the NBD export "
                   "(%" PRIu64 " bytes)", n->filename, n->size);
        return -1;
    }
    return 0;
}

static int
nbd_pread_node(struct node *n, void *buf, uint64_t count, uint64_t off)
{
    struct nbd_state *s = n->state;
    char *p = buf;

    while (count) {
        size_t len = MIN(count, s->max_payload);
        unsigned i = get_handle(s);
        int r = nbd_pread(s->h[i], p, len, off, 0);

        put_handle(s, i);
        if (r == -1) {
            nbd_err(n, "read");
            return -1;
        }
        p += len;
        off += len;
        count -= len;
    }
    return 0;
}

static int
nbd_flush_node(struct node *n)
{
    struct nbd_state *s = n->state;

    if (!s->can_flush)
        return 0;
    if (nbd_flush(s->h[0], 0) == -1) {
        nbd_err(n, "flush");
        return -1;
    }
    return 0;
}

/* FUA as a flag where the server has it, else a flush afterwards. */
static uint32_t
fua_flag(struct nbd_state *s, unsigned flags)
{
    return (flags & REQ_FUA) && s->can_fua ? LIBNBD_CMD_FLAG_FUA : 0;
}

static int
after_write(struct node *n, unsigned flags)
{
    struct nbd_state *s = n->state;

    if ((flags & REQ_FUA) && !s->can_fua)
        return nbd_flush_node(n);
    return 0;
}

static int
nbd_pwrite_node(struct node *n, const void *buf, uint64_t count,
                uint64_t off, unsigned flags)
{
    struct nbd_state *s = n->state;
    const char *p = buf;

    if (flags & REQ_COMPRESSED) {
        vimg_error(ENOTSUP, "nbd: compressed writes are not supported");
        return -1;
    }
    if (check_end(n, off, count) == -1)
        return -1;
    while (count) {
        size_t len = MIN(count, s->max_payload);
        unsigned i = get_handle(s);
        int r = nbd_pwrite(s->h[i], p, len, off, fua_flag(s, flags));

        put_handle(s, i);
        if (r == -1) {
            nbd_err(n, "write");
            return -1;
        }
        p += len;
        off += len;
        count -= len;
    }
    return after_write(n, flags);
}

static int
nbd_zeroes_node(struct node *n, uint64_t off, uint64_t count, unsigned flags)
{
    struct nbd_state *s = n->state;
    uint32_t f = fua_flag(s, flags);

    if (!s->can_zero || ((flags & REQ_FAST) && !s->can_fast_zero)) {
        vimg_error(ENOTSUP, "nbd: the server cannot write zeroes%s",
                   (flags & REQ_FAST) ? " fast" : "");
        return -1;
    }
    if (check_end(n, off, count) == -1)
        return -1;
    if (!(flags & REQ_MAY_UNMAP))
        f |= LIBNBD_CMD_FLAG_NO_HOLE;
    if (flags & REQ_FAST)
        f |= LIBNBD_CMD_FLAG_FAST_ZERO;
    while (count) {
        uint64_t len = MIN(count, (uint64_t)1 << 30);
        unsigned i = get_handle(s);
        int r = nbd_zero(s->h[i], len, off, f);

        put_handle(s, i);
        if (r == -1) {
            if ((flags & REQ_FAST) && nbd_get_errno() == ENOTSUP) {
                vimg_error(ENOTSUP, "nbd: fast zeroing not possible here");
                return -1;
            }
            nbd_err(n, "write zeroes");
            return -1;
        }
        off += len;
        count -= len;
    }
    return after_write(n, flags);
}

static int
nbd_discard_node(struct node *n, uint64_t off, uint64_t count)
{
    struct nbd_state *s = n->state;

    if (!s->can_trim) {
        vimg_error(ENOTSUP, "nbd: the server does not support trim");
        return -1;
    }
    while (count) {
        uint64_t len = MIN(count, (uint64_t)1 << 30);
        unsigned i = get_handle(s);
        int r = nbd_trim(s->h[i], len, off, 0);

        put_handle(s, i);
        if (r == -1) {
            nbd_err(n, "trim");
            return -1;
        }
        off += len;
        count -= len;
    }
    return 0;
}

struct bs_result {
    bool got;
    uint64_t length;
    uint32_t flags;
};

static int
extent_cb(void *opaque, const char *context, uint64_t offset,
          uint32_t *entries, size_t nr, int *error)
{
    struct bs_result *res = opaque;

    (void)offset;
    (void)error;
    if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) || res->got ||
        nr < 2)
        return 0;
    res->got = true;
    res->length = entries[0];
    res->flags = entries[1];
    return 0;
}

static int
nbd_block_status_node(struct node *n, bool want_zero, uint64_t off,
                      uint64_t count, struct extent *e)
{
    struct nbd_state *s = n->state;
    struct bs_result res = { .got = false };
    nbd_extent_callback cb = { .callback = extent_cb, .user_data = &res };
    uint64_t len = MIN(count, (uint64_t)BS_MAX);
    unsigned i;
    int r;

    /* The export decides all of its content. */
    e->flags = EXT_ALLOCATED | EXT_OFFSET | EXT_WRITABLE;
    e->offset = off;
    e->file = n;
    e->length = count;
    if (!want_zero || !s->has_allocation || off >= n->size) {
        e->flags |= EXT_DATA;
        return 0;
    }
    len = MIN(len, n->size - off);
    i = get_handle(s);
    r = nbd_block_status(s->h[i], len, off, cb, 0);
    put_handle(s, i);
    if (r == -1) {
        nbd_err(n, "block status");
        return -1;
    }
    if (!res.got || res.length == 0) {
        e->flags |= EXT_DATA; /* no usable answer: say data */
        e->length = len;
        return 0;
    }
    e->length = MIN(res.length, len);
    /* A hole is not zero unless the server says so. */
    if (res.flags & LIBNBD_STATE_ZERO)
        e->flags |= EXT_ZERO;
    if (!(res.flags & LIBNBD_STATE_HOLE) || !(res.flags & LIBNBD_STATE_ZERO))
        e->flags |= EXT_DATA;
    return 0;
}

const struct driver nbd_proto = {
    .name = "nbd",
    .kind = DRV_PROTOCOL,
    .state_size = sizeof(struct nbd_state),
    .open = nbd_open,
    .close = nbd_close_node,
    .pread = nbd_pread_node,
    .pwrite = nbd_pwrite_node,
    .pwrite_zeroes = nbd_zeroes_node,
    .discard = nbd_discard_node,
    .flush = nbd_flush_node,
    .block_status = nbd_block_status_node,
};
