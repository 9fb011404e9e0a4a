/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QMP management socket: wire (qmp.c) and commands (qmp-*.c).
 *
 * A command handler gets the (checked) arguments and returns 0 with
 * *RET set to a new reference (or left NULL for {}), or -1 after
 * vimg_error(); the error class is GenericError unless the handler
 * sets it with qmp_error_class().  Handlers run one at a time, under
 * srv->cmd_lock.
 */
#ifndef VIMG_NBD_QMP_H
#define VIMG_NBD_QMP_H

#include <jansson.h>

#include "server.h"

struct qmp;

typedef int (*qmp_handler)(struct server *srv, json_t *args, json_t **ret);

struct qmp_command {
    const char *name;
    qmp_handler fn;
};

/* A unix socket for QMP at PATH, mode 0600; -1 with a message. */
int qmp_listen(const char *path);
/* Serve QMP on LFD (taken over) from a thread of its own; events from
 * the job registry and the server go to every client. */
int qmp_start(struct server *srv, int lfd, const char *path);
/* Close the socket and every client; waits for their threads. */
void qmp_stop(struct server *srv);
/* Send an event to every client (takes DATA). */
void qmp_event(struct server *srv, const char *name, json_t *data);
/* The job registry's event callback (borrows DATA). */
void qmp_job_event(void *opaque, const char *name, json_t *data);
/* Set the class of the error the current handler returns. */
void qmp_error_class(const char *cls);

/* Argument checking: SPEC is a list of "name:t" (t: s string, b bool,
 * i integer, o object, a array, * anything), "?" before the name for
 * optional ones, ending with NULL.  Unknown or missing parameters and
 * wrong types fail with QEMU's messages. */
int qmp_check_args(json_t *args, const char *const *spec);
const char *qmp_str(json_t *args, const char *key);
bool qmp_bool(json_t *args, const char *key, bool dflt);
int64_t qmp_int(json_t *args, const char *key, int64_t dflt);
/* A node by node-name (a reference taken); NULL + vimg_error. */
struct node *qmp_node(const char *name);
/* The same for a "node-name" argument (QEMU's message names no device). */
struct node *qmp_node_by_name(const char *name);

/* The command tables of qmp-*.c. */
extern const struct qmp_command qmp_misc_commands[];
extern const struct qmp_command qmp_block_commands[];
extern const struct qmp_command qmp_export_commands[];
extern const struct qmp_command qmp_bitmap_commands[];
extern const struct qmp_command qmp_job_commands[];
extern const struct qmp_command qmp_snapshot_commands[];

#endif
