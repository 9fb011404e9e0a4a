/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * From parsed options to a ready server: TLS credentials, limits, the
 * images and their exports, and the listening sockets.
 *
 * qemu-storage-daemon mode: every --blockdev that is not the file or
 * backing child of another (named by its node-name) is opened, read-
 * write unless read-only=on; each --export serves one of them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"
#include "setup.h"

static int
open_single(struct setup *st, struct server *srv)
{
    unsigned flags = (st->read_only ? 0 : VIMG_OPEN_RDWR) |
                     VIMG_OPEN_ALLOW_PROBE_RAW;
    vimg_node *h = st->image_opts ? vimg_open_opts(st->file, flags)
                                  : vimg_open(st->file, st->format, flags);
    long shared = st->shared < 0 ? 1 : st->shared;

    if (!h) {
        server_log("Failed to open '%s': %s", st->file, vimg_get_error());
        return -1;
    }
    if (!st->format && !st->image_opts &&
        !strcmp(vimg_get_format(h), "raw") && !st->read_only)
        server_log("WARNING: Image format was not specified for '%s' and "
                   "probing guessed raw; specify -f raw to silence this",
                   st->file);
    srv->persistent = st->persistent;
    if (shared > 0 && (unsigned long)shared < srv->max_connections)
        srv->max_connections = (unsigned)shared;
    if (export_add(srv, NULL, st->export_name ? st->export_name : "",
                   st->description, node_of(h), !st->read_only,
                   st->alloc_depth, shared != 1, st->bitmaps) == -1) {
        server_log("%s", vimg_get_error());
        return -1;
    }
    return 0;
}

static json_t *
find_blockdev(json_t *bds, const char *name, size_t *idx)
{
    for (size_t i = 0; i < json_array_size(bds); i++) {
        json_t *b = json_array_get(bds, i);
        const char *nn = json_string_value(json_object_get(b, "node-name"));

        if (nn && !strcmp(nn, name)) {
            *idx = i;
            return b;
        }
    }
    return NULL;
}

/* A copy of BD with children named by node-name replaced by their
 * option trees; marks those as USED.  As in qemu, a string child must
 * name another --blockdev ("backing": "" is qemu's deprecated spelling
 * of null).  NULL after printing an error. */
static json_t *
resolve(json_t *bds, json_t *bd, bool *used, int depth)
{
    static const char *const keys[] = { "file", "backing", "data-file" };
    json_t *copy = json_deep_copy(bd);

    if (!copy || depth > 16) {
        server_log("--blockdev: %s", copy ? "child nesting too deep"
                                          : "out of memory");
        json_decref(copy);
        return NULL;
    }
    for (size_t k = 0; k < 3; k++) {
        const char *ref = json_string_value(json_object_get(copy, keys[k]));
        json_t *child;
        size_t idx;

        if (!ref)
            continue;
        if (k == 1 && !*ref) {
            json_object_set_new(copy, keys[k], json_null());
            continue;
        }
        if (!(child = find_blockdev(bds, ref, &idx))) {
            server_log("--blockdev: Cannot find device='%s' nor "
                       "node-name='%s'", ref, ref);
            json_decref(copy);
            return NULL;
        }
        used[idx] = true;
        child = resolve(bds, child, used, depth + 1);
        if (!child) {
            json_decref(copy);
            return NULL;
        }
        json_object_set_new(copy, keys[k], child);
    }
    return copy;
}

static struct node *
node_by_name(struct setup *st, const char *name)
{
    for (size_t i = 0; i < st->nnodes; i++)
        if (st->nodes[i]->node_name && !strcmp(st->nodes[i]->node_name, name))
            return st->nodes[i];
    return NULL;
}

