/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP's wire format on a unix socket (mode 0600): the greeting, then
 * capabilities negotiation (only qmp_capabilities is accepted before
 * it), then {"execute", "arguments", "id"} objects answered with
 * {"return"} or {"error": {"class", "desc"}}, and events with
 * timestamps sent to every negotiated client.  Input is a stream of
 * JSON objects; a message may not exceed QMP_MAX_MESSAGE bytes.
 *
 * Threads: one accepts clients; one per client reads and runs its
 * commands (under srv->cmd_lock, one command at a time across
 * clients).  Output to a client goes under its out_lock, whole messages
 * at a time; events are sent from whatever thread emits them (lock
 * order: a job registry's lock, then q->lock, then out_lock).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "error.h"
#include "qmp.h"
#include "vimg.h"

#define QMP_MAX_MESSAGE (1u << 20)

struct qmp_client {
    struct qmp *q;
    int fd;
    bool negotiated; /* by q->lock for readers other than its thread */
    pthread_mutex_t out_lock;
    struct qmp_client *next;
};

struct qmp {
    struct server *srv;
    int lfd;
    char *path;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct qmp_client *clients; /* by lock */
    unsigned nthreads;          /* client threads alive, by lock */
    bool stopping;
};

static __thread const char *error_class;

void
qmp_error_class(const char *cls)
{
    error_class = cls;
}

int
qmp_listen(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    mode_t old;
    int fd, r;

    if (strlen(path) >= sizeof sa.sun_path) {
        server_log("QMP socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        server_log("socket: %m");
        return -1;
    }
    unlink(path);
    old = umask(0077);
    r = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (r == -1 || chmod(path, 0600) == -1 || listen(fd, 16) == -1) {
        server_log("Failed to bind QMP socket to %s: %m", path);
        close(fd);
        return -1;
    }
    return fd;
}

static int
send_json(struct qmp_client *cl, json_t *msg)
{
    CLEANUP_FREE char *s = json_dumps(msg, JSON_COMPACT);
    size_t len, off = 0;
    int r = 0;

    if (!s)
        return -1;
    len = strlen(s);
    pthread_mutex_lock(&cl->out_lock);
    while (r == 0 && off < len + 2) {
        const char *p = off < len ? s + off : "\r\n" + (off - len);
        size_t n = off < len ? len - off : len + 2 - off;
        ssize_t w = send(cl->fd, p, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            r = -1;
        else
            off += (size_t)w;
    }
    pthread_mutex_unlock(&cl->out_lock);
    return r;
}

void
qmp_event(struct server *srv, const char *name, json_t *data)
{
    struct qmp *q = srv->qmp;
    struct timeval tv;
    json_t *msg;

    if (!q) {
        json_decref(data);
        return;
    }
    gettimeofday(&tv, NULL);
    msg = json_pack("{s:s,s:o,s:{s:I,s:I}}", "event", name, "data",
                    data ? data : json_object(), "timestamp", "seconds",
                    (json_int_t)tv.tv_sec, "microseconds",
                    (json_int_t)tv.tv_usec);
    pthread_mutex_lock(&q->lock);
    for (struct qmp_client *cl = q->clients; msg && cl; cl = cl->next)
        if (cl->negotiated)
            send_json(cl, msg);
    pthread_mutex_unlock(&q->lock);
    json_decref(msg);
}

void
qmp_job_event(void *opaque, const char *name, json_t *data)
{
    qmp_event(opaque, name, json_incref(data));
}

static const struct qmp_command *const tables[] = {
    qmp_misc_commands, qmp_block_commands, qmp_export_commands,
    qmp_bitmap_commands, qmp_job_commands, qmp_snapshot_commands,
};

static const struct qmp_command *
find_command(const char *name)
{
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++)
        for (const struct qmp_command *c = tables[t]; c->name; c++)
            if (!strcmp(c->name, name))
                return c;
    return NULL;
}

static json_t *
error_reply(const char *cls, const char *desc)
{
    return json_pack("{s:{s:s,s:s}}", "error", "class", cls, "desc", desc);
}

/* Run one parsed message; returns the reply (new reference). */
static json_t *
run_message(struct qmp_client *cl, json_t *msg)
{
    struct server *srv = cl->q->srv;
    const char *name = json_string_value(json_object_get(msg, "execute"));
    json_t *args = json_object_get(msg, "arguments"), *ret = NULL;
    const struct qmp_command *c;
    int r;

    if (!json_is_object(msg))
        return error_reply("GenericError",
                           "QMP input must be a JSON object");
    if (json_object_get(msg, "exec-oob"))
        return error_reply("GenericError",
                           "QMP input member 'exec-oob' is not supported");
    if (!name)
        return error_reply("GenericError",
                           json_object_get(msg, "execute")
                               ? "QMP input member 'execute' must be a "
                                 "string"
                               : "QMP input lacks member 'execute'");
    if (args && !json_is_object(args))
        return error_reply("GenericError", "QMP input member 'arguments' "
                                           "must be an object");
    if (!cl->negotiated && strcmp(name, "qmp_capabilities"))
        return error_reply("CommandNotFound", "Expecting capabilities "
                                              "negotiation with "
                                              "'qmp_capabilities'");
    if (cl->negotiated && !strcmp(name, "qmp_capabilities"))
        return error_reply("CommandNotFound",
                           "Capabilities negotiation is already complete, "
                           "command ignored");
    c = find_command(name);
    if (!c) {
        char desc[256];

        snprintf(desc, sizeof desc, "The command %s has not been found",
                 name);
        return error_reply("CommandNotFound", desc);
    }
    if (!args)
        args = json_object();
    else
        json_incref(args);
    error_class = "GenericError";
    pthread_mutex_lock(&srv->cmd_lock);
    r = c->fn(srv, args, &ret);
    pthread_mutex_unlock(&srv->cmd_lock);
    json_decref(args);
    if (r == -1)
        return error_reply(error_class, vimg_get_error());
    if (!strcmp(name, "qmp_capabilities")) {
        pthread_mutex_lock(&cl->q->lock);
        cl->negotiated = true;
        pthread_mutex_unlock(&cl->q->lock);
    }
    return json_pack("{s:o}", "return", ret ? ret : json_object());
}

static void
reply(struct qmp_client *cl, json_t *msg, json_t *out)
{
    json_t *id = json_is_object(msg) ? json_object_get(msg, "id") : NULL;

    if (out && id)
        json_object_set(out, "id", id);
    if (out)
        send_json(cl, out);
    json_decref(out);
}

/* Parse and run every complete message at the start of BUF; returns the
 * bytes used, or -1 to drop the client. */
static ssize_t
consume(struct qmp_client *cl, const char *buf, size_t len)
{
    size_t used = 0;

    for (;;) {
        json_error_t err;
        json_t *msg;

        while (used < len && strchr(" \t\r\n", buf[used]))
            used++;
        if (used == len)
            return (ssize_t)used;
        msg = json_loadb(buf + used, len - used,
                         JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &err);
        if (!msg) {
            if (json_error_code(&err) == json_error_premature_end_of_input)
                return (ssize_t)used; /* wait for the rest */
            {
                char desc[300];

                snprintf(desc, sizeof desc, "JSON parse error, %s",
                         err.text);
                reply(cl, NULL, error_reply("GenericError", desc));
            }
            /* Skip to the next line and try again. */
            while (used < len && buf[used] != '\n')
                used++;
            continue;
        }
        used += (size_t)err.position;
        reply(cl, msg, run_message(cl, msg));
        json_decref(msg);
        if (cl->q->stopping)
            return -1;
    }
}

static void *
client_main(void *arg)
{
    struct qmp_client *cl = arg;
    struct qmp *q = cl->q;
    char *buf = malloc(QMP_MAX_MESSAGE);
    size_t have = 0;
    json_t *hello = json_pack(
        "{s:{s:{s:{s:i,s:i,s:i},s:s},s:[]}}", "QMP", "version", "qemu",
        "micro", 0, "minor", 2, "major", 7, "package", "vimg-" VIMG_VERSION,
        "capabilities");

    if (buf && hello && send_json(cl, hello) == 0) {
        for (;;) {
            ssize_t n, used;

            if (have == QMP_MAX_MESSAGE) {
                json_t *e = error_reply("GenericError",
                                        "QMP message too large");

                send_json(cl, e);
                json_decref(e);
                break;
            }
            n = recv(cl->fd, buf + have, QMP_MAX_MESSAGE - have, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            have += (size_t)n;
            used = consume(cl, buf, have);
            if (used < 0)
                break;
            memmove(buf, buf + used, have - (size_t)used);
            have -= (size_t)used;
        }
    }
    json_decref(hello);
    free(buf);
    pthread_mutex_lock(&q->lock);
    for (struct qmp_client **pp = &q->clients; *pp; pp = &(*pp)->next)
        if (*pp == cl) {
            *pp = cl->next;
            break;
        }
    q->nthreads--;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
    close(cl->fd);
    pthread_mutex_destroy(&cl->out_lock);
    free(cl);
    return NULL;
}

static void *
accept_main(void *arg)
{
    struct qmp *q = arg;

    for (;;) {
        int fd = accept4(q->lfd, NULL, NULL, SOCK_CLOEXEC);
        struct qmp_client *cl;
        pthread_attr_t attr;
        pthread_t t;

        if (fd < 0 && errno == EINTR)
            continue;
        if (fd < 0)
            break;
        cl = calloc(1, sizeof *cl);
        if (!cl) {
            close(fd);
            continue;
        }
        cl->q = q;
        cl->fd = fd;
        pthread_mutex_init(&cl->out_lock, NULL);
        pthread_mutex_lock(&q->lock);
        if (q->stopping) {
            pthread_mutex_unlock(&q->lock);
            close(fd);
            free(cl);
            break;
        }
        cl->next = q->clients;
        q->clients = cl;
        q->nthreads++;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, client_main, cl) != 0) {
            q->clients = cl->next;
            q->nthreads--;
            close(fd);
            free(cl);
        }
        pthread_attr_destroy(&attr);
        pthread_mutex_unlock(&q->lock);
    }
    return NULL;
}

int
qmp_start(struct server *srv, int lfd, const char *path)
{
    struct qmp *q = calloc(1, sizeof *q);

    if (!q)
        return -1;
    q->srv = srv;
    q->lfd = lfd;
    q->path = strdup(path);
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    srv->qmp = q;
    if (pthread_create(&q->thread, NULL, accept_main, q) != 0) {
        srv->qmp = NULL;
        free(q->path);
        free(q);
        return -1;
    }
    return 0;
}

void
qmp_stop(struct server *srv)
{
    struct qmp *q = srv->qmp;

    if (!q)
        return;
    pthread_mutex_lock(&q->lock);
    q->stopping = true;
    pthread_mutex_unlock(&q->lock);
    shutdown(q->lfd, SHUT_RDWR);
    pthread_join(q->thread, NULL);
    close(q->lfd);
    unlink(q->path);
    pthread_mutex_lock(&q->lock);
    for (struct qmp_client *cl = q->clients; cl; cl = cl->next)
        shutdown(cl->fd, SHUT_RD);
    while (q->nthreads)
        pthread_cond_wait(&q->cond, &q->lock);
    pthread_mutex_unlock(&q->lock);
    srv->qmp = NULL;
    free(q->path);
    free(q);
}

#ifdef VIMG_FUZZING
#include <fcntl.h>

/* For tests/fuzz/fuzz-qmp.c: run the message loop over BUF (LEN bytes)
 * as a new, not yet negotiated client whose fd is /dev/null (replies
 * and events are built and serialised; send() then fails and they are
 * dropped).  SRV must not have a QMP socket of its own.  The jobs the
 * input started are cancelled before the client goes away.  Returns the
 * bytes left unparsed, or -1 if the client was dropped. */
int qmp_fuzz_input(struct server *srv, const char *buf, size_t len);

int
qmp_fuzz_input(struct server *srv, const char *buf, size_t len)
{
    struct qmp q = { .srv = srv, .lfd = -1 };
    struct qmp_client cl = { .q = &q };
    ssize_t used = 0;

    cl.fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (cl.fd == -1)
        return -1;
    pthread_mutex_init(&q.lock, NULL);
    pthread_cond_init(&q.cond, NULL);
    pthread_mutex_init(&cl.out_lock, NULL);
    q.clients = &cl;
    srv->qmp = &q;
    if (len <= QMP_MAX_MESSAGE)
        used = consume(&cl, buf, len);
    job_cancel_all_sync(&srv->jobs);
    srv->qmp = NULL;
    pthread_mutex_destroy(&cl.out_lock);
    pthread_cond_destroy(&q.cond);
    pthread_mutex_destroy(&q.lock);
    close(cl.fd);
    return used < 0 ? -1 : (int)(len - (size_t)used);
}
#endif
