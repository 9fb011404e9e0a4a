/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Creating images: option parsing and the rules qemu-img applies before
 * any driver runs (a backing file needs a recorded format; the size
 * defaults to the backing file's, which is opened to check it unless
 * -u).  The format itself is laid out by the driver's create callback.
 */
#include <string.h>

#include "cleanup.h"
#include "create.h"
#include "error.h"
#include "node.h"
#include "options.h"

/* Open the future backing file to learn its size (and that it opens). */
static int
backing_size(const char *filename, const char *bfile, const char *bfmt,
             uint64_t *size)
{
    CLEANUP_FREE char *path = NULL;
    json_t *opts;
    struct node *b;

    if (!strncmp(bfile, "json:", 5)) {
        vimg_error(EINVAL, "json: backing file names are not supported");
        return -1;
    }
    path = node_path_relative(filename, bfile);
    if (!path)
        return -1;
    opts = opts_from_filename(path, bfmt);
    if (!opts)
        return -1;
    b = node_open(opts, VIMG_OPEN_FORCE_SHARE);
    json_decref(opts);
    if (!b) {
        vimg_error_prefix("Could not open backing image");
        return -1;
    }
    *size = b->size;
    node_unref(b);
    return 0;
}

json_t *
create_prepare(const char *format, const char *filename, const char *options,
               unsigned flags)
{
    json_t *opts = opts_parse_dotted(options ? options : "", NULL);
    const char *bfile, *bfmt;
    uint64_t size, bsize;
    bool has_size;

    if (!opts)
        return NULL;
    if (!driver_find(format))
        goto err;
    has_size = json_object_get(opts, "size") != NULL;
    if (opts_get_size(opts, "size", 0, &size) == -1)
        goto err;
    bfile = opts_get_str(opts, "backing_file");
    bfmt = opts_get_str(opts, "backing_fmt");
    if (bfile && !*bfile)
        bfile = NULL;
    if (bfile && !bfmt) {
        vimg_error(EINVAL, "Backing file specified without backing format");
        goto err;
    }
    if (bfmt && !bfile) {
        vimg_error(EINVAL, "Backing format specified without backing file");
        goto err;
    }
    if (bfile && !(flags & VIMG_CREATE_UNSAFE)) {
        if (backing_size(filename, bfile, bfmt, &bsize) == -1)
            goto err;
        if (!has_size) {
            size = bsize;
            has_size = true;
        }
    }
    if (!has_size) {
        vimg_error(EINVAL, "Image creation needs a size parameter");
        goto err;
    }
    if (size > INT64_MAX) {
        vimg_error(EINVAL, "Image size is too large");
        goto err;
    }
    json_object_set_new(opts, "size", json_integer((json_int_t)size));
    return opts;
err:
    json_decref(opts);
    return NULL;
}

int
create_image(const char *format, const char *filename, json_t *opts)
{
    const struct driver *drv = driver_find(format);

    if (!drv)
        return -1;
    if (!drv->create) {
        vimg_error(ENOTSUP, "Format driver '%s' does not support image "
                   "creation", format);
        return -1;
    }
    return drv->create(filename, opts);
}

int
vimg_create(const char *format, const char *filename, const char *options,
            unsigned flags)
{
    json_t *opts;
    int r;

    if (!format)
        format = "raw";
    opts = create_prepare(format, filename, options, flags);
    if (!opts)
        return -1;
    r = create_image(format, filename, opts);
    json_decref(opts);
    return r;
}
