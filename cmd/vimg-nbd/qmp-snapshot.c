/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * External snapshots: blockdev-snapshot-sync (create the overlay file)
 * and blockdev-snapshot (an overlay added with blockdev-add and
 * "backing": null).  The overlay gets NODE as its backing and every
 * export of NODE switches to the overlay while its requests are held
 * back (export_pivot), so writes go on and land in the overlay from
 * then on.  Also transaction actions: qmp_snapshot_action records how
 * to undo them.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "io.h"
#include "qmp.h"
#include "qmp-internal.h"

static int
flush_node(void *opaque)
{
    return node_flush(opaque);
}

static void
remove_root(struct server *srv, struct node *n)
{
    for (size_t i = 0; i < srv->nroots; i++)
        if (srv->roots[i] == n) {
            memmove(&srv->roots[i], &srv->roots[i + 1],
                    (srv->nroots - i - 1) * sizeof *srv->roots);
            srv->nroots--;
            node_unref(n);
            return;
        }
}

/* OVERLAY (a reference taken over) on top of BASE; U records it. */
static int
attach(struct server *srv, struct node *base, struct node *overlay,
       bool new_root, struct snapshot_undo *u)
{
    struct node *parent = server_backing_parent(srv, base);

    if (parent) {
        vimg_error(EBUSY, "Node '%s' is busy: node is used as backing hd "
                          "of '%s'",
                   base->node_name, parent->node_name);
        goto fail;
    }
    if (overlay->backing) {
        vimg_error(EINVAL, "The overlay already has a backing image");
        goto fail;
    }
    if (!(overlay->flags & NODE_RDWR)) {
        vimg_error(EROFS, "The overlay is read-only");
        goto fail;
    }
    if (overlay->size < base->size) {
        vimg_error(EINVAL, "The overlay is smaller than its backing image");
        goto fail;
    }
    node_ref(base);
    overlay->backing = base;
    if (new_root && server_add_root(srv, overlay) == -1) {
        overlay->backing = NULL;
        node_unref(base);
        goto fail;
    }
    if (export_pivot(srv, base, overlay, flush_node, base) == -1) {
        overlay->backing = NULL;
        node_unref(base);
        if (new_root)
            remove_root(srv, overlay);
        else
            node_unref(overlay);
        return -1;
    }
    u->base = base;
    u->overlay = overlay;
    u->root_added = new_root;
    if (new_root)
        node_ref(overlay); /* u's own reference */
    node_ref(base);
    return 0;
fail:
    node_unref(overlay);
    return -1;
}

static int
snapshot_sync(struct server *srv, json_t *args, struct snapshot_undo *u)
{
    static const char *const spec[] = { "?device:s", "?node-name:s",
                                        "snapshot-file:s",
                                        "?snapshot-node-name:s", "?format:s",
                                        "?mode:s", NULL };
    const char *dev, *file, *fmt, *mode, *nn;
    struct node *base, *ov;
    json_t *opts;
    char spec_opts[4200];
    int r = -1;

    if (qmp_check_args(args, spec) == -1)
        return -1;
    dev = qmp_str(args, "node-name") ? qmp_str(args, "node-name")
                                     : qmp_str(args, "device");
    file = qmp_str(args, "snapshot-file");
    fmt = qmp_str(args, "format") ? qmp_str(args, "format") : "qcow2";
    mode = qmp_str(args, "mode");
    nn = qmp_str(args, "snapshot-node-name");
    if (mode && strcmp(mode, "existing") && strcmp(mode, "absolute-paths")) {
        vimg_error(EINVAL, "Parameter 'mode' does not accept value '%s'",
                   mode);
        return -1;
    }
    if (!(base = qmp_str(args, "node-name") ? qmp_node_by_name(dev)
                                            : qmp_node(dev)))
        return -1;
    if (nn) {
        struct node *dup = node_find(nn);

        if (dup) {
            node_unref(dup);
            vimg_error(EEXIST, "Duplicate nodes with node-name='%s'", nn);
            goto out;
        }
    }
    if (!mode || strcmp(mode, "existing")) {
        snprintf(spec_opts, sizeof spec_opts,
                 "size=%llu,backing_file=%s,backing_fmt=%s",
                 (unsigned long long)base->size, base->filename,
                 base->drv->name);
        if (vimg_create(fmt, file, spec_opts, 0) == -1)
            goto out;
        u->created = strdup(file);
    }
    opts = json_pack("{s:s,s:{s:s,s:s},s:n}", "driver", fmt, "file",
                     "driver", "file", "filename", file, "backing");
    if (opts && nn)
        json_object_set_new(opts, "node-name", json_string(nn));
    ov = opts ? node_open(opts, NODE_RDWR) : NULL;
    json_decref(opts);
    if (ov)
        r = attach(srv, base, ov, true, u);
out:
    if (r == -1 && u->created) {
        unlink(u->created);
        free(u->created);
        u->created = NULL;
    }
    node_unref(base);
    return r;
}

static int
snapshot_nodes(struct server *srv, json_t *args, struct snapshot_undo *u)
{
    static const char *const spec[] = { "node:s", "overlay:s", NULL };
    struct node *base, *ov;
    int r = -1;

    if (qmp_check_args(args, spec) == -1 ||
        !(base = qmp_node(qmp_str(args, "node"))))
        return -1;
    ov = qmp_node(qmp_str(args, "overlay"));
    if (ov)
        r = attach(srv, base, ov, false, u);
    node_unref(base);
    return r;
}

int
qmp_snapshot_action(struct server *srv, const char *type, json_t *args,
                    struct snapshot_undo *u)
{
    memset(u, 0, sizeof *u);
    if (!strcmp(type, "blockdev-snapshot-sync"))
        return snapshot_sync(srv, args, u);
    return snapshot_nodes(srv, args, u);
}

void
qmp_snapshot_undo(struct server *srv, struct snapshot_undo *u)
{
    if (!u->overlay)
        return;
    export_pivot(srv, u->overlay, u->base, NULL, NULL);
    node_drain_begin(u->overlay);
    u->overlay->backing = NULL;
    node_drain_end(u->overlay);
    node_unref(u->base); /* the overlay's */
    if (u->root_added)
        remove_root(srv, u->overlay);
    if (u->created)
        unlink(u->created);
    qmp_snapshot_release(u);
}

void
qmp_snapshot_release(struct snapshot_undo *u)
{
    node_unref(u->overlay);
    node_unref(u->base);
    free(u->created);
    memset(u, 0, sizeof *u);
}

static int
cmd_snapshot_sync(struct server *srv, json_t *args, json_t **ret)
{
    struct snapshot_undo u;
    int r;

    (void)ret;
    r = qmp_snapshot_action(srv, "blockdev-snapshot-sync", args, &u);
    if (r == 0)
        qmp_snapshot_release(&u);
    return r;
}

static int
cmd_snapshot(struct server *srv, json_t *args, json_t **ret)
{
    struct snapshot_undo u;
    int r;

    (void)ret;
    r = qmp_snapshot_action(srv, "blockdev-snapshot", args, &u);
    if (r == 0)
        qmp_snapshot_release(&u);
    return r;
}

const struct qmp_command qmp_snapshot_commands[] = {
    { "blockdev-snapshot-sync", cmd_snapshot_sync },
    { "blockdev-snapshot", cmd_snapshot },
    { NULL, NULL },
};
