/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg-nbd: serve images over NBD.  One image with qemu-nbd's options,
 * or several with qemu-storage-daemon's --blockdev, --nbd-server and
 * --export.  This file parses the options, opens the images, sets up
 * the listening sockets (or takes them from socket activation), forks
 * if asked (returning only once the socket listens), runs the accept
 * loop, and on SIGTERM/SIGINT (or, without -t, when the last client
 * leaves) drains the connections, flushes and closes the images.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "qmp.h"
#include "server.h"
#include "setup.h"

static int wake_pipe[2] = { -1, -1 };
static struct server *the_server;

void
server_log(const char *fmt, ...)
{
    va_list ap;

    fputs("vimg-nbd: ", stderr);
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
on_signal(int sig)
{
    int saved = errno;

    (void)sig;
    if (the_server)
        atomic_store(&the_server->stopping, true);
    if (write(wake_pipe[1], "s", 1) == -1) {
        /* nothing to do in a signal handler */
    }
    errno = saved;
}

static int
write_pid_file(const char *path)
{
    FILE *f;
    char tmp[4096];

    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return -1;
    f = fopen(tmp, "w");
    if (!f || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0 ||
        rename(tmp, path) == -1) {
        server_log("Failed to write pid file %s: %m", path);
        return -1;
    }
    return 0;
}

/* --fork: the parent returns once the child listens and has written its
 * pid file. */
static int
daemonize(void)
{
    int p[2];
    pid_t pid;
    char ok;

    if (pipe2(p, O_CLOEXEC) == -1)
        return -1;
    pid = fork();
    if (pid == -1)
        return -1;
    if (pid > 0) {
        close(p[1]);
        _exit(read(p[0], &ok, 1) == 1 ? 0 : 1);
    }
    close(p[0]);
    setsid();
    return p[1];
}

static void
to_dev_null(void)
{
    int fd = open("/dev/null", O_RDWR);

    if (fd == -1)
        return;
    dup2(fd, 0);
    dup2(fd, 1);
    if (fd > 2)
        close(fd);
}

/* Release the daemon's own nodes (after exports and jobs). */
static int
close_roots(struct server *srv)
{
    int r = 0;

    while (srv->nroots)
        if (node_unref(srv->roots[--srv->nroots]) == -1) {
            server_log("%s", vimg_get_error());
            r = -1;
        }
    free(srv->roots);
    srv->roots = NULL;
    return r;
}

int
main(int argc, char **argv)
{
    struct setup st = { 0 };
    struct server srv = { .handshake_timeout = 10, .max_connections = 100,
                          .workers = 4 };
    int fds[16], nfds = 0, ready_fd = -1, qfd = -1, r = 0;
    struct sigaction sa = { .sa_handler = on_signal };

    if (setup_parse(&st, argc, argv) == -1)
        return 1;
    if (st.exit_now)
        return 0;
    pthread_mutex_init(&srv.lock, NULL);
    pthread_mutex_init(&srv.cmd_lock, NULL);
    pthread_rwlock_init(&srv.exports_lock, NULL);
    job_registry_init(&srv.jobs, qmp_job_event, &srv);
    srv.event = qmp_event;
    pthread_cond_init(&srv.cond, NULL);
    if (pipe2(wake_pipe, O_CLOEXEC) == -1)
        return 1;
    srv.wake_fd = wake_pipe[1];
    signal(SIGPIPE, SIG_IGN);
    if (setup_server(&st, &srv) == -1)
        goto fail;
    nfds = listen_activation(fds, 16);
    if (nfds == 0)
        nfds = setup_listen(&st, fds, 16);
    if (nfds < 0)
        goto fail;
    listen_start(&srv, fds, nfds, st.socket_path);
    if (st.qmp_path && (qfd = qmp_listen(st.qmp_path)) == -1)
        goto fail;
    if (st.fork) {
        ready_fd = daemonize();
        if (ready_fd == -1) {
            server_log("fork: %m");
            goto fail;
        }
    }
    if (st.pid_file && write_pid_file(st.pid_file) == -1)
        goto fail;
    the_server = &srv;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    if (qfd != -1 && qmp_start(&srv, qfd, st.qmp_path) == -1) {
        server_log("cannot start the QMP thread");
        goto fail;
    }
    if (ready_fd != -1) {
        to_dev_null();
        if (write(ready_fd, "", 1) != 1)
            goto fail;
        close(ready_fd);
        ready_fd = -1;
    }
    listen_loop(&srv, wake_pipe[0]);
    qmp_stop(&srv);
    job_cancel_all_sync(&srv.jobs);
    if (export_close_all(&srv) == -1)
        r = 1;
    if (close_roots(&srv) == -1)
        r = 1;
    if (st.pid_file)
        unlink(st.pid_file);
    tls_config_free(srv.tls);
    if (setup_free(&st) == -1)
        r = 1;
    return r;
fail:
    if (qfd != -1) {
        close(qfd);
        unlink(st.qmp_path);
    }
    export_close_all(&srv);
    close_roots(&srv);
    tls_config_free(srv.tls);
    pthread_mutex_lock(&srv.lock);
    for (int i = 0; i < srv.nlfds; i++)
        close(srv.lfds[i]);
    if (srv.lpath)
        unlink(srv.lpath);
    pthread_mutex_unlock(&srv.lock);
    setup_free(&st);
    return 1;
}
