/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Helpers shared between the QMP command files. */
#ifndef VIMG_NBD_QMP_INTERNAL_H
#define VIMG_NBD_QMP_INTERNAL_H

#include <jansson.h>

#include "server.h"

/* Run the bitmap command TYPE ("block-dirty-bitmap-add", ...) with
 * arguments DATA (a transaction action). */
int qmp_bitmap_action(struct server *srv, const char *type, json_t *data);

/* Create (not start) the backup job of a blockdev-backup / drive-backup
 * command or transaction action; NULL + vimg_error. */
struct job *qmp_blockdev_backup(struct server *srv, json_t *args,
                                struct job_txn *txn);
struct job *qmp_drive_backup(struct server *srv, json_t *args,
                             struct job_txn *txn);
/* The transaction command (qmp-transaction.c). */
int qmp_transaction(struct server *srv, json_t *args, json_t **ret);

/* External snapshots (qmp-snapshot.c), also as transaction actions. */
struct snapshot_undo {
    struct node *base, *overlay; /* references while set */
    char *created;               /* a file made by -sync, or NULL */
    bool root_added;
};
/* Take snapshot action TYPE ("blockdev-snapshot-sync" or
 * "blockdev-snapshot") with arguments ARGS; fills U on success. */
int qmp_snapshot_action(struct server *srv, const char *type, json_t *args,
                        struct snapshot_undo *u);
/* Undo a successful action (exports back on the base, overlay gone). */
void qmp_snapshot_undo(struct server *srv, struct snapshot_undo *u);
/* Forget U (the snapshot stays). */
void qmp_snapshot_release(struct snapshot_undo *u);

#endif
