/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP block-node commands: blockdev-add, blockdev-del and
 * query-named-block-nodes.  The daemon owns the nodes it opened
 * (srv->roots, one reference each); children and nodes held by exports
 * and jobs are reached through them.
 */
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "error.h"
#include "node-bitmaps.h"
#include "options.h"
#include "qmp.h"

int
server_add_root(struct server *srv, struct node *n)
{
    struct node **v = realloc(srv->roots, (srv->nroots + 1) * sizeof *v);

    if (!v) {
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    srv->roots = v;
    v[srv->nroots++] = n;
    return 0;
}

static int
cmd_blockdev_add(struct server *srv, json_t *args, json_t **ret)
{
    const char *nn = qmp_str(args, "node-name");
    json_t *opts;
    struct node *n, *dup;
    bool ro = false;

    (void)ret;
    if (!nn || !qmp_str(args, "driver")) {
        vimg_error(EINVAL, "Parameter '%s' is missing",
                   nn ? "driver" : "node-name");
        return -1;
    }
    dup = node_find(nn);
    if (dup) {
        node_unref(dup);
        vimg_error(EEXIST, "Duplicate nodes with node-name='%s'", nn);
        return -1;
    }
    if (opts_get_bool(args, "read-only", false, &ro) == -1)
        return -1;
    opts = json_deep_copy(args);
    json_object_del(opts, "read-only");
    json_object_del(opts, "auto-read-only");
    n = node_open(opts, ro ? 0 : NODE_RDWR);
    json_decref(opts);
    if (!n)
        return -1;
    if (server_add_root(srv, n) == -1) {
        node_unref(n);
        return -1;
    }
    return 0;
}

static int
cmd_blockdev_del(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { "node-name:s", NULL };
    const char *nn;

    (void)ret;
    if (qmp_check_args(args, spec) == -1)
        return -1;
    nn = qmp_str(args, "node-name");
    for (size_t i = 0; i < srv->nroots; i++) {
        struct node *n = srv->roots[i];

        if (strcmp(n->node_name, nn))
            continue;
        if (server_backing_parent(srv, n)) {
            vimg_error(EBUSY, "Node '%s' is busy: node is used as backing "
                              "hd of '%s'",
                       nn, server_backing_parent(srv, n)->node_name);
            return -1;
        }
        if (__atomic_load_n(&n->refcnt, __ATOMIC_ACQUIRE) > 1) {
            vimg_error(EBUSY, "Node '%s' is busy: node is exported or used "
                              "by a job", nn);
            return -1;
        }
        memmove(&srv->roots[i], &srv->roots[i + 1],
                (srv->nroots - i - 1) * sizeof *srv->roots);
        srv->nroots--;
        return node_unref(n);
    }
    qmp_error_class("GenericError");
    vimg_error(ENOENT, "Failed to find node with node-name='%s'", nn);
    return -1;
}

/* Look for a node whose backing is N among the daemon's nodes, the
 * exports' and their chains. */
static struct node *
parent_in_chain(struct node *from, struct node *n)
{
    for (struct node *b = from; b; b = b->backing)
        if (b->backing == n)
            return b;
    return NULL;
}

struct node *
server_backing_parent(struct server *srv, struct node *n)
{
    struct node *p = NULL;

    for (size_t i = 0; !p && i < srv->nroots; i++)
        p = parent_in_chain(srv->roots[i], n);
    pthread_rwlock_rdlock(&srv->exports_lock);
    for (size_t i = 0; !p && i < srv->nr_exports; i++)
        p = parent_in_chain(srv->exports[i]->node, n);
    pthread_rwlock_unlock(&srv->exports_lock);
    return p;
}

/* query-named-block-nodes' dirty-bitmaps for N. */
static json_t *
bitmaps_json(struct server *srv, struct node *n, json_t *info)
{
    json_t *list = json_object_get(
        json_object_get(json_object_get(info, "format-specific"), "data"),
        "bitmaps");
    json_t *out = json_array(), *b;
    size_t i;

    json_array_foreach(list, i, b) {
        const char *name = json_string_value(json_object_get(b, "name"));
        bool rec = false, inuse = false;
        struct bitmap *bm;
        json_t *f, *o;
        size_t k;

        if (!name)
            continue;
        json_array_foreach(json_object_get(b, "flags"), k, f) {
            rec |= !strcmp(json_string_value(f) ?: "", "auto");
            inuse |= !strcmp(json_string_value(f) ?: "", "in-use");
        }
        bm = n->drv->bitmap_get ? n->drv->bitmap_get(n, name) : NULL;
        if (!bm && errno == EINVAL)
            inuse = true;
        if (inuse && !bm)
            rec = false; /* an inconsistent bitmap records nothing */
        o = json_pack("{s:s,s:b,s:b,s:b,s:O,s:I}", "name", name,
                      "recording", rec, "persistent", true, "busy",
                      export_uses_bitmap(srv, n, name), "granularity",
                      json_object_get(b, "granularity"), "count",
                      (json_int_t)(bm ? bitmap_count(bm) : 0));
        if (o && inuse && !bm)
            json_object_set_new(o, "inconsistent", json_true());
        bitmap_free(bm);
        json_array_append_new(out, o);
    }
    {
        json_t *mem = node_mem_bitmaps_json(n), *m;

        json_array_foreach(mem, i, m) {
            const char *name = json_string_value(json_object_get(m, "name"));

            json_object_set_new(m, "busy",
                                json_boolean(export_uses_bitmap(srv, n,
                                                                name)));
            json_array_append(out, m);
        }
        json_decref(mem);
    }
    return out;
}

/* Read-only as QEMU shows it: a backing layer is read-only to its
 * users even where vimg keeps it open for writing (commit, snapshot). */
static bool
node_read_only(struct server *srv, struct node *n)
{
    return !(n->flags & NODE_RDWR) || server_backing_parent(srv, n);
}

static json_t *
node_json(struct server *srv, struct node *n)
{
    json_t *info = node_info_json(n), *o;
    int depth = 0;

    if (!info)
        return NULL;
    for (struct node *b = n->backing; b; b = b->backing)
        depth++;
    o = json_pack("{s:i,s:s,s:O,s:i,s:b,s:s,s:i,s:s,s:i,s:i,s:i,s:b,s:i,"
                  "s:i,s:{s:b,s:b,s:b},s:s}",
                  "iops_rd", 0, "detect_zeroes", "off", "image", info,
                  "iops_wr", 0, "ro", node_read_only(srv, n), "node-name",
                  n->node_name, "backing_file_depth", depth, "drv",
                  n->drv->name, "iops", 0, "bps_wr", 0, "write_threshold",
                  0, "encrypted", false, "bps", 0, "bps_rd", 0, "cache",
                  "no-flush", false, "direct", false, "writeback", true,
                  "file", n->filename ? n->filename : "");
    if (o && n->backing_name)
        json_object_set_new(o, "backing_file",
                            json_string(n->backing_full ? n->backing_full
                                                        : n->backing_name));
    if (o && n->drv->kind == DRV_FORMAT)
        json_object_set_new(o, "dirty-bitmaps", bitmaps_json(srv, n, info));
    json_decref(info);
    return o;
}

DEFINE_VECTOR(struct node *, nodev);

static void
collect(struct nodev *seen, struct node *n, bool flat)
{
    if (!n)
        return;
    for (size_t i = 0; i < seen->len; i++)
        if (seen->ptr[i] == n)
            return;
    nodev_append(seen, n);
    if (flat)
        return;
    collect(seen, n->file, false);
    collect(seen, n->data_file, false);
    collect(seen, n->backing, false);
}

static int
cmd_query_named_block_nodes(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { "?flat:b", NULL };
    struct nodev seen = { 0 };
    json_t *a;

    if (qmp_check_args(args, spec) == -1)
        return -1;
    for (size_t i = 0; i < srv->nroots; i++)
        collect(&seen, srv->roots[i], false);
    pthread_rwlock_rdlock(&srv->exports_lock);
    for (size_t i = 0; i < srv->nr_exports; i++)
        collect(&seen, srv->exports[i]->node, false);
    pthread_rwlock_unlock(&srv->exports_lock);
    a = json_array();
    for (size_t i = 0; a && i < seen.len; i++)
        json_array_append_new(a, node_json(srv, seen.ptr[i]));
    nodev_reset(&seen);
    *ret = a;
    return a ? 0 : -1;
}

const struct qmp_command qmp_block_commands[] = {
    { "blockdev-add", cmd_blockdev_add },
    { "blockdev-del", cmd_blockdev_del },
    { "query-named-block-nodes", cmd_query_named_block_nodes },
    { NULL, NULL },
};
