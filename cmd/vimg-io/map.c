/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg-io's allocation commands, "map" and "alloc", plus "length".
 * Like qemu-io they describe the top layer only: a range is allocated
 * when the top image decides its content (data or zeroes), whatever its
 * backing files hold.  Consecutive extents with the same answer are
 * merged, as qemu-io's map_is_allocated() does.
 */
#include <stdio.h>

#include "cmds.h"
#include "util.h"

/* Is [OFF, OFF+COUNT) allocated in the top layer?  1 or 0 with *NUM set
 * to the length of the extent with that answer (0 past the end), or -1
 * after printing an error for command CMD. */
static int
is_allocated(struct io_ctx *ctx, const char *cmd, int64_t size, int64_t off,
             int64_t count, int64_t *num)
{
    struct vimg_extent e;

    if (off >= size || !count) {
        *num = 0;
        return 0;
    }
    if (count > size - off)
        count = size - off;
    if (vimg_block_status(ctx->node, off, count, &e) == -1) {
        io_lib_err(cmd);
        return -1;
    }
    *num = e.length < (uint64_t)count ? (int64_t)e.length : count;
    return (e.flags & VIMG_EXT_ALLOCATED) && e.depth == 0;
}

/* Like is_allocated(), but merges the following extents that give the
 * same answer. */
static int
is_allocated_run(struct io_ctx *ctx, int64_t size, int64_t off, int64_t count,
                 int64_t *num)
{
    int first = is_allocated(ctx, "map", size, off, count, num);
    int64_t n;
    int r;

    while (first >= 0 && *num < count) {
        r = is_allocated(ctx, "map", size, off + *num, count - *num, &n);
        if (r < 0)
            return -1;
        if (r != first || !n)
            break;
        *num += n;
    }
    return first;
}

int
io_cmd_map(struct io_ctx *ctx, int argc, char **argv)
{
    int64_t size = vimg_get_size(ctx->node), off = 0, num;
    char s1[64], s2[64];
    int r;

    (void)argc;
    (void)argv;
    if (size < 0) {
        io_lib_err("map");
        return -1;
    }
    while (off < size) {
        r = is_allocated_run(ctx, size, off, size - off, &num);
        if (r < 0)
            return -1;
        if (!num) {
            io_err("map failed: Unexpected end of image\n");
            return -1;
        }
        io_cvtstr((double)num, s1, sizeof s1);
        io_cvtstr((double)off, s2, sizeof s2);
        printf("%s (0x%llx) bytes %s at offset %s (0x%llx)\n", s1,
               (unsigned long long)num, r ? "    allocated" : "not allocated",
               s2, (unsigned long long)off);
        off += num;
    }
    return 0;
}

int
io_cmd_alloc(struct io_ctx *ctx, int argc, char **argv)
{
    int64_t size = vimg_get_size(ctx->node), start, off, count = 512;
    int64_t remaining, num, sum = 0;
    char s1[64];
    int r;

    if (size < 0) {
        io_lib_err("alloc");
        return -1;
    }
    if (io_arg_num(argv[1], &start) == -1 ||
        (argc == 3 && io_arg_num(argv[2], &count) == -1))
        return -1;
    off = start;
    remaining = count;
    while (remaining) {
        r = is_allocated(ctx, "alloc", size, off, remaining, &num);
        if (r < 0)
            return -1;
        if (!num) {
            count -= remaining; /* past the end */
            break;
        }
        off += num;
        remaining -= num;
        if (r)
            sum += num;
    }
    io_cvtstr((double)start, s1, sizeof s1);
    printf("%lld/%lld bytes allocated at offset %s\n", (long long)sum,
           (long long)count, s1);
    return 0;
}

int
io_cmd_length(struct io_ctx *ctx, int argc, char **argv)
{
    int64_t size = vimg_get_size(ctx->node);
    char s[64];

    (void)argc;
    (void)argv;
    if (size < 0) {
        io_lib_err("length");
        return -1;
    }
    io_cvtstr((double)size, s, sizeof s);
    printf("%s\n", s);
    return 0;
}