static int
open_blockdevs(struct setup *st)
{
    size_t n = json_array_size(st->blockdevs), i;
    bool *used = calloc(n + 1, sizeof *used);
    json_t *bd;
    int r = 0;

    st->nodes = calloc(n + 1, sizeof *st->nodes);
    if (!used || !st->nodes) {
        free(used);
        return -1;
    }
    json_array_foreach(st->blockdevs, i, bd) {
        const char *nn = opts_get_str(bd, "node-name");
        json_t *opts;
        size_t first;

        if (!nn) {
            server_log("--blockdev: Parameter 'node-name' is missing");
            free(used);
            return -1;
        }
        if (find_blockdev(st->blockdevs, nn, &first) && first != i) {
            server_log("--blockdev: Duplicate nodes with node-name='%s'", nn);
            free(used);
            return -1;
        }
        opts = resolve(st->blockdevs, bd, used, 0); /* marks children */
        if (!opts) {
            free(used);
            return -1;
        }
        json_decref(opts);
    }
    for (i = 0; i < n && r == 0; i++) {
        json_t *opts;
        bool ro = false;
        struct node *node;

        if (used[i])
            continue;
        opts = resolve(st->blockdevs, json_array_get(st->blockdevs, i), used,
                       0);
        if (!opts) {
            r = -1;
            break;
        }
        if (opts_get_bool(opts, "read-only", false, &ro) == -1) {
            server_log("--blockdev: %s", vimg_get_error());
            json_decref(opts);
            r = -1;
            break;
        }
        json_object_del(opts, "read-only");
        node = node_open(opts, ro ? 0 : NODE_RDWR);
        if (!node) {
            server_log("Failed to open blockdev '%s': %s",
                       json_string_value(json_object_get(opts, "node-name")),
                       vimg_get_error());
            r = -1;
        } else {
            st->nodes[st->nnodes++] = node;
        }
        json_decref(opts);
    }
    /* Nodes opened as another's file or backing are the daemon's too
     * (listed, exportable, kept until blockdev-del), as in QEMU. */
    for (i = 0; i < n && r == 0; i++) {
        const char *nn = json_string_value(
            json_object_get(json_array_get(st->blockdevs, i), "node-name"));
        struct node *node = used[i] && nn ? node_find(nn) : NULL;

        if (node)
            st->nodes[st->nnodes++] = node;
    }
    free(used);
    return r;
}

/* The export's bitmaps: "bitmap": "B" or "bitmaps": ["B", ...] (an
 * object {"0": "B", ...} from the dotted form). */
static const char **
export_bitmaps(json_t *ex)
{
    json_t *one = json_object_get(ex, "bitmap");
    json_t *many = json_object_get(ex, "bitmaps"), *v;
    size_t n = json_is_array(many) ? json_array_size(many)
                                   : json_object_size(many), i = 0;
    const char **list = calloc(n + 2, sizeof *list);
    const char *key;

    if (!list)
        return NULL;
    if (json_string_value(one))
        list[i++] = json_string_value(one);
    if (json_is_array(many)) {
        size_t k;

        json_array_foreach(many, k, v)
            if (json_string_value(v))
                list[i++] = json_string_value(v);
    } else {
        json_object_foreach(many, key, v)
            if (json_string_value(v))
                list[i++] = json_string_value(v);
    }
    return list;
}

static int
add_daemon_export(struct setup *st, struct server *srv, json_t *ex)
{
    static const char *const allowed[] = {
        "type", "id", "node-name", "name", "description", "writable",
        "bitmap", "bitmaps", "allocation-depth", "multi-conn", NULL
    };
    const char *type = opts_get_str(ex, "type");
    const char *id = opts_get_str(ex, "id");
    const char *nn = opts_get_str(ex, "node-name");
    const char *name = opts_get_str(ex, "name");
    const char *mc = opts_get_str(ex, "multi-conn");
    bool writable, depth;
    const char **bitmaps;
    struct node *node;
    int r;

    if (opts_check_keys(ex, allowed, "--export") == -1 ||
        opts_get_bool(ex, "writable", false, &writable) == -1 ||
        opts_get_bool(ex, "allocation-depth", false, &depth) == -1) {
        server_log("%s", vimg_get_error());
        return -1;
    }
    if (!type || strcmp(type, "nbd")) {
        server_log("--export: only type=nbd is supported");
        return -1;
    }
    if (!id || !nn) {
        server_log("--export: Parameter '%s' is missing", id ? "node-name"
                                                             : "id");
        return -1;
    }
    for (size_t i = 0; i < srv->nr_exports; i++)
        if (srv->exports[i]->id && !strcmp(srv->exports[i]->id, id)) {
            server_log("--export: Block export id '%s' is already in use",
                       id);
            return -1;
        }
    node = node_by_name(st, nn);
    if (!node) {
        server_log("--export: Cannot find device=%s nor node-name=%s", nn,
                   nn);
        return -1;
    }
    if (writable && !(node->flags & NODE_RDWR)) {
        server_log("--export: Cannot export read-only node '%s' as "
                   "writable", nn);
        return -1;
    }
    if (mc && strcmp(mc, "on") && strcmp(mc, "off") && strcmp(mc, "auto")) {
        server_log("--export: multi-conn must be on, off or auto");
        return -1;
    }
    bitmaps = export_bitmaps(ex);
    if (!bitmaps)
        return -1;
    node_ref(node);
    /* Every connection shares the one node: multi-conn is safe. */
    r = export_add(srv, id, name ? name : nn,
                   opts_get_str(ex, "description"), node, writable, depth,
                   !mc || strcmp(mc, "off"), bitmaps);
    if (r == -1)
        server_log("%s", vimg_get_error());
    free(bitmaps);
    return r;
}

