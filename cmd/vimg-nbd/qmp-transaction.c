/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QMP transaction command: its actions happen all or not at all.
 * Each action is carried out in order, remembering how to undo it; if
 * one fails, the earlier ones are undone in reverse order (a created
 * job is discarded before it ever ran; a bitmap gets its old content
 * back) and the failing action's error is returned.  Bitmap removals
 * wait until every other action has succeeded, and jobs start only
 * then.  With completion-mode grouped the jobs share one job
 * transaction: they succeed or fail together.
 */
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "error.h"
#include "node-bitmaps.h"
#include "qmp.h"
#include "qmp-internal.h"

#define MAX_ACTIONS 64

struct action {
    const char *type;
    json_t *data;
    struct job *job;       /* created backup job */
    struct node *node;     /* the bitmap's node (a reference) */
    struct bitmap *saved;  /* content to restore on undo */
    struct snapshot_undo snap;
    bool done;
};

static int
restore_content(struct bitmap *bm, void *opaque)
{
    bitmap_clear(bm);
    return bitmap_merge(bm, opaque);
}

/* Keep the content of the bitmap an action will change. */
static int
save_bitmap(struct action *a)
{
    const char *name = qmp_str(a->data, !strcmp(a->type,
                                                 "block-dirty-bitmap-merge")
                                            ? "target"
                                            : "name");

    a->node = qmp_node(qmp_str(a->data, "node"));
    if (!a->node)
        return -1;
    if (!name) {
        vimg_error(ENOENT, "Dirty bitmap '' not found");
        return -1;
    }
    a->saved = node_bitmap_copy(a->node, name);
    return a->saved ? 0 : -1;
}

static void
undo(struct server *srv, struct action *a)
{
    const char *t = a->type;
    json_t *d = a->data;

    if (a->job) {
        job_discard(a->job);
    } else if (a->snap.overlay) {
        qmp_snapshot_undo(srv, &a->snap);
    } else if (!strcmp(t, "block-dirty-bitmap-add")) {
        json_t *r = json_pack("{s:O,s:O}", "node", json_object_get(d, "node"),
                              "name", json_object_get(d, "name"));

        qmp_bitmap_action(srv, "block-dirty-bitmap-remove", r);
        json_decref(r);
    } else if (!strcmp(t, "block-dirty-bitmap-enable") ||
               !strcmp(t, "block-dirty-bitmap-disable")) {
        qmp_bitmap_action(srv, !strcmp(t, "block-dirty-bitmap-enable")
                                   ? "block-dirty-bitmap-disable"
                                   : "block-dirty-bitmap-enable",
                          d);
    } else if (a->saved) {
        const char *name = qmp_str(d, !strcmp(t, "block-dirty-bitmap-merge")
                                          ? "target"
                                          : "name");

        node_bitmap_with(a->node, name, restore_content, a->saved);
    }
}

static int
do_action(struct server *srv, struct action *a, struct job_txn *txn)
{
    const char *t = a->type;

    if (!strcmp(t, "abort")) {
        vimg_error(ECANCELED, "Transaction aborted using Abort action");
        return -1;
    }
    if (!strcmp(t, "blockdev-backup"))
        return (a->job = qmp_blockdev_backup(srv, a->data, txn)) ? 0 : -1;
    if (!strcmp(t, "drive-backup"))
        return (a->job = qmp_drive_backup(srv, a->data, txn)) ? 0 : -1;
    if (!strcmp(t, "blockdev-snapshot-sync") ||
        !strcmp(t, "blockdev-snapshot"))
        return qmp_snapshot_action(srv, t, a->data, &a->snap);
    if (!strcmp(t, "block-dirty-bitmap-remove"))
        return save_bitmap(a); /* removed once everything else worked */
    if ((!strcmp(t, "block-dirty-bitmap-clear") ||
         !strcmp(t, "block-dirty-bitmap-merge")) &&
        save_bitmap(a) == -1)
        return -1;
    if (!strncmp(t, "block-dirty-bitmap-", 19))
        return qmp_bitmap_action(srv, t, a->data);
    vimg_error(ENOTSUP, "Transaction action '%s' is not supported", t);
    return -1;
}

static int
parse_actions(json_t *args, struct action *v, size_t *n, bool *grouped)
{
    static const char *const spec[] = { "actions:a", "?properties:o",
                                        NULL };
    const char *mode;
    json_t *act;
    size_t i;

    if (qmp_check_args(args, spec) == -1)
        return -1;
    mode = qmp_str(json_object_get(args, "properties"), "completion-mode");
    *grouped = mode && !strcmp(mode, "grouped");
    if (mode && !*grouped && strcmp(mode, "individual")) {
        vimg_error(EINVAL, "Parameter 'completion-mode' does not accept "
                           "value '%s'", mode);
        return -1;
    }
    if (json_array_size(json_object_get(args, "actions")) > MAX_ACTIONS) {
        vimg_error(E2BIG, "too many actions (at most %d)", MAX_ACTIONS);
        return -1;
    }
    json_array_foreach(json_object_get(args, "actions"), i, act) {
        v[i].type = qmp_str(act, "type");
        v[i].data = json_object_get(act, "data");
        if (!v[i].type) {
            vimg_error(EINVAL, "Parameter 'type' is missing");
            return -1;
        }
        if (!v[i].data)
            v[i].data = json_object_get(act, "type") ? json_object() : NULL;
        else
            json_incref(v[i].data);
        if (!json_is_object(v[i].data)) {
            vimg_error(EINVAL, "Parameter 'data' is missing");
            return -1;
        }
    }
    *n = i;
    return 0;
}

int
qmp_transaction(struct server *srv, json_t *args, json_t **ret)
{
    struct action v[MAX_ACTIONS] = { 0 };
    struct job_txn *txn = NULL;
    bool grouped = false;
    size_t n = 0, i;
    int r = -1;

    (void)ret;
    if (parse_actions(args, v, &n, &grouped) == -1)
        goto out;
    if (grouped && !(txn = job_txn_new()))
        goto out;
    for (i = 0; i < n; i++) {
        if (do_action(srv, &v[i], txn) == -1)
            break;
        v[i].done = true;
    }
    if (i < n) {
        char *msg = strdup(vimg_get_error());

        while (i-- > 0)
            undo(srv, &v[i]);
        vimg_error(EINVAL, "%s", msg ? msg : "transaction failed");
        free(msg);
        goto out;
    }
    /* Commit: removals, then the jobs start. */
    for (i = 0; i < n; i++)
        if (!strcmp(v[i].type, "block-dirty-bitmap-remove"))
            qmp_bitmap_action(srv, v[i].type, v[i].data);
    for (i = 0; i < n; i++)
        if (v[i].job)
            job_start_paused(v[i].job);
    for (i = 0; i < n; i++)
        if (v[i].job)
            job_resume_internal(v[i].job);
    r = 0;
out:
    if (txn)
        job_txn_unref(&srv->jobs, txn);
    for (i = 0; i < MAX_ACTIONS; i++) {
        json_decref(v[i].data);
        node_unref(v[i].node);
        bitmap_free(v[i].saved);
        if (v[i].snap.overlay)
            qmp_snapshot_release(&v[i].snap);
    }
    return r;
}
