/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP export commands: nbd-server-start / -stop, nbd-server-add /
 * -remove, block-export-add / -del, query-block-exports.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "qmp.h"

static int
cmd_nbd_server_start(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { "addr:o", "?tls-creds:s",
                                        "?tls-authz:s",
                                        "?max-connections:i", NULL };
    json_t *addr, *data;
    const char *type;
    int fds[16], n;

    (void)ret;
    if (qmp_check_args(args, spec) == -1)
        return -1;
    if (qmp_str(args, "tls-creds") || qmp_str(args, "tls-authz")) {
        vimg_error(ENOTSUP, "TLS credentials are given with --tls-* "
                            "options at start-up");
        return -1;
    }
    addr = json_object_get(args, "addr");
    type = qmp_str(addr, "type");
    /* SocketAddressLegacy: {type, data: {...}}; also the flat form. */
    data = json_object_get(addr, "data");
    if (!data)
        data = addr;
    if (type && !strcmp(type, "unix") && qmp_str(data, "path")) {
        fds[0] = listen_unix(qmp_str(data, "path"));
        n = fds[0] == -1 ? -1 : 1;
    } else if (type && !strcmp(type, "inet") && qmp_str(data, "port")) {
        n = listen_tcp(qmp_str(data, "host"), qmp_str(data, "port"), fds,
                       16);
    } else {
        vimg_error(EINVAL, "Invalid parameter 'addr'");
        return -1;
    }
    if (n <= 0) {
        vimg_error(EADDRNOTAVAIL, "Failed to listen on the NBD address");
        return -1;
    }
    if (qmp_int(args, "max-connections", 0) > 0)
        srv->max_connections =
            (unsigned)qmp_int(args, "max-connections", 100);
    if (listen_start(srv, fds, n, !strcmp(type, "unix")
                                      ? qmp_str(data, "path")
                                      : NULL) == -1) {
        for (int i = 0; i < n; i++)
            close(fds[i]);
        return -1;
    }
    return 0;
}

static int
cmd_nbd_server_stop(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { NULL };

    (void)ret;
    if (qmp_check_args(args, spec) == -1)
        return -1;
    pthread_mutex_lock(&srv->lock);
    if (!srv->nlfds) {
        pthread_mutex_unlock(&srv->lock);
        vimg_error(EINVAL, "NBD server not running");
        return -1;
    }
    pthread_mutex_unlock(&srv->lock);
    listen_stop(srv);
    /* Its exports go with it, as in QEMU. */
    for (;;) {
        char *name = NULL;

        pthread_rwlock_rdlock(&srv->exports_lock);
        if (srv->nr_exports)
            name = strdup(srv->exports[0]->name);
        pthread_rwlock_unlock(&srv->exports_lock);
        if (!name)
            break;
        export_remove(srv, NULL, name, true);
        free(name);
    }
    return 0;
}

/* The names in "bitmaps": ["B" | {"node": N, "name": B}, ...]. */
static const char **
bitmap_names(json_t *list, const char *single)
{
    size_t n = json_array_size(list), k = 0, i;
    const char **v = calloc(n + 2, sizeof *v);
    json_t *b;

    if (!v)
        return NULL;
    if (single)
        v[k++] = single;
    json_array_foreach(list, i, b) {
        const char *name = json_is_string(b) ? json_string_value(b)
                                             : qmp_str(b, "name");

        if (name)
            v[k++] = name;
    }
    return v;
}

static int
add_export(struct server *srv, const char *id, const char *nodename,
           const char *name, json_t *args, const char *single_bitmap)
{
    struct node *n = qmp_node(nodename);
    const char **bitmaps;
    bool writable = qmp_bool(args, "writable", false);
    int r;

    if (!n)
        return -1;
    if (writable && (!(n->flags & NODE_RDWR) ||
                     server_backing_parent(srv, n))) {
        node_unref(n);
        vimg_error(EROFS, "Cannot export read-only node as writable");
        return -1;
    }
    bitmaps = bitmap_names(json_object_get(args, "bitmaps"), single_bitmap);
    if (!bitmaps) {
        node_unref(n);
        return -1;
    }
    r = export_add(srv, id, name, qmp_str(args, "description"), n, writable,
                   qmp_bool(args, "allocation-depth", false), true, bitmaps);
    free(bitmaps);
    return r;
}

static int
cmd_block_export_add(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = {
        "type:s", "id:s", "node-name:s", "?writable:b", "?writethrough:b",
        "?name:s", "?description:s", "?bitmaps:a", "?allocation-depth:b",
        "?iothread:s", "?fixed-iothread:b", NULL
    };
    const char *nn;

    (void)ret;
    if (qmp_check_args(args, spec) == -1)
        return -1;
    if (strcmp(qmp_str(args, "type"), "nbd")) {
        vimg_error(ENOTSUP, "Export type '%s' is not supported",
                   qmp_str(args, "type"));
        return -1;
    }
    nn = qmp_str(args, "node-name");
    return add_export(srv, qmp_str(args, "id"), nn,
                      qmp_str(args, "name") ? qmp_str(args, "name") : nn,
                      args, NULL);
}

static int
remove_mode(json_t *args, bool *hard)
{
    const char *mode = qmp_str(args, "mode");

    *hard = mode && !strcmp(mode, "hard");
    if (mode && !*hard && strcmp(mode, "safe")) {
        vimg_error(EINVAL, "Parameter 'mode' does not accept value '%s'",
                   mode);
        return -1;
    }
    return 0;
}

static int
cmd_block_export_del(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { "id:s", "?mode:s", NULL };
    bool hard;

    (void)ret;
    if (qmp_check_args(args, spec) == -1 || remove_mode(args, &hard) == -1)
        return -1;
    return export_remove(srv, qmp_str(args, "id"), NULL, hard);
}

static int
cmd_nbd_server_add(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { "device:s", "?name:s",
                                        "?description:s", "?writable:b",
                                        "?bitmap:s", NULL };
    const char *dev, *name;

    (void)ret;
    if (qmp_check_args(args, spec) == -1)
        return -1;
    pthread_mutex_lock(&srv->lock);
    if (!srv->nlfds) {
        pthread_mutex_unlock(&srv->lock);
        vimg_error(EINVAL, "NBD server not running");
        return -1;
    }
    pthread_mutex_unlock(&srv->lock);
    dev = qmp_str(args, "device");
    name = qmp_str(args, "name") ? qmp_str(args, "name") : dev;
    return add_export(srv, name, dev, name, args, qmp_str(args, "bitmap"));
}

static int
cmd_nbd_server_remove(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { "name:s", "?mode:s", NULL };
    bool hard;

    (void)ret;
    if (qmp_check_args(args, spec) == -1 || remove_mode(args, &hard) == -1)
        return -1;
    return export_remove(srv, NULL, qmp_str(args, "name"), hard);
}

static int
cmd_query_block_exports(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { NULL };

    if (qmp_check_args(args, spec) == -1)
        return -1;
    *ret = export_query(srv);
    return 0;
}

const struct qmp_command qmp_export_commands[] = {
    { "nbd-server-start", cmd_nbd_server_start },
    { "nbd-server-stop", cmd_nbd_server_stop },
    { "nbd-server-add", cmd_nbd_server_add },
    { "nbd-server-remove", cmd_nbd_server_remove },
    { "block-export-add", cmd_block_export_add },
    { "block-export-del", cmd_block_export_del },
    { "query-block-exports", cmd_query_block_exports },
    { NULL, NULL },
};
