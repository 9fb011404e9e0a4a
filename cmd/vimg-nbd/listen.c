/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Listening sockets (unix, TCP, or inherited through systemd-style
 * socket activation) and the accept loop.  The loop stops accepting
 * while the connection cap is reached (clients wait in the backlog, as
 * with qemu-nbd -e), drops clients that have not finished the handshake
 * in time, and on stop wakes every connection (shutdown of the read
 * side: workers finish what they have read and reply) and waits for the
 * last one to go.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "error.h"
#include "server.h"

int
listen_unix(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "vimg-nbd: socket path too long: %s\n", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        fprintf(stderr, "vimg-nbd: socket: %m\n");
        return -1;
    }
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == -1 ||
        listen(fd, SOMAXCONN) == -1) {
        fprintf(stderr, "vimg-nbd: Failed to bind socket to %s: %m\n", path);
        close(fd);
        return -1;
    }
    return fd;
}

int
listen_tcp(const char *host, const char *port, int *fds, int max)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_ADDRCONFIG };
    struct addrinfo *res, *a;
    int n = 0, e;

    e = getaddrinfo(host, port, &hints, &res);
    if (e) {
        fprintf(stderr, "vimg-nbd: address resolution failed for %s:%s: "
                        "%s\n", host ? host : "*", port, gai_strerror(e));
        return -1;
    }
    for (a = res; a && n < max; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC,
                        a->ai_protocol);
        int one = 1;

        if (fd == -1)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (a->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == -1 ||
            listen(fd, SOMAXCONN) == -1) {
            e = errno;
            close(fd);
            continue;
        }
        fds[n++] = fd;
    }
    freeaddrinfo(res);
    if (n == 0) {
        fprintf(stderr, "vimg-nbd: Failed to bind socket to %s:%s: %s\n",
                host ? host : "*", port, strerror(e ? e : EADDRNOTAVAIL));
        return -1;
    }
    return n;
}

int
listen_activation(int *fds, int max)
{
    const char *pid = getenv("LISTEN_PID"), *nfd = getenv("LISTEN_FDS");
    int n;

    if (!pid || !nfd || atol(pid) != (long)getpid())
        return 0;
    n = atoi(nfd);
    if (n < 1)
        return 0;
    if (n > max)
        n = max;
    for (int i = 0; i < n; i++) {
        fds[i] = 3 + i;
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return n;
}

static void
start_conn(struct server *srv, int fd)
{
    struct conn *c = calloc(1, sizeof *c);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    pthread_attr_t attr;
    int one = 1;

    if (!c) {
        close(fd);
        return;
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
        ss.ss_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->srv = srv;
    c->fd = fd;
    c->io = &conn_plain_io;
    c->io_handle = c;
    pthread_mutex_init(&c->rlock, NULL);
    pthread_mutex_init(&c->wlock, NULL);
    if (srv->handshake_timeout)
        atomic_store(&c->deadline, now_seconds() + srv->handshake_timeout);
    pthread_mutex_lock(&srv->lock);
    c->next = srv->conns;
    srv->conns = c;
    srv->nr_conns++;
    srv->served = true;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&c->thread, &attr, conn_run, c) != 0) {
        srv->conns = c->next;
        srv->nr_conns--;
        pthread_mutex_destroy(&c->rlock);
        pthread_mutex_destroy(&c->wlock);
        close(fd);
        free(c);
    }
    pthread_attr_destroy(&attr);
    pthread_mutex_unlock(&srv->lock);
}

/* Drop clients still negotiating past their deadline.  The clock has
 * whole seconds: "now > d" means a full timeout has surely passed (a
 * client that came at 9.9 s with a 1 s timeout goes at 11 s, not 10). */
static void
reap_slow(struct server *srv)
{
    int64_t now = now_seconds();

    pthread_mutex_lock(&srv->lock);
    for (struct conn *c = srv->conns; c; c = c->next) {
        int64_t d = atomic_load(&c->deadline);

        if (d && now > d) {
            atomic_store(&c->deadline, 0);
            shutdown(c->fd, SHUT_RDWR);
        }
    }
    pthread_mutex_unlock(&srv->lock);
}

void
listen_wake(struct server *srv)
{
    if (write(srv->wake_fd, "w", 1) == -1) {
        /* the loop polls with a timeout anyway */
    }
}

int
listen_start(struct server *srv, const int *fds, int n, const char *path)
{
    LOCK_GUARD(&srv->lock);
    if (srv->nlfds) {
        vimg_error(EBUSY, "NBD server already running");
        return -1;
    }
    for (int i = 0; i < n && i < 16; i++)
        srv->lfds[srv->nlfds++] = fds[i];
    free(srv->lpath);
    srv->lpath = path ? strdup(path) : NULL;
    listen_wake(srv);
    return 0;
}

/* By srv->lock. */
static void
close_listeners_locked(struct server *srv)
{
    for (int i = 0; i < srv->nlfds; i++)
        close(srv->lfds[i]);
    srv->nlfds = 0;
    if (srv->lpath)
        unlink(srv->lpath);
    free(srv->lpath);
    srv->lpath = NULL;
    srv->lclose = false;
    pthread_cond_broadcast(&srv->cond);
}

void
listen_stop(struct server *srv)
{
    LOCK_GUARD(&srv->lock);
    if (!srv->nlfds)
        return;
    srv->lclose = true;
    listen_wake(srv);
    while (srv->lclose)
        pthread_cond_wait(&srv->cond, &srv->lock);
}

void
listen_loop(struct server *srv, int wake_fd)
{
    struct pollfd pfd[17];

    while (!atomic_load(&srv->stopping)) {
        bool full;
        int n = 0, r;

        pthread_mutex_lock(&srv->lock);
        if (srv->lclose)
            close_listeners_locked(srv);
        full = srv->nr_conns >= srv->max_connections;
        pfd[n++] = (struct pollfd){ .fd = wake_fd, .events = POLLIN };
        for (int i = 0; !full && i < srv->nlfds; i++)
            pfd[n++] = (struct pollfd){ .fd = srv->lfds[i],
                                        .events = POLLIN };
        pthread_mutex_unlock(&srv->lock);
        r = poll(pfd, n, srv->handshake_timeout || full ? 200 : 1000);
        reap_slow(srv);
        if (r <= 0)
            continue;
        if (pfd[0].revents) {
            char b[64];

            if (read(wake_fd, b, sizeof b) <= 0)
                break;
            continue;
        }
        for (int i = 1; i < n; i++) {
            int fd;

            if (!(pfd[i].revents & POLLIN))
                continue;
            fd = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0)
                start_conn(srv, fd);
        }
    }
    /* Stop: no new clients; wake every connection and wait for them. */
    pthread_mutex_lock(&srv->lock);
    close_listeners_locked(srv);
    for (struct conn *c = srv->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RD);
    while (srv->nr_conns > 0)
        pthread_cond_wait(&srv->cond, &srv->lock);
    pthread_mutex_unlock(&srv->lock);
}
