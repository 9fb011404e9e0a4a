/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* vimg-ctl's internal interfaces: the QMP connection (qmp-client.c),
 * command-line arguments to JSON (args.c) and the verbs (verbs.c). */
#ifndef VIMG_CTL_H
#define VIMG_CTL_H

#include <stdbool.h>

#include <jansson.h>

/* Exit codes: success, failure (of the command, the job or the
 * connection), and "job not found" for wait. */
enum { CTL_OK = 0, CTL_FAIL = 1, CTL_NOT_FOUND = 2 };

struct qmp_conn;

/* Connect to the QMP socket PATH, read the greeting and negotiate
 * capabilities; NULL + vimg_error.  Caller closes with qmp_conn_close. */
struct qmp_conn *qmp_conn_open(const char *path);
/* Close the connection and free its queued events. */
void qmp_conn_close(struct qmp_conn *c);
/* Run CMD with ARGS (borrowed; NULL for none).  0 with *RET the
 * "return" value (new reference, caller decrefs); -1 + vimg_error with
 * the QMP error's desc, or with the connection error.  Events that
 * arrive meanwhile are queued for qmp_conn_event. */
int qmp_conn_execute(struct qmp_conn *c, const char *cmd, json_t *args,
                     json_t **ret);
/* The next event (new reference), oldest first, waiting up to
 * TIMEOUT_MS (-1: forever).  NULL with *ERR = 0 on timeout, NULL with
 * *ERR = -1 + vimg_error when the connection is lost. */
json_t *qmp_conn_event(struct qmp_conn *c, int timeout_ms, int *err);

/* The arguments of a generic command: one JSON object, or key=value
 * words (dotted keys nest, numeric keys make arrays, key:=JSON gives a
 * raw JSON value).  New reference, or NULL + vimg_error. */
json_t *ctl_parse_args(int argc, char **argv);
/* TARGET made absolute against our working directory (the daemon's may
 * differ).  Caller frees; NULL + vimg_error. */
char *ctl_abs_path(const char *target);

/* The verbs: ARGV[0] is the verb's name, SOCK the QMP socket, to which
 * they connect once their arguments are checked.  Each returns an exit
 * code and has printed its error, if any. */
int ctl_backup(const char *sock, int argc, char **argv);
int ctl_mirror(const char *sock, int argc, char **argv);
int ctl_jobs(const char *sock, int argc, char **argv);
int ctl_wait(const char *sock, int argc, char **argv);
int ctl_events(const char *sock, int argc, char **argv);

/* qmp_conn_open, printing its error; NULL on failure. */
struct qmp_conn *ctl_connect(const char *sock);

/* Print "vimg-ctl: [WHAT: ]vimg_get_error()" on stderr; returns
 * CTL_FAIL. */
int ctl_fail(const char *what);

#endif
