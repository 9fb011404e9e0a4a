/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The client side of QMP's wire format on a unix socket: connect, read
 * the greeting, negotiate with qmp_capabilities, then one command at a
 * time: {"execute","arguments","id"} out, and messages in until the
 * reply with our id.  Events that arrive before the reply are queued
 * (oldest first) for qmp_conn_event, so a caller that starts a job and
 * then waits for its events misses none of them.
 *
 * Messages are JSON objects, one a line (the server ends each with
 * CRLF).  Single-threaded; a message may not exceed CTL_MAX_MESSAGE.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "ctl.h"
#include "error.h"
#include "vimg.h"

#define CTL_MAX_MESSAGE (16u << 20)

struct qmp_conn {
    int fd;
    char *buf; /* received, not yet parsed */
    size_t len, cap;
    json_t *events; /* array of queued events, oldest first */
    json_int_t next_id;
};

static long long
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Parse one complete line out of the buffer, if there is one: 1 with
 * *MSG set, 0 if no complete line, -1 on a bad message. */
static int
take_line(struct qmp_conn *c, json_t **msg)
{
    char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
    size_t n;
    json_error_t err;

    if (!nl)
        return 0;
    n = (size_t)(nl - c->buf) + 1;
    *msg = json_loadb(c->buf, n, 0, &err);
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    if (!*msg || !json_is_object(*msg)) {
        json_decref(*msg);
        vimg_error(EPROTO, "bad message from the server: %s",
                   *msg ? "not an object" : err.text);
        return -1;
    }
    return 1;
}

/* Read the next message, waiting until DEADLINE (ms of now_ms; -1:
 * forever).  NULL with *ERR = 0 on timeout, *ERR = -1 + vimg_error. */
static json_t *
read_message(struct qmp_conn *c, long long deadline, int *err)
{
    *err = 0;
    for (;;) {
        json_t *msg = NULL;
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        int r = take_line(c, &msg), wait;
        ssize_t n;

        if (r != 0) {
            *err = r < 0 ? -1 : 0;
            return msg;
        }
        wait = deadline < 0 ? -1 : (int)(deadline - now_ms());
        if (deadline >= 0 && wait <= 0)
            return NULL;
        r = poll(&p, 1, wait);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            *err = -1;
            vimg_error(errno, "poll: %m");
            return NULL;
        }
        if (r == 0)
            continue; /* the deadline check above ends the wait */
        if (c->len == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 65536;
            char *b = cap <= CTL_MAX_MESSAGE ? realloc(c->buf, cap) : NULL;

            if (!b) {
                *err = -1;
                vimg_error(EPROTO, "message from the server too large");
                return NULL;
            }
            c->buf = b;
            c->cap = cap;
        }
        n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *err = -1;
            if (n == 0)
                vimg_error(ECONNRESET, "connection closed by the server");
            else
                vimg_error(errno, "%m");
            return NULL;
        }
        c->len += (size_t)n;
    }
}

static int
send_all(struct qmp_conn *c, const char *s, size_t len)
{
    while (len) {
        ssize_t w = send(c->fd, s, len, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            vimg_error(errno ? errno : EIO, "%m");
            return -1;
        }
        s += w;
        len -= (size_t)w;
    }
    return 0;
}

int
qmp_conn_execute(struct qmp_conn *c, const char *cmd, json_t *args,
                 json_t **ret)
{
    json_int_t id = ++c->next_id;
    json_t *msg = json_pack("{s:s,s:I}", "execute", cmd, "id", id);
    CLEANUP_FREE char *s = NULL;
    int err;

    if (msg && args)
        json_object_set(msg, "arguments", args);
    s = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (!s) {
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    if (send_all(c, s, strlen(s)) == -1 || send_all(c, "\n", 1) == -1)
        return -1;
    for (;;) {
        json_t *r = read_message(c, -1, &err), *e;

        if (!r)
            return -1;
        if (json_object_get(r, "event")) {
            json_array_append_new(c->events, r);
            continue;
        }
        if (json_integer_value(json_object_get(r, "id")) != id) {
            json_decref(r);
            continue; /* not ours (cannot happen: one at a time) */
        }
        e = json_object_get(r, "error");
        if (e) {
            const char *d = json_string_value(json_object_get(e, "desc"));

            vimg_error(EIO, "%s", d ? d : "unknown error");
            json_decref(r);
            return -1;
        }
        *ret = json_incref(json_object_get(r, "return"));
        json_decref(r);
        if (!*ret)
            *ret = json_object();
        return 0;
    }
}

json_t *
qmp_conn_event(struct qmp_conn *c, int timeout_ms, int *err)
{
    long long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;

    *err = 0;
    for (;;) {
        json_t *m;

        if (json_array_size(c->events)) {
            m = json_incref(json_array_get(c->events, 0));
            json_array_remove(c->events, 0);
            return m;
        }
        m = read_message(c, deadline, err);
        if (!m)
            return NULL;
        if (json_object_get(m, "event"))
            return m;
        json_decref(m); /* a stray reply: ignore */
    }
}

static int
do_connect(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof sa.sun_path) {
        vimg_error(ENAMETOOLONG, "%s: socket path too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        vimg_error(errno, "socket: %m");
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == -1) {
        vimg_error(errno, "%s: %m", path);
        close(fd);
        return -1;
    }
    return fd;
}

struct qmp_conn *
qmp_conn_open(const char *path)
{
    struct qmp_conn *c = calloc(1, sizeof *c);
    json_t *hello, *ret = NULL;
    int err;

    if (!c || !(c->events = json_array())) {
        free(c);
        vimg_error(ENOMEM, "out of memory");
        return NULL;
    }
    c->fd = do_connect(path);
    if (c->fd == -1)
        goto fail;
    hello = read_message(c, now_ms() + 30000, &err);
    if (!hello || !json_object_get(hello, "QMP")) {
        if (hello || err == 0)
            vimg_error(EPROTO, "%s: no QMP greeting", path);
        else
            vimg_error_prefix("%s", path);
        json_decref(hello);
        goto fail;
    }
    json_decref(hello);
    if (qmp_conn_execute(c, "qmp_capabilities", NULL, &ret) == -1) {
        vimg_error_prefix("%s: qmp_capabilities", path);
        goto fail;
    }
    json_decref(ret);
    return c;
fail:
    qmp_conn_close(c);
    return NULL;
}

void
qmp_conn_close(struct qmp_conn *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    json_decref(c->events);
    free(c->buf);
    free(c);
}
