/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The "raw" format: the guest sees the bytes of its file child as they
 * are, optionally a window of them (offset=, size=).  A raw node decides
 * its whole content (no backing), so block status always says allocated
 * and passes the child's data/hole information through when asked.
 */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "checked.h"
#include "error.h"
#include "io.h"
#include "node.h"
#include "options.h"

struct raw_state {
    uint64_t offset;
    bool has_size; /* a fixed window: the file's size does not follow */
};

static int
raw_probe(const uint8_t *buf, size_t len)
{
    (void)buf;
    (void)len;
    return 1; /* anything is raw, with the lowest confidence */
}

static int
raw_open(struct node *n, json_t *opts)
{
    static const char *const keys[] = { "driver", "node-name", "file",
                                        "offset", "size", "read-only",
                                        "backing", "cache", NULL };
    struct raw_state *s = n->state;
    uint64_t size;

    if (opts_check_keys(opts, keys, "the 'raw' format") == -1)
        return -1;
    if (opts_get_size(opts, "offset", 0, &s->offset) == -1 ||
        opts_get_size(opts, "size", UINT64_MAX, &size) == -1)
        return -1;
    if (s->offset > n->file->size) {
        vimg_error(EINVAL, "offset %" PRIu64 " is past the end of the file",
                   s->offset);
        return -1;
    }
    s->has_size = size != UINT64_MAX;
    if (!s->has_size) /* qemu rounds a file's length up to 512 bytes */
        size = ALIGN_UP(n->file->size, 512) - s->offset;
    else if (size > n->file->size - s->offset) {
        vimg_error(EINVAL, "size %" PRIu64 " runs past the end of the file",
                   size);
        return -1;
    }
    n->size = size;
    return 0;
}

static int
raw_pread(struct node *n, void *buf, uint64_t count, uint64_t off)
{
    struct raw_state *s = n->state;

    return node_pread(n->file, buf, count, off + s->offset);
}

static int
raw_pwrite(struct node *n, const void *buf, uint64_t count, uint64_t off,
           unsigned flags)
{
    struct raw_state *s = n->state;

    if (flags & REQ_COMPRESSED) {
        vimg_error(ENOTSUP, "the 'raw' format does not support "
                   "compressed writes");
        return -1;
    }
    return node_pwrite(n->file, buf, count, off + s->offset, flags);
}

static int
raw_pwrite_zeroes(struct node *n, uint64_t off, uint64_t count,
                  unsigned flags)
{
    struct raw_state *s = n->state;

    return node_pwrite_zeroes(n->file, off + s->offset, count, flags);
}

static int
raw_discard(struct node *n, uint64_t off, uint64_t count)
{
    struct raw_state *s = n->state;

    return node_discard(n->file, off + s->offset, count);
}

static int
raw_block_status(struct node *n, bool want_zero, uint64_t off,
                 uint64_t count, struct extent *e)
{
    struct raw_state *s = n->state;

    if (node_block_status_layer(n->file, want_zero, off + s->offset, count,
                                e) == -1)
        return -1;
    e->flags |= EXT_ALLOCATED | EXT_OFFSET | EXT_WRITABLE;
    e->offset = off + s->offset;
    e->file = n->file;
    return 0;
}

static int
raw_truncate(struct node *n, uint64_t size, enum prealloc prealloc)
{
    struct raw_state *s = n->state;

    if (s->has_size || s->offset) {
        vimg_error(ENOTSUP, "cannot resize a raw image with offset or size");
        return -1;
    }
    return node_truncate(n->file, size, prealloc);
}

static int64_t
raw_allocated_size(struct node *n)
{
    return n->file->drv->allocated_size
               ? n->file->drv->allocated_size(n->file)
               : -1;
}

/* qemu-img measure -O raw: every byte of the virtual size is stored. */
static int
raw_measure(json_t *opts, struct node *src, uint64_t *required,
            uint64_t *fully_allocated)
{
    static const char *const keys[] = { "size", "preallocation", "nocow",
                                        "extent_size_hint", NULL };
    uint64_t size;

    if (opts_check_keys(opts, keys, "the 'raw' format") == -1 ||
        opts_get_size(opts, "size", 0, &size) == -1)
        return -1;
    *required = *fully_allocated = src ? src->size : ALIGN_UP(size, 512);
    return 0;
}

static int
raw_create(const char *filename, json_t *opts)
{
    static const char *const keys[] = { "size", "preallocation", "nocow",
                                        "extent_size_hint", NULL };
    const char *pa = opts_get_str(opts, "preallocation");
    enum prealloc mode = PREALLOC_OFF;
    json_t *fopts;
    struct node *file;
    uint64_t size;
    int fd, r;

    if (opts_check_keys(opts, keys, "The 'raw' format") == -1 ||
        opts_get_size(opts, "size", 0, &size) == -1)
        return -1;
    if (pa && !strcmp(pa, "falloc"))
        mode = PREALLOC_FALLOC;
    else if (pa && !strcmp(pa, "full"))
        mode = PREALLOC_FULL;
    else if (pa && strcmp(pa, "off")) {
        vimg_error(EINVAL, "invalid preallocation mode '%s' for raw", pa);
        return -1;
    }
    fd = open(filename, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd == -1) {
        vimg_error(errno, "Could not create '%s': %m", filename);
        return -1;
    }
    close(fd);
    fopts = json_pack("{s:s,s:s}", "driver", "file", "filename", filename);
    file = node_open(fopts, NODE_RDWR);
    json_decref(fopts);
    if (!file)
        return -1;
    r = node_truncate(file, size, mode);
    if (node_unref(file) == -1)
        r = -1;
    return r;
}

static int
raw_reopen_rw(struct node *n)
{
    (void)n; /* nothing of its own */
    return 0;
}

const struct driver raw_format = {
    .reopen_rw = raw_reopen_rw,
    .name = "raw",
    .kind = DRV_FORMAT,
    .state_size = sizeof(struct raw_state),
    .probe = raw_probe,
    .open = raw_open,
    .pread = raw_pread,
    .pwrite = raw_pwrite,
    .pwrite_zeroes = raw_pwrite_zeroes,
    .discard = raw_discard,
    .block_status = raw_block_status,
    .truncate = raw_truncate,
    .allocated_size = raw_allocated_size,
    .measure = raw_measure,
    .create = raw_create,
};
