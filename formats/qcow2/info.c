/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 info: the fields qemu-img 7.2 adds to ImageInfo for qcow2 —
 * cluster-size, dirty-flag, snapshots and format-specific — with the
 * same names, shapes and key order.  Reads state fixed at open (and the
 * feature bits) under s->lock.
 */
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "error.h"
#include "qcow2.h"

static int
set(json_t *obj, const char *key, json_t *val)
{
    if (!val || json_object_set_new(obj, key, val) == -1) {
        vimg_error(ENOMEM, "out of memory building info");
        return -1;
    }
    return 0;
}

static json_t *
snapshots_json(const struct qcow2_state *s)
{
    json_t *arr = json_array();

    for (uint32_t i = 0; arr && i < s->nb_snapshots; i++) {
        const struct qcow2_snapshot *sn = &s->snapshots[i];
        json_t *o = json_object();
        if (!o || json_array_append_new(arr, o) == -1) {
            json_decref(arr);
            return NULL;
        }
        if ((sn->has_icount && sn->icount != UINT64_MAX &&
             set(o, "icount", json_integer(sn->icount)) == -1) ||
            set(o, "vm-clock-nsec",
                json_integer(sn->vm_clock_nsec % 1000000000)) == -1 ||
            set(o, "name", json_string(sn->name)) == -1 ||
            set(o, "date-sec", json_integer(sn->date_sec)) == -1 ||
            set(o, "date-nsec", json_integer(sn->date_nsec)) == -1 ||
            set(o, "vm-clock-sec",
                json_integer(sn->vm_clock_nsec / 1000000000)) == -1 ||
            set(o, "id", json_string(sn->id)) == -1 ||
            set(o, "vm-state-size", json_integer(sn->vm_state_size)) ==
                -1) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

static json_t *
bitmaps_json(const struct qcow2_state *s)
{
    json_t *arr = json_array();

    for (uint32_t i = 0; arr && i < s->nb_bitmaps; i++) {
        const struct qcow2_bitmap_info *b = &s->bitmaps[i];
        json_t *o = json_object(), *flags = json_array();
        if (!o || !flags || json_array_append_new(arr, o) == -1) {
            json_decref(o);
            json_decref(flags);
            json_decref(arr);
            return NULL;
        }
        if ((b->flags & QCOW2_BME_IN_USE) &&
            json_array_append_new(flags, json_string("in-use")) == -1)
            goto fail;
        if ((b->flags & QCOW2_BME_AUTO) &&
            json_array_append_new(flags, json_string("auto")) == -1)
            goto fail;
        if (set(o, "flags", flags) == -1)
            goto fail_arr;
        if (set(o, "name", json_string(b->name)) == -1 ||
            set(o, "granularity", json_integer(b->granularity)) == -1)
            goto fail_arr;
        continue;
    fail:
        json_decref(flags);
    fail_arr:
        json_decref(arr);
        return NULL;
    }
    return arr;
}

static json_t *
specific_json(const struct qcow2_state *s)
{
    json_t *d = json_object();
    bool v3 = s->version >= 3;

    if (!d)
        return NULL;
    if (set(d, "compat", json_string(v3 ? "1.1" : "0.10")) == -1 ||
        set(d, "compression-type",
            json_string(s->compression_type == 1 ? "zstd" : "zlib")) == -1)
        goto fail;
    if (v3 && set(d, "lazy-refcounts",
                  json_boolean(s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS)) ==
                  -1)
        goto fail;
    if (v3 && s->nb_bitmaps && set(d, "bitmaps", bitmaps_json(s)) == -1)
        goto fail;
    if (set(d, "refcount-bits", json_integer(s->refcount_bits)) == -1)
        goto fail;
    if (s->data_file_name &&
        (set(d, "data-file", json_string(s->data_file_name)) == -1 ||
         set(d, "data-file-raw",
             json_boolean(s->autoclear & QCOW2_AUTOCLEAR_DATA_FILE_RAW)) ==
             -1))
        goto fail;
    if (v3 &&
        (set(d, "corrupt",
             json_boolean(s->incompat & QCOW2_INCOMPAT_CORRUPT)) == -1 ||
         set(d, "extended-l2", json_boolean(s->extl2)) == -1))
        goto fail;
    return d;
fail:
    json_decref(d);
    return NULL;
}

int
qcow2_info(struct node *n, json_t *info)
{
    struct qcow2_state *s = n->state;
    json_t *fs;
    LOCK_GUARD(&s->lock);

    if (s->nb_snapshots && set(info, "snapshots", snapshots_json(s)) == -1)
        return -1;
    if (set(info, "cluster-size", json_integer(s->cluster_size)) == -1)
        return -1;
    fs = json_object();
    if (!fs || set(fs, "type", json_string("qcow2")) == -1 ||
        set(fs, "data", specific_json(s)) == -1) {
        json_decref(fs);
        if (fs)
            return -1;
        vimg_error(ENOMEM, "out of memory building info");
        return -1;
    }
    if (set(info, "format-specific", fs) == -1)
        return -1;
    return set(info, "dirty-flag",
               json_boolean(s->incompat & QCOW2_INCOMPAT_DIRTY));
}
