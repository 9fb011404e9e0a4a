/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg-nbd's shared structures: the server (exports, limits, the list of
 * connections), an export (one node served under a name), and a client
 * connection.
 *
 * Threads: main.c starts one accept loop (listen.c); each accepted
 * client gets a thread running the handshake (handshake.c), which then
 * becomes one of a small pool of workers (request.c) that share the
 * socket: a worker holds rlock while it reads one request with its
 * payload, and wlock while it sends one whole reply.
 *
 * Locking: srv->lock protects the connection list and counters.  An
 * export is immutable while it is served (its bitmaps are read under
 * their owner node's dirty_lock).  A connection's negotiated state is
 * written only by its handshake thread before any worker starts.
 */
#ifndef VIMG_NBD_SERVER_H
#define VIMG_NBD_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <jansson.h>

#include "job.h"
#include "node.h"

struct bitmap;
struct tls_config;

/* A dirty bitmap offered as qemu:dirty-bitmap:NAME. */
struct export_bitmap {
    char *name;
    struct node *owner; /* node that marks BM on writes, or NULL when BM
                         * is a frozen copy (read-only or disabled) */
    struct bitmap *bm;  /* ours; read under owner's dirty_lock */
};

#define EXPORT_MAX_BITMAPS 64

struct export {
    atomic_uint refcnt; /* the list's, and each connection's */
    char *id;          /* --export id=, or NULL */
    char *name;        /* NBD export name ("" is valid) */
    char *description; /* or NULL */
    pthread_rwlock_t gate; /* requests hold it shared; a pivot holds it */
    struct node *node; /* one reference, owned; changes only under gate */
    uint64_t size;
    bool writable;
    bool alloc_depth;  /* offer qemu:allocation-depth */
    bool multi_conn;   /* advertise CAN_MULTI_CONN */
    struct export_bitmap bitmaps[EXPORT_MAX_BITMAPS];
    unsigned nr_bitmaps;
};

struct conn;

struct server {
    pthread_rwlock_t exports_lock; /* the export list */
    struct export **exports;       /* by exports_lock */
    size_t nr_exports;
    /* QMP events (BLOCK_EXPORT_DELETED); takes DATA; may be NULL. */
    void (*event)(struct server *srv, const char *name, json_t *data);
    struct qmp *qmp;          /* the management socket, or NULL */
    struct job_registry jobs; /* live jobs */
    /* Nodes the daemon owns (--blockdev, blockdev-add): one reference
     * each; by cmd_lock, which serialises QMP commands. */
    pthread_mutex_t cmd_lock;
    struct node **roots;
    size_t nroots;
    struct tls_config *tls; /* NULL: no TLS; else TLS is forced */
    unsigned handshake_timeout; /* seconds, 0 = none */
    unsigned max_connections;
    unsigned workers;           /* per connection */
    bool persistent;            /* -t: do not exit after the last client */
    int wake_fd;                /* write end of the accept loop's pipe */

    pthread_mutex_t lock;
    pthread_cond_t cond;   /* a connection ended; listeners changed */
    int lfds[16];          /* listening sockets, by lock */
    int nlfds;
    char *lpath;           /* their unix socket path to unlink, or NULL */
    bool lclose;           /* the accept loop is asked to close them */
    struct conn *conns;    /* list of live connections, by lock */
    unsigned nr_conns;     /* by lock */
    bool served;           /* a client has connected (by lock) */
    atomic_bool stopping;  /* SIGTERM/SIGINT or last client gone */
};

/* The transport under a connection: the plain socket or TLS. */
struct conn_io {
    /* Read up to LEN bytes: >0, 0 at end of stream, -1 with errno. */
    ssize_t (*recv)(void *h, void *buf, size_t len);
    /* Send some of IOV: bytes sent, or -1 with errno. */
    ssize_t (*sendv)(void *h, const struct iovec *iov, int iovcnt);
    /* Say goodbye (TLS close_notify) and free H; not the socket. */
    void (*close)(void *h);
};

struct conn {
    struct server *srv;
    int fd;
    const struct conn_io *io;
    void *io_handle;
    struct conn *next; /* srv->conns, by srv->lock */
    pthread_t thread;

    pthread_mutex_t rlock, wlock;
    atomic_bool quit; /* stop reading requests */
    bool broken;      /* the stream is out of sync: by wlock */

    /* Negotiated in the handshake. */
    atomic_llong deadline; /* CLOCK_MONOTONIC seconds; 0 once negotiated */
    bool tls;
    bool no_zeroes, structured, extended;
    struct export *meta_exp; /* export the contexts were set for */
    bool meta_base, meta_depth;
    uint64_t meta_bitmaps;   /* bit i: meta_exp->bitmaps[i] */
    struct export *exp;      /* after GO / EXPORT_NAME */
    uint16_t eflags;
};

/* Context ids on this server, as qemu numbers them. */
#define META_ID_BASE 0
#define META_ID_DEPTH 1
#define META_ID_BITMAP0 2

/* conn.c */
/* Read exactly LEN bytes; -1 on end of stream or error. */
int conn_recv(struct conn *c, void *buf, size_t len);
/* Read and drop LEN bytes. */
int conn_skip(struct conn *c, uint64_t len);
/* Send the whole of IOV (modified); caller holds wlock once the
 * transmission phase has started.  -1 on error (the connection is then
 * dead). */
int conn_sendv(struct conn *c, struct iovec *iov, int iovcnt);
int conn_send(struct conn *c, const void *buf, size_t len);
/* The thread body of one accepted client; frees C at the end. */
void *conn_run(void *c);
/* The plain-socket transport. */
extern const struct conn_io conn_plain_io;

/* handshake.c: negotiate; 0 = start transmission with c->exp, -1 =
 * close the connection. */
int handshake(struct conn *c);
/* Transmission flags for export E on connection C. */
uint16_t handshake_eflags(const struct conn *c, const struct export *e);

/* request.c: serve requests with the worker pool until the client
 * leaves or the server stops. */
void transmission(struct conn *c);

/* export.c */
/* The export called NAME with a reference taken (export_put), or NULL. */
struct export *export_get(struct server *srv, const char *name);
/* Drop a reference; the last one frees the export (flush, node unref)
 * and reports BLOCK_EXPORT_DELETED. */
void export_put(struct server *srv, struct export *e);
/* Add an export of NODE (reference taken over, even on failure) to SRV.
 * BITMAPS: NULL-terminated names, looked up in NODE and its backing
 * chain.  -1 + vimg_error. */
int export_add(struct server *srv, const char *id, const char *name,
               const char *description, struct node *node, bool writable,
               bool alloc_depth, bool multi_conn, const char *const *bitmaps);
/* Remove the export with ID (or, if ID is NULL, NAME): new clients no
 * longer find it; with HARD its connections are cut.  -1 + vimg_error. */
int export_remove(struct server *srv, const char *id, const char *name,
                  bool hard);
/* query-block-exports. */
json_t *export_query(struct server *srv);
/* Does an export offer bitmap NAME of N / serve N? */
bool export_uses_bitmap(struct server *srv, struct node *n,
                        const char *name);
bool export_uses_node(struct server *srv, struct node *n);
/* Every export serving FROM serves TO from now on (a reference taken;
 * TO NULL: they keep FROM).  Meanwhile their requests are held back:
 * QUIESCED(OPAQUE), if not NULL, runs when none is in flight, and if it
 * fails nothing changes. */
int export_pivot(struct server *srv, struct node *from, struct node *to,
                 int (*quiesced)(void *opaque), void *opaque);
/* Flush and release every export; -1 if a flush or close failed. */
int export_close_all(struct server *srv);

/* listen.c */
/* Listening sockets from the options, or from LISTEN_FDS. */
int listen_unix(const char *path);
int listen_tcp(const char *host, const char *port, int *fds, int max);
/* Sockets passed by a socket-activating parent; 0 if none. */
int listen_activation(int *fds, int max);
/* Accept clients on srv->lfds until srv->stopping; then drain. */
void listen_loop(struct server *srv, int wake_fd);
/* Start listening on FDS (taken over; PATH: a unix socket to unlink when
 * they close, copied).  -1 + vimg_error if the server already listens. */
int listen_start(struct server *srv, const int *fds, int n,
                 const char *path);
/* Close the listening sockets (done by the accept loop; waits). */
void listen_stop(struct server *srv);
/* Wake the accept loop. */
void listen_wake(struct server *srv);

/* tls.c */
struct tls_config *tls_config_new(const char *cert, const char *key,
                                  const char *ca, const char *psk_file);
void tls_config_free(struct tls_config *t);
/* Run the server side of a TLS handshake on C's socket and switch C's
 * transport to it; -1 (with a message on stderr) on failure. */
int tls_start(struct conn *c);

/* qmp-block.c: a node whose backing is N, or NULL (no reference). */
struct node *server_backing_parent(struct server *srv, struct node *n);
/* qmp-block.c: make N (one reference taken over) a daemon-owned node. */
int server_add_root(struct server *srv, struct node *n);

/* main.c */
void server_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int64_t now_seconds(void);

#endif
