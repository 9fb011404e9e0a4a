/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One client connection: its byte stream (plain socket or TLS, through
 * struct conn_io) and its life: handshake, transmission, goodbye.  The
 * thread that runs conn_run() owns the connection and frees it after the
 * last worker is gone; srv->lock covers its place in the list.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server.h"

static ssize_t
plain_recv(void *h, void *buf, size_t len)
{
    struct conn *c = h;
    ssize_t r;

    do
        r = recv(c->fd, buf, len, 0);
    while (r == -1 && errno == EINTR);
    return r;
}

static ssize_t
plain_sendv(void *h, const struct iovec *iov, int iovcnt)
{
    struct conn *c = h;
    struct msghdr msg = { .msg_iov = (struct iovec *)iov,
                          .msg_iovlen = iovcnt };
    ssize_t r;

    do
        r = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
    while (r == -1 && errno == EINTR);
    return r;
}

static void
plain_close(void *h)
{
    (void)h;
}

const struct conn_io conn_plain_io = {
    .recv = plain_recv,
    .sendv = plain_sendv,
    .close = plain_close,
};

int
conn_recv(struct conn *c, void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        ssize_t r = c->io->recv(c->io_handle, p, len);

        if (r <= 0)
            return -1;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

int
conn_skip(struct conn *c, uint64_t len)
{
    char buf[16384];

    while (len > 0) {
        size_t n = len < sizeof buf ? (size_t)len : sizeof buf;

        if (conn_recv(c, buf, n) == -1)
            return -1;
        len -= n;
    }
    return 0;
}

int
conn_sendv(struct conn *c, struct iovec *iov, int iovcnt)
{
    while (iovcnt > 0) {
        ssize_t r = c->io->sendv(c->io_handle, iov, iovcnt);

        if (r <= 0)
            return -1;
        while (iovcnt > 0 && (size_t)r >= iov->iov_len) {
            r -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + r;
            iov->iov_len -= (size_t)r;
        }
    }
    return 0;
}

int
conn_send(struct conn *c, const void *buf, size_t len)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

    return conn_sendv(c, &iov, 1);
}

static void
conn_unlink(struct conn *c)
{
    struct server *srv = c->srv;

    pthread_mutex_lock(&srv->lock);
    for (struct conn **pp = &srv->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    srv->nr_conns--;
    /* qemu-nbd without -t: the last client to leave ends the server. */
    if (srv->nr_conns == 0 && !srv->persistent) {
        atomic_store(&srv->stopping, true);
        if (write(srv->wake_fd, "x", 1) == -1) {
            /* the loop also polls with a timeout */
        }
    }
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
}

void *
conn_run(void *arg)
{
    struct conn *c = arg;

    if (handshake(c) == 0) {
        atomic_store(&c->deadline, 0);
        transmission(c);
    }
    c->io->close(c->io_handle);
    shutdown(c->fd, SHUT_RDWR);
    /* Before the server can see this connection gone. */
    export_put(c->srv, c->exp);
    export_put(c->srv, c->meta_exp);
    conn_unlink(c);
    close(c->fd);
    pthread_mutex_destroy(&c->rlock);
    pthread_mutex_destroy(&c->wlock);
    free(c);
    return NULL;
}
