/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The public vimg_* entry points for opening and I/O: thin wrappers
 * that build option trees and call into node.c and io.c.
 */
#include <string.h>

#include "error.h"
#include "io.h"
#include "node.h"
#include "options.h"

static vimg_node *
open_tree(json_t *opts, unsigned flags)
{
    struct node *n;

    if (!opts)
        return NULL;
    if (flags & VIMG_OPEN_FORCE_SHARE && flags & VIMG_OPEN_RDWR) {
        json_decref(opts);
        vimg_error(EINVAL, "force-share (-U) is only for read-only opens");
        return NULL;
    }
    n = node_open(opts, flags);
    json_decref(opts);
    return node_handle(n);
}

vimg_node *
vimg_open(const char *filename, const char *format, unsigned flags)
{
    /* A probed raw image is accepted for reading only: a guest could
     * write a qcow2 header into it and change its format next time. */
    if (!(flags & VIMG_OPEN_RDWR))
        flags |= VIMG_OPEN_ALLOW_PROBE_RAW;
    return open_tree(opts_from_filename(filename, format), flags);
}

vimg_node *
vimg_open_opts(const char *optstr, unsigned flags)
{
    return open_tree(opts_parse_dotted(optstr, NULL), flags);
}

vimg_node *
vimg_open_json(const char *json, unsigned flags)
{
    return open_tree(opts_parse_json(json), flags);
}

int
vimg_close(vimg_node *h)
{
    struct node *n = node_of(h);
    int r = 0;

    if (!n)
        return 0;
    if (n->flags & NODE_RDWR && node_flush(n) == -1)
        r = -1;
    if (node_unref(n) == -1)
        r = -1;
    return r;
}

int64_t
vimg_get_size(vimg_node *h)
{
    struct node *n = node_of(h);

    return (int64_t)__atomic_load_n(&n->size, __ATOMIC_ACQUIRE);
}

const char *
vimg_get_format(vimg_node *h)
{
    struct node *n = node_of(h);

    return n->drv->name;
}

const char *
vimg_get_filename(vimg_node *h)
{
    struct node *n = node_of(h);

    return n->filename;
}

vimg_node *
vimg_get_backing(vimg_node *h)
{
    struct node *n = node_of(h);

    return node_handle(n->backing);
}

int
vimg_pread(vimg_node *h, void *buf, size_t count, uint64_t off,
           unsigned flags)
{
    struct node *n = node_of(h);

    (void)flags;
    return node_pread(n, buf, count, off);
}

int
vimg_pwrite(vimg_node *h, const void *buf, size_t count, uint64_t off,
            unsigned flags)
{
    struct node *n = node_of(h);

    return node_pwrite(n, buf, count, off,
                      flags & (REQ_FUA | REQ_COMPRESSED));
}

int
vimg_pwrite_zeroes(vimg_node *h, uint64_t off, uint64_t count,
                   unsigned flags)
{
    struct node *n = node_of(h);

    return node_pwrite_zeroes(n, off, count,
                              flags & (REQ_FUA | REQ_MAY_UNMAP | REQ_FAST));
}

int
vimg_discard(vimg_node *h, uint64_t off, uint64_t count, unsigned flags)
{
    struct node *n = node_of(h);

    (void)flags;
    return node_discard(n, off, count);
}

int
vimg_flush(vimg_node *h)
{
    struct node *n = node_of(h);

    return node_flush(n);
}

int
vimg_block_status(vimg_node *h, uint64_t off, uint64_t count,
                  struct vimg_extent *ext)
{
    struct node *n = node_of(h);

    return node_block_status(n, true, off, count, ext);
}

int
vimg_truncate(vimg_node *h, uint64_t size)
{
    struct node *n = node_of(h);

    return node_truncate(n, size, PREALLOC_OFF);
}
