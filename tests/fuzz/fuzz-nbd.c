/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target: one vimg-nbd client connection (handshake, then the
 * transmission phase) run by conn_run() on one end of a socketpair,
 * while a thread writes the input bytes from the other end as the
 * client, drains every reply, and half-closes when it has written all.
 *
 * The server is built once: two writable exports, "" (raw, 1 MiB) and
 * "q" (qcow2, 1 MiB, with persistent dirty bitmap "b0" offered as
 * qemu:dirty-bitmap:b0), both in memfds, with qemu:allocation-depth.
 * One worker per connection keeps runs deterministic; no handshake
 * timer, no TLS (STARTTLS is refused).  Writes persist from run to run
 * (the images stay small either way).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "options.h"
#include "server.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct server srv;
static bool verbose;

void
server_log(const char *fmt, ...)
{
    va_list ap;

    if (!verbose)
        return;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int64_t
now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static void
die(const char *what)
{
    fprintf(stderr, "fuzz-nbd: %s: %s\n", what, vimg_get_error());
    abort();
}

/* A node of FORMAT over a new 1 MiB memfd. */
static struct node *
memfd_node(const char *format)
{
    char path[64], json[256];
    int fd = memfd_create("fuzz-nbd", 0);
    struct node *n;
    json_t *opts;

    if (fd == -1)
        abort();
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (!strcmp(format, "raw")) {
        if (ftruncate(fd, 1 << 20) == -1)
            abort();
    } else if (vimg_create(format, path, "size=1M", 0) == -1) {
        die("create");
    }
    snprintf(json, sizeof json,
             "{\"driver\": \"%s\", \"file\": {\"driver\": \"file\", "
             "\"filename\": \"%s\"}}", format, path);
    opts = opts_parse_json(json);
    n = opts ? node_open(opts, NODE_RDWR) : NULL;
    json_decref(opts);
    if (!n)
        die("open");
    return n; /* the memfd stays open for the life of the process */
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const bitmaps[] = { "b0", NULL };
    struct bitmap_action add = { .op = BITMAP_OP_ADD, .name = "b0" };
    struct node *raw, *q;

    (void)argc;
    (void)argv;
    verbose = getenv("VIMG_FUZZ_VERBOSE") != NULL;
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&srv.lock, NULL);
    pthread_mutex_init(&srv.cmd_lock, NULL);
    pthread_rwlock_init(&srv.exports_lock, NULL);
    pthread_cond_init(&srv.cond, NULL);
    job_registry_init(&srv.jobs, NULL, NULL);
    srv.wake_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    srv.persistent = true;
    srv.workers = 1;
    srv.max_connections = 100;

    raw = memfd_node("raw");
    q = memfd_node("qcow2");
    if (q->drv->bitmap_op(q, &add) == -1)
        die("bitmap add");
    if (export_add(&srv, NULL, "", "raw export", raw, true, true, false,
                   NULL) == -1 ||
        export_add(&srv, NULL, "q", NULL, q, true, true, true,
                   bitmaps) == -1)
        die("export");
    return 0;
}

struct feed {
    int fd;
    const uint8_t *data;
    size_t size;
};

/* The client: write everything, reading replies meanwhile; then
 * half-close and read until the server closes. */
static void *
client_main(void *arg)
{
    struct feed *f = arg;
    static __thread char sink[65536];
    size_t off = 0;
    bool wr = true;

    for (;;) {
        struct pollfd p = { .fd = f->fd,
                            .events = POLLIN | (wr ? POLLOUT : 0) };

        if (poll(&p, 1, -1) == -1) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(f->fd, sink, sizeof sink, MSG_DONTWAIT);

            if (r == 0 || (r == -1 && errno != EAGAIN && errno != EINTR))
                break;
        }
        if (wr && (p.revents & POLLOUT)) {
            ssize_t w = off < f->size
                            ? send(f->fd, f->data + off, f->size - off,
                                   MSG_DONTWAIT | MSG_NOSIGNAL)
                            : 0;

            if (w > 0)
                off += (size_t)w;
            if ((w == -1 && errno != EAGAIN && errno != EINTR) ||
                off == f->size) {
                shutdown(f->fd, SHUT_WR);
                wr = false;
            }
        }
    }
    return NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct feed f = { .data = data, .size = size };
    struct conn *c;
    pthread_t t;
    int sv[2];

    if (size > (1u << 20) ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
        return 0;
    c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->srv = &srv;
    c->fd = sv[0];
    c->io = &conn_plain_io;
    c->io_handle = c;
    pthread_mutex_init(&c->rlock, NULL);
    pthread_mutex_init(&c->wlock, NULL);
    pthread_mutex_lock(&srv.lock);
    c->next = srv.conns;
    srv.conns = c;
    srv.nr_conns++;
    pthread_mutex_unlock(&srv.lock);
    f.fd = sv[1];
    if (pthread_create(&t, NULL, client_main, &f) != 0)
        abort();
    conn_run(c); /* frees C and closes sv[0] */
    pthread_join(t, NULL);
    close(sv[1]);
    return 0;
}
