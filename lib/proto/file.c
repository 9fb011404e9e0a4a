/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The "file" protocol: bytes in a regular file or block device.
 *
 * pread/pwrite loop over short transfers and EINTR; FUA is RWF_DSYNC;
 * zeroes use fallocate (ZERO_RANGE, or PUNCH_HOLE when unmapping is
 * allowed); block status uses SEEK_DATA/SEEK_HOLE.  After one failed
 * fdatasync every later flush, write, zero, discard and resize fails
 * too: the kernel may have dropped the dirty pages, so a retry that
 * succeeds would lie (fsyncgate).  Reads still work.
 *
 * Options: filename (required); locking=auto|on|off; cache.direct=on
 * (QEMU's cache=none/directsync) opens the file with O_DIRECT.  Then
 * n->request_align (and n->serialise_align, so that io.c's read-modify-
 * write of partial blocks excludes other writes to the same block) is
 * the alignment O_DIRECT needs for offsets, lengths and buffers: the
 * device's logical block size, what statx reports for the file system,
 * or probed as QEMU's raw_probe_alignment does.  Every request io.c
 * passes is then aligned; a read may still end short at the end of the
 * file (the rest reads as zeroes).
 *
 * The file mirrors
 * the permissions node.c gives it (n->perm, n->shared, computed by
 * QEMU's rules from the role of the node above: see lib/node.c) onto
 * QEMU's OFD lock bytes (lib/lock.c), so that a qcow2 writer holds
 * consistent read, write and resize and shares consistent read and
 * write-unchanged; a qcow2 reader holds consistent read and shares all
 * but write and resize; a raw image passes its user's needs through
 * (holds consistent read, plus write when writing, and shares all);
 * -U (force-share) holds consistent read and shares everything.  No
 * locks are held between open and the first set_perm.  A truncate by a
 * user that does not hold resize (raw) takes it first.
 */
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "checked.h"
#include "error.h"
#include "lock.h"
#include "node.h"
#include "options.h"

struct file_state {
    int fd;
    bool is_block;
    bool flush_failed; /* sticky: see the comment at the top */
    bool no_locking;   /* locking=off */
    unsigned locked_perm, locked_shared; /* what the lock bytes say */
    bool no_prealloc;  /* fallocate is not supported here */
    bool direct;       /* opened with O_DIRECT (cache.direct) */
};

/* Writes at least this large allocate their blocks first. */
#define PREALLOC_MIN (256u << 10)

static int
file_set_perm(struct node *n)
{
    struct file_state *s = n->state;

    if (s->no_locking)
        return 0;
    if (lock_update(s->fd, n->filename, s->locked_perm, s->locked_shared,
                    n->perm, n->shared) == -1)
        return -1;
    s->locked_perm = n->perm;
    s->locked_shared = n->shared;
    return 0;
}

static int open_fd(const char *filename, int oflags, bool direct);

/* A new descriptor opened for writing replaces the read-only one; the
 * lock bytes move to it (the old ones are released first, or our own
 * locks would conflict with the new ones). */
static int
file_reopen_rw(struct node *n)
{
    struct file_state *s = n->state;
    int fd = open_fd(n->filename, O_RDWR, s->direct), old = s->fd;

    if (fd == -1)
        return -1;
    if (!s->no_locking &&
        (lock_update(old, n->filename, s->locked_perm, s->locked_shared, 0,
                     PERM_ALL) == -1 ||
         lock_update(fd, n->filename, 0, PERM_ALL, s->locked_perm,
                     s->locked_shared) == -1)) {
        lock_update(old, n->filename, 0, PERM_ALL, s->locked_perm,
                    s->locked_shared);
        close(fd);
        return -1;
    }
    s->fd = fd;
    close(old);
    return 0;
}

/* cache.direct from OPTS' "cache" object (QEMU's cache options). */
static int
get_cache_direct(json_t *opts, bool *direct)
{
    static const char *const keys[] = { "direct", "no-flush", NULL };
    json_t *cache = json_object_get(opts, "cache");

    *direct = false;
    if (!cache)
        return 0;
    if (!json_is_object(cache)) {
        vimg_error(EINVAL, "the 'file' driver's cache option must be an "
                   "object (cache.direct=on)");
        return -1;
    }
    if (opts_check_keys(cache, keys, "the 'file' driver's cache") == -1)
        return -1;
    return opts_get_bool(cache, "direct", false, direct);
}

/* Open FILENAME, with O_DIRECT when DIRECT; qemu's message when the file
 * system refuses O_DIRECT (util/osdep.c, qemu_open_internal). */
static int
open_fd(const char *filename, int oflags, bool direct)
{
    int fd = open(filename, oflags | O_CLOEXEC | (direct ? O_DIRECT : 0));

    if (fd == -1 && direct && errno == EINVAL) {
        int plain = open(filename, oflags | O_CLOEXEC);

        if (plain != -1) {
            close(plain);
            vimg_error(EINVAL, "Could not open '%s': filesystem does not "
                       "support O_DIRECT", filename);
            return -1;
        }
        errno = EINVAL;
    }
    if (fd == -1)
        vimg_error(errno, "Could not open '%s': %m", filename);
    return fd;
}

static bool
good_align(uint64_t a)
{
    return a >= 1 && a <= (1u << 16) && (a & (a - 1)) == 0;
}

/* The alignment O_DIRECT needs on S->fd (offsets, lengths, buffers). */
static uint32_t
probe_align(struct file_state *s)
{
    static const uint32_t sizes[] = { 1, 512, 1024, 2048, 4096 };
    uint32_t align = 4096; /* safe when nothing can be learnt */
    void *buf;
    int bs;

    if (s->is_block && ioctl(s->fd, BLKSSZGET, &bs) == 0 && good_align(bs))
        return MAX((uint32_t)bs, 512u);
#ifdef STATX_DIOALIGN
    struct statx stx;

    if (statx(s->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align &&
        good_align(stx.stx_dio_offset_align) &&
        good_align(stx.stx_dio_mem_align))
        return MAX(stx.stx_dio_offset_align, stx.stx_dio_mem_align);
#endif
    /* QEMU's probe: the smallest read at 0 the kernel takes.  If even
     * one byte works (an empty file, a hole) nothing was learnt. */
    if (posix_memalign(&buf, 4096, 4096))
        return align;
    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
        if (pread(s->fd, buf, sizes[i], 0) >= 0 || errno != EINVAL) {
            align = sizes[i] == 1 ? 4096 : sizes[i];
            break;
        }
    }
    free(buf);
    return align;
}

static int
file_open(struct node *n, json_t *opts)
{
    static const char *const keys[] = { "driver", "node-name", "filename",
                                        "locking", "read-only", "aio",
                                        "cache", NULL };
    struct file_state *s = n->state;
    const char *filename = opts_get_str(opts, "filename");
    const char *locking = opts_get_str(opts, "locking");
    int oflags = (n->flags & NODE_RDWR) ? O_RDWR : O_RDONLY;
    struct stat st;

    if (opts_check_keys(opts, keys, "the 'file' driver") == -1)
        return -1;
    if (!filename) {
        vimg_error(EINVAL, "the 'file' driver needs a filename");
        return -1;
    }
    if (get_cache_direct(opts, &s->direct) == -1)
        return -1;
    if (locking && strcmp(locking, "auto") && strcmp(locking, "on") &&
        strcmp(locking, "off")) {
        vimg_error(EINVAL, "locking must be auto, on or off");
        return -1;
    }
    s->no_locking = locking && !strcmp(locking, "off");
    s->locked_shared = PERM_ALL;
    if (!(n->filename = strdup(filename))) {
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    s->fd = open_fd(filename, oflags, s->direct);
    if (s->fd == -1)
        return -1;
    if (fstat(s->fd, &st) == -1) {
        vimg_error(errno, "%s: %m", filename);
        goto err;
    }
    if (S_ISBLK(st.st_mode)) {
        s->is_block = true;
        if (ioctl(s->fd, BLKGETSIZE64, &n->size) == -1) {
            vimg_error(errno, "%s: cannot get device size: %m", filename);
            goto err;
        }
    } else if (S_ISREG(st.st_mode)) {
        n->size = st.st_size;
    } else {
        vimg_error(EINVAL, "'%s' is not a file or a block device", filename);
        goto err;
    }
    if (s->direct)
        n->request_align = n->serialise_align = probe_align(s);
    return 0;
err:
    close(s->fd);
    return -1;
}

static int
file_close(struct node *n)
{
    struct file_state *s = n->state;

    return close(s->fd) == -1 && errno != EINTR ? -1 : 0;
}

static int
file_pread(struct node *n, void *buf, uint64_t count, uint64_t off)
{
    struct file_state *s = n->state;
    char *p = buf;

    while (count) {
        ssize_t r = pread(s->fd, p, MIN(count, (uint64_t)1 << 30), off);

        if (r == -1) {
            if (errno == EINTR)
                continue;
            vimg_error(errno, "%s: read at offset %" PRIu64 ": %m",
                       n->filename, off);
            return -1;
        }
        /* End of file: zeroes.  With O_DIRECT, a read that stops at an
         * unaligned offset stopped at the end of the file (errors come
         * in whole blocks), and reading on from there would fail. */
        if (r == 0 || (s->direct && (uint64_t)r < count &&
                       !IS_ALIGNED(off + r, (uint64_t)n->request_align))) {
            memset(p + r, 0, count - r);
            return 0;
        }
        p += r;
        off += r;
        count -= r;
    }
    return 0;
}

/* Allocate the blocks of a large write before it (KEEP_SIZE: the write
 * itself grows the file).  On ext4 a buffered write into allocated
 * blocks skips the delayed-allocation work of every page and costs about
 * a third less (tests/bench/RESULTS.md); the blocks would be allocated at
 * writeback anyway.  Advisory: an error is left for the write to meet. */
static void
prealloc_for_write(struct file_state *s, uint64_t off, uint64_t count)
{
    if (count < PREALLOC_MIN || s->is_block || s->no_prealloc)
        return;
    if (fallocate(s->fd, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)count) ==
            -1 &&
        (errno == EOPNOTSUPP || errno == ENOSYS))
        s->no_prealloc = true;
}

/* After a failed flush nothing is written or flushed again. */
static int
check_flush_failed(struct node *n)
{
    struct file_state *s = n->state;

    if (__atomic_load_n(&s->flush_failed, __ATOMIC_ACQUIRE)) {
        vimg_error(EIO, "%s: an earlier flush failed; data may be lost",
                   n->filename);
        return -1;
    }
    return 0;
}

static int
file_pwrite(struct node *n, const void *buf, uint64_t count, uint64_t off,
            unsigned flags)
{
    struct file_state *s = n->state;
    const char *p = buf;

    if (check_flush_failed(n) == -1)
        return -1;
    prealloc_for_write(s, off, count);
    while (count) {
        struct iovec iov = { (void *)p, MIN(count, (uint64_t)1 << 30) };
        ssize_t r = pwritev2(s->fd, &iov, 1, off,
                             (flags & REQ_FUA) ? RWF_DSYNC : 0);

        if (r == -1) {
            if (errno == EINTR)
                continue;
            vimg_error(errno, "%s: write at offset %" PRIu64 ": %m",
                       n->filename, off);
            return -1;
        }
        p += r;
        off += r;
        count -= r;
    }
    return 0;
}

static int
file_flush(struct node *n)
{
    struct file_state *s = n->state;

    if (check_flush_failed(n) == -1)
        return -1;
    if (fdatasync(s->fd) == -1) {
        __atomic_store_n(&s->flush_failed, true, __ATOMIC_RELEASE);
        vimg_error(errno, "%s: flush: %m", n->filename);
        return -1;
    }
    return 0;
}

static int
file_pwrite_zeroes(struct node *n, uint64_t off, uint64_t count,
                   unsigned flags)
{
    struct file_state *s = n->state;
    int mode = FALLOC_FL_ZERO_RANGE;

    if (check_flush_failed(n) == -1)
        return -1;
    if (s->is_block) {
        vimg_error(ENOTSUP, "zeroing block devices by fallocate");
        return -1;
    }
    /* Punching past the end would not grow the file: zero-range then. */
    if ((flags & REQ_MAY_UNMAP) && off + count <= n->size)
        mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    if (fallocate(s->fd, mode, off, count) == -1) {
        if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) {
            vimg_error(ENOTSUP, "fallocate not supported");
            return -1;
        }
        vimg_error(errno, "%s: zero at offset %" PRIu64 ": %m", n->filename,
                   off);
        return -1;
    }
    if ((flags & REQ_FUA) && file_flush(n) == -1)
        return -1;
    return 0;
}

static int
file_discard(struct node *n, uint64_t off, uint64_t count)
{
    struct file_state *s = n->state;

    if (check_flush_failed(n) == -1)
        return -1;
    if (s->is_block || fallocate(s->fd, FALLOC_FL_PUNCH_HOLE |
                                 FALLOC_FL_KEEP_SIZE, off, count) == -1) {
        vimg_error(ENOTSUP, "discard not supported");
        return -1;
    }
    return 0;
}

static int
file_block_status(struct node *n, bool want_zero, uint64_t off,
                  uint64_t count, struct extent *e)
{
    struct file_state *s = n->state;
    off_t data, hole;

    e->flags = EXT_ALLOCATED | EXT_OFFSET | EXT_WRITABLE;
    e->offset = off;
    e->file = n;
    e->length = count;
    if (!want_zero || s->is_block) {
        e->flags |= EXT_DATA;
        return 0;
    }
    data = lseek(s->fd, off, SEEK_DATA);
    if (data == -1 && errno == ENXIO) {
        e->flags |= EXT_ZERO; /* a hole up to the end of the file */
        return 0;
    }
    if (data == -1) {
        e->flags |= EXT_DATA; /* cannot tell: say data */
        return 0;
    }
    if ((uint64_t)data > off) {
        e->flags |= EXT_ZERO;
        e->length = MIN(count, (uint64_t)data - off);
        return 0;
    }
    hole = lseek(s->fd, off, SEEK_HOLE);
    e->flags |= EXT_DATA;
    if (hole > (off_t)off)
        e->length = MIN(count, (uint64_t)hole - off);
    return 0;
}

/* Write zeroes over [old, size) for preallocation=full. */
static int
prealloc_full(struct node *n, uint64_t old, uint64_t size)
{
    char *zero = calloc(1, 1 << 20);

    if (!zero) {
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    for (uint64_t o = old; o < size; o += 1 << 20) {
        if (file_pwrite(n, zero, MIN(size - o, 1 << 20), o, 0) == -1) {
            free(zero);
            return -1;
        }
    }
    free(zero);
    return 0;
}

/* Run prealloc_full without O_DIRECT: its writes are not aligned.  The
 * node is drained (io.c), so no other request sees the change. */
static int
prealloc_full_buffered(struct node *n, uint64_t old, uint64_t size)
{
    struct file_state *s = n->state;
    int fl = fcntl(s->fd, F_GETFL), r;

    if (!s->direct)
        return prealloc_full(n, old, size);
    if (fl == -1 || fcntl(s->fd, F_SETFL, fl & ~O_DIRECT) == -1) {
        vimg_error(errno, "%s: preallocation: %m", n->filename);
        return -1;
    }
    r = prealloc_full(n, old, size);
    if (r == 0 && fdatasync(s->fd) == -1) {
        vimg_error(errno, "%s: preallocation: %m", n->filename);
        r = -1;
    }
    if (fcntl(s->fd, F_SETFL, fl) == -1 && r == 0) {
        vimg_error(errno, "%s: cannot restore O_DIRECT: %m", n->filename);
        r = -1;
    }
    return r;
}

/* A truncate to the node's current size needs no resize permission:
 * io.c uses it to cut the padding of an O_DIRECT write that went past
 * the end of the file (the node already has its new size). */
static int
file_truncate(struct node *n, uint64_t size, enum prealloc prealloc)
{
    struct file_state *s = n->state;
    uint64_t old = n->size;

    if (check_flush_failed(n) == -1)
        return -1;
    if (s->is_block) {
        vimg_error(ENOTSUP, "cannot resize a block device");
        return -1;
    }
    if (!(n->perm & PERM_RESIZE) && size != old) {
        n->perm |= PERM_RESIZE;
        if (file_set_perm(n) == -1) {
            n->perm &= ~PERM_RESIZE;
            return -1;
        }
    }
    if (ftruncate(s->fd, size) == -1) {
        vimg_error(errno, "%s: resize: %m", n->filename);
        return -1;
    }
    if (size > old && prealloc == PREALLOC_FALLOC &&
        fallocate(s->fd, 0, old, size - old) == -1) {
        vimg_error(errno, "%s: preallocation: %m", n->filename);
        return -1;
    }
    if (size > old && prealloc == PREALLOC_FULL)
        return prealloc_full_buffered(n, old, size);
    return 0;
}

static int64_t
file_allocated_size(struct node *n)
{
    struct file_state *s = n->state;
    struct stat st;

    if (fstat(s->fd, &st) == -1) {
        vimg_error(errno, "%s: %m", n->filename);
        return -1;
    }
    return (int64_t)st.st_blocks * 512;
}

const struct driver file_proto = {
    .name = "file",
    .kind = DRV_PROTOCOL,
    .state_size = sizeof(struct file_state),
    .open = file_open,
    .close = file_close,
    .pread = file_pread,
    .pwrite = file_pwrite,
    .pwrite_zeroes = file_pwrite_zeroes,
    .discard = file_discard,
    .flush = file_flush,
    .block_status = file_block_status,
    .truncate = file_truncate,
    .allocated_size = file_allocated_size,
    .set_perm = file_set_perm,
    .reopen_rw = file_reopen_rw,
};

int
file_proto_fd(struct node *n)
{
    const struct file_state *s;

    if (!n || n->drv != &file_proto)
        return -1;
    s = n->state;
    return s->direct ? -1 : s->fd;
}
