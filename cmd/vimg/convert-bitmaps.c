/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The bitmap parts of vimg convert (see convert.h):
 *  - --bitmaps [--skip-broken-bitmaps]: copy the source's persistent
 *    bitmaps into the target after the data, as qemu-img does: checked
 *    before the target is created (an inconsistent bitmap stops the
 *    convert unless skipped), then added and filled in one all-or-nothing
 *    bitmap operation on the target.
 *  - --bitmap NAME: the dirty ranges that drive an incremental copy, and
 *    --clear-bitmap, which clears NAME once the increment is durable.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bitmap.h"
#include "cmd.h"
#include "convert.h"
#include "error.h"
#include "node.h"

/* The format part of N's info ({"format-specific": ...}); caller frees
 * with json_decref; NULL + vimg_error on failure. */
static json_t *
format_info(vimg_node *h)
{
    struct node *n = node_of(h);
    json_t *o = json_object();

    if (!o) {
        vimg_error(ENOMEM, "out of memory");
        return NULL;
    }
    if (n->drv->info && n->drv->info(n, o) == -1) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The bitmaps in INFO as qemu-img info lists them (borrowed), or NULL if
 * the format keeps none. */
static json_t *
bitmap_list(json_t *info)
{
    json_t *fs = json_object_get(info, "format-specific");

    return json_object_get(json_object_get(fs, "data"), "bitmaps");
}

static bool
has_flag(json_t *bm, const char *flag)
{
    size_t i;
    json_t *f;

    json_array_foreach(json_object_get(bm, "flags"), i, f)
        if (json_is_string(f) && !strcmp(json_string_value(f), flag))
            return true;
    return false;
}

static bool
supports_bitmaps(struct node *n)
{
    return n->drv->bitmap_op && n->drv->bitmap_get;
}

json_t *
convert_bitmaps_check_source(vimg_node *src, bool skip_broken)
{
    json_t *info, *all, *out, *bm;
    size_t i;

    if (!supports_bitmaps(node_of(src))) {
        cmd_error("Source lacks bitmap support");
        return NULL;
    }
    info = format_info(src);
    out = json_array();
    if (!info || !out) {
        cmd_lib_error(NULL);
        json_decref(info);
        json_decref(out);
        return NULL;
    }
    all = bitmap_list(info);
    /* qemu-img walks them last to first: report in its order. */
    for (i = json_array_size(all); i-- > 0;) {
        bm = json_array_get(all, i);
        if (!has_flag(bm, "in-use"))
            continue;
        if (skip_broken) {
            cmd_warning("Skipping inconsistent bitmap '%s'",
                        json_string_value(json_object_get(bm, "name")));
            continue;
        }
        cmd_error("Cannot copy inconsistent bitmap '%s'\n"
                  "Try --skip-broken-bitmaps, or use 'vimg bitmap --remove' "
                  "to delete it",
                  json_string_value(json_object_get(bm, "name")));
        json_decref(info);
        json_decref(out);
        return NULL;
    }
    json_array_foreach(all, i, bm)
        if (!has_flag(bm, "in-use"))
            json_array_append(out, bm);
    json_decref(info);
    return out;
}

/* The target must keep bitmaps (qcow2 v3) and have none of LIST's names. */
static int
check_target(vimg_node *dst, json_t *list)
{
    json_t *info = format_info(dst), *have, *bm, *fs;
    const char *compat;
    size_t i, j;

    if (!info) {
        cmd_lib_error(NULL);
        return -1;
    }
    fs = json_object_get(json_object_get(info, "format-specific"), "data");
    compat = json_string_value(json_object_get(fs, "compat"));
    if (!supports_bitmaps(node_of(dst)) || !compat ||
        !strcmp(compat, "0.10")) {
        cmd_error("Format driver '%s' does not support bitmaps",
                  node_of(dst)->drv->name);
        json_decref(info);
        return -1;
    }
    have = bitmap_list(info);
    json_array_foreach(list, i, bm) {
        const char *name = json_string_value(json_object_get(bm, "name"));
        json_t *t;

        json_array_foreach(have, j, t) {
            if (!strcmp(json_string_value(json_object_get(t, "name")),
                        name)) {
                cmd_error("Failed to create bitmap %s: Bitmap already "
                          "exists: %s", name, name);
                json_decref(info);
                return -1;
            }
        }
    }
    json_decref(info);
    return 0;
}

int
convert_bitmaps_copy(vimg_node *src, vimg_node *dst, json_t *list)
{
    size_t n = json_array_size(list), i;
    struct bitmap_action *a;
    json_t *bm;
    int r;

    if (check_target(dst, list) == -1)
        return -1;
    if (n == 0)
        return 0;
    a = calloc(2 * n, sizeof *a);
    if (!a) {
        cmd_error("out of memory");
        return -1;
    }
    json_array_foreach(list, i, bm) {
        const char *name = json_string_value(json_object_get(bm, "name"));
        json_int_t g = json_integer_value(json_object_get(bm, "granularity"));

        a[2 * i] = (struct bitmap_action){
            .op = BITMAP_OP_ADD, .name = name, .granularity = (uint32_t)g,
            .disabled = !has_flag(bm, "auto"), .next = &a[2 * i + 1] };
        a[2 * i + 1] = (struct bitmap_action){
            .op = BITMAP_OP_MERGE, .name = name, .src = node_of(src),
            .src_name = name, .next = i + 1 < n ? &a[2 * i + 2] : NULL };
    }
    r = node_of(dst)->drv->bitmap_op(node_of(dst), a);
    if (r == -1)
        cmd_error("Failed to copy bitmaps: %s", vimg_get_error());
    free(a);
    return r;
}

struct bitmap *
convert_bitmap_load(vimg_node *src, const char *name)
{
    struct node *n = node_of(src);
    struct bitmap *bm;

    if (!supports_bitmaps(n)) {
        cmd_error("Source lacks bitmap support");
        return NULL;
    }
    bm = n->drv->bitmap_get(n, name);
    if (!bm)
        cmd_lib_error(NULL);
    return bm;
}

int
convert_bitmap_clear(vimg_node *src, const char *name)
{
    struct bitmap_action a = { .op = BITMAP_OP_CLEAR, .name = name };
    struct node *n = node_of(src);

    if (n->drv->bitmap_op(n, &a) == -1) {
        cmd_error("the increment is complete, but clearing bitmap '%s' "
                  "failed: %s", name, vimg_get_error());
        return -1;
    }
    return 0;
}