static int
open_daemon(struct setup *st, struct server *srv)
{
    json_t *ex;
    size_t i;

    srv->persistent = true;
    if (st->blockdevs && open_blockdevs(st) == -1)
        return -1;
    json_array_foreach(st->exports, i, ex)
        if (add_daemon_export(st, srv, ex) == -1)
            return -1;
    /* The server owns the nodes from now on (blockdev-del, shutdown). */
    for (i = 0; i < st->nnodes; i++)
        if (server_add_root(srv, st->nodes[i]) == -1)
            return -1;
    st->nnodes = 0;
    return 0;
}

int
setup_server(struct setup *st, struct server *srv)
{
    uint64_t mc;

    if (st->handshake_timeout >= 0)
        srv->handshake_timeout = (unsigned)st->handshake_timeout;
    if (st->max_connections > 0)
        srv->max_connections = (unsigned)st->max_connections;
    if (st->nbd_server &&
        opts_get_size(st->nbd_server, "max-connections", 0, &mc) == 0 &&
        mc > 0)
        srv->max_connections = mc > 100000 ? 100000 : (unsigned)mc;
    if (st->workers > 0)
        srv->workers = (unsigned)st->workers;
    if (st->tls_ca && !st->tls_cert) {
        server_log("--tls-ca needs --tls-cert and --tls-key");
        return -1;
    }
    if (st->tls_cert || st->tls_key || st->tls_psk) {
        srv->tls = tls_config_new(st->tls_cert, st->tls_key, st->tls_ca,
                                  st->tls_psk);
        if (!srv->tls)
            return -1;
    }
    if (st->file)
        return open_single(st, srv);
    return open_daemon(st, srv);
}

int
setup_listen(struct setup *st, int *fds, int max)
{
    const char *host = st->bind ? st->bind : "0.0.0.0";
    const char *port = st->port ? st->port : "10809";

    if (!st->file) {
        json_t *addr = json_object_get(st->nbd_server, "addr");
        const char *type = opts_get_str(addr, "type");

        if (!st->nbd_server && st->qmp_path)
            return 0; /* nbd-server-start may come later */
        if (!st->nbd_server) {
            server_log("no --nbd-server given: nowhere to listen");
            return -1;
        }
        if (type && !strcmp(type, "unix") && opts_get_str(addr, "path")) {
            st->socket_path = opts_get_str(addr, "path");
        } else if (type && !strcmp(type, "inet") &&
                   opts_get_str(addr, "port")) {
            host = opts_get_str(addr, "host") ? opts_get_str(addr, "host")
                                              : "0.0.0.0";
            port = opts_get_str(addr, "port");
        } else {
            server_log("--nbd-server: expected addr.type=unix,addr.path=P "
                       "or addr.type=inet,addr.host=H,addr.port=N");
            return -1;
        }
    }
    if (st->socket_path) {
        fds[0] = listen_unix(st->socket_path);
        return fds[0] == -1 ? -1 : 1;
    }
    return listen_tcp(host, port, fds, max);
}
