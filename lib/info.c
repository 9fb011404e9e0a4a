/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qemu-img's ImageInfo for one node, as JSON text with qemu-img's field
 * names, shapes and order: the generic fields here, the format's own
 * (cluster-size, dirty-flag, snapshots, format-specific) from its
 * driver's info callback.
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "node.h"

/* Move KEY from SRC to DST if present (keeps qemu-img's key order). */
static void
move_key(json_t *dst, json_t *src, const char *key)
{
    json_t *v = json_object_get(src, key);

    if (v)
        json_object_set(dst, key, v);
}

json_t *
node_info_json(struct node *n)
{
    json_t *fmt = json_object(), *out = json_object();
    int64_t actual = -1;

    if (!fmt || !out)
        goto oom;
    if (n->drv->info && n->drv->info(n, fmt) == -1)
        goto err;
    if (n->drv->allocated_size)
        actual = n->drv->allocated_size(n);
    else if (n->file && n->file->drv->allocated_size)
        actual = n->file->drv->allocated_size(n->file);

    move_key(out, fmt, "snapshots");
    if (n->backing_fmt)
        json_object_set_new(out, "backing-filename-format",
                            json_string(n->backing_fmt));
    json_object_set_new(out, "virtual-size", json_integer(n->size));
    json_object_set_new(out, "filename",
                        json_string(n->filename ? n->filename : ""));
    move_key(out, fmt, "cluster-size");
    json_object_set_new(out, "format", json_string(n->drv->name));
    if (actual >= 0)
        json_object_set_new(out, "actual-size", json_integer(actual));
    move_key(out, fmt, "format-specific");
    if (n->backing_name) {
        const char *full = n->backing_full ? n->backing_full
                                           : n->backing_name;

        json_object_set_new(out, "full-backing-filename", json_string(full));
        json_object_set_new(out, "backing-filename",
                            json_string(n->backing_name));
    }
    if (json_object_get(fmt, "dirty-flag"))
        move_key(out, fmt, "dirty-flag");
    else
        json_object_set_new(out, "dirty-flag", json_false());
    json_decref(fmt);
    return out;
oom:
    vimg_error(ENOMEM, "out of memory");
err:
    json_decref(fmt);
    json_decref(out);
    return NULL;
}

char *
vimg_info_json(vimg_node *h)
{
    json_t *obj = node_info_json(node_of(h));
    char *s;

    if (!obj)
        return NULL;
    s = json_dumps(obj, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!s)
        vimg_error(ENOMEM, "out of memory");
    return s;
}
