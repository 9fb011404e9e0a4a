/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP bitmap commands: block-dirty-bitmap-add, -remove, -clear, -enable,
 * -disable and -merge, as actions on a node's persistent bitmaps (the
 * format driver's bitmap_op, all or nothing per command).  Also used by
 * transactions (qmp-job.c) through qmp_bitmap_action().  Errors use
 * QMP's wording, without qemu-img's "Operation ... failed: " prefix.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "error.h"
#include "node-bitmaps.h"
#include "qmp.h"
#include "qmp-internal.h"

static const struct {
    const char *cmd;
    enum bitmap_op_kind op;
} kinds[] = {
    { "block-dirty-bitmap-add", BITMAP_OP_ADD },
    { "block-dirty-bitmap-remove", BITMAP_OP_REMOVE },
    { "block-dirty-bitmap-clear", BITMAP_OP_CLEAR },
    { "block-dirty-bitmap-enable", BITMAP_OP_ENABLE },
    { "block-dirty-bitmap-disable", BITMAP_OP_DISABLE },
    { "block-dirty-bitmap-merge", BITMAP_OP_MERGE },
};

static const char *const op_names[] = { "add", "remove", "clear",
                                        "enable", "disable", "merge" };

/* Drop the "Operation OP on bitmap NAME failed: " that the format driver
 * puts before its message (qemu-img bitmap's wording): QMP has none. */
static void
qmp_wording(enum bitmap_op_kind op, const char *name)
{
    char prefix[300], msg[1024];
    int n = snprintf(prefix, sizeof prefix,
                     "Operation %s on bitmap %.*s%s failed: ", op_names[op],
                     200, name, strlen(name) > 200 ? "..." : "");
    int saved = errno;

    if (n <= 0 || (size_t)n >= sizeof prefix ||
        strncmp(vimg_get_error(), prefix, (size_t)n))
        return;
    snprintf(msg, sizeof msg, "%s", vimg_get_error() + n);
    vimg_error(saved, "%s", msg);
}

static int
check(json_t *args, enum bitmap_op_kind op)
{
    static const char *const add[] = { "node:s", "name:s", "?granularity:i",
                                       "?persistent:b", "?disabled:b",
                                       NULL };
    static const char *const one[] = { "node:s", "name:s", NULL };
    static const char *const merge[] = { "node:s", "target:s", "bitmaps:a",
                                         NULL };

    return qmp_check_args(args, op == BITMAP_OP_ADD     ? add
                                : op == BITMAP_OP_MERGE ? merge
                                                        : one);
}

/* Before a merge changes anything: every source exists and is usable,
 * with the target's granularity. */
static bool
merge_sources_ok(struct node *n, const struct bitmap_action *a, size_t na)
{
    struct bitmap *dst, *src;
    bool ok = true;

    if (na == 0 || a[0].op != BITMAP_OP_MERGE)
        return true;
    if (!(dst = node_bitmap_copy(n, a[0].name)))
        return false;
    for (size_t i = 0; ok && i < na; i++) {
        src = node_bitmap_copy(a[i].src ? a[i].src : n, a[i].src_name);
        ok = src != NULL;
        bitmap_free(src);
    }
    bitmap_free(dst);
    return ok;
}

static int
run_actions(struct node *n, const struct bitmap_action *a, size_t na)
{
    for (size_t i = 0; i < na; i++)
        if (node_bitmap_action(n, &a[i]) == -1)
            return -1;
    return 0;
}

/* Apply one command's action(s) to its node. */
static int
apply(struct server *srv, enum bitmap_op_kind op, json_t *args)
{
    struct bitmap_action a[64] = { 0 }, *last = NULL;
    struct node *n, *srcs[64] = { 0 };
    const char *name = qmp_str(args, op == BITMAP_OP_MERGE ? "target"
                                                            : "name");
    size_t na = 0;
    json_t *b;
    size_t i;
    int r = -1;

    if (check(args, op) == -1 || !(n = qmp_node(qmp_str(args, "node"))))
        return -1;
    if (op != BITMAP_OP_ADD && export_uses_bitmap(srv, n, name)) {
        vimg_error(EBUSY, "Bitmap '%s' is currently in use by another "
                          "operation and cannot be used", name);
        goto out;
    }
    if (op != BITMAP_OP_MERGE) {
        a[na++] = (struct bitmap_action){
            .op = op, .name = name,
            .granularity = (uint32_t)qmp_int(args, "granularity", 0),
            .disabled = qmp_bool(args, "disabled", false) };
    } else {
        json_array_foreach(json_object_get(args, "bitmaps"), i, b) {
            const char *src = json_is_string(b) ? json_string_value(b)
                                                : qmp_str(b, "name");
            const char *sn = json_is_string(b) ? NULL : qmp_str(b, "node");

            if (!src || na == 64) {
                vimg_error(EINVAL, "Invalid parameter 'bitmaps'");
                goto out;
            }
            if (sn && !(srcs[na] = qmp_node(sn)))
                goto out;
            a[na] = (struct bitmap_action){ .op = BITMAP_OP_MERGE,
                                            .name = name, .src = srcs[na],
                                            .src_name = src };
            na++;
        }
    }
    (void)last;
    if (op == BITMAP_OP_ADD)
        r = node_bitmap_add(n, name, a[0].granularity,
                            qmp_bool(args, "persistent", false),
                            a[0].disabled);
    else
        r = merge_sources_ok(n, a, na) ? run_actions(n, a, na) : -1;
    if (r == -1)
        qmp_wording(op, name);
out:
    for (i = 0; i < 64; i++)
        node_unref(srcs[i]);
    node_unref(n);
    return r;
}

int
qmp_bitmap_action(struct server *srv, const char *type, json_t *data)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(kinds[i].cmd, type))
            return apply(srv, kinds[i].op, data);
    vimg_error(EINVAL, "unknown bitmap action '%s'", type);
    return -1;
}

#define BITMAP_CMD(fn, op)                                                   \
    static int fn(struct server *srv, json_t *args, json_t **ret)            \
    {                                                                        \
        (void)ret;                                                           \
        return apply(srv, op, args);                                         \
    }
BITMAP_CMD(cmd_add, BITMAP_OP_ADD)
BITMAP_CMD(cmd_remove, BITMAP_OP_REMOVE)
BITMAP_CMD(cmd_clear, BITMAP_OP_CLEAR)
BITMAP_CMD(cmd_enable, BITMAP_OP_ENABLE)
BITMAP_CMD(cmd_disable, BITMAP_OP_DISABLE)
BITMAP_CMD(cmd_merge, BITMAP_OP_MERGE)

const struct qmp_command qmp_bitmap_commands[] = {
    { "block-dirty-bitmap-add", cmd_add },
    { "block-dirty-bitmap-remove", cmd_remove },
    { "block-dirty-bitmap-clear", cmd_clear },
    { "block-dirty-bitmap-enable", cmd_enable },
    { "block-dirty-bitmap-disable", cmd_disable },
    { "block-dirty-bitmap-merge", cmd_merge },
    { NULL, NULL },
};
