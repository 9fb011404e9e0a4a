/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One step of a live job's copy: [OFF, OFF+LEN) from a source node to a
 * target node at the same offset, ranges that read as zeroes written as
 * zeroes (which may unmap), whole clusters compressed when asked; and
 * what a job does when such a step fails (on-source/target-error).
 */
#include <stdlib.h>

#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "io.h"
#include "jobs.h"
#include "vimg.h"

int
job_copy_range(struct node *src, struct node *dst, uint64_t off,
               uint64_t len, uint32_t compress_unit, bool *is_read)
{
    CLEANUP_FREE char *buf = NULL;
    uint64_t end = off + len;

    while (off < end) {
        struct vimg_extent ext;
        uint64_t n;

        *is_read = true;
        if (node_block_status(src, false, off, end - off, &ext) == -1)
            return -1;
        n = ext.length;
        if (ext.flags & VIMG_EXT_ZERO) {
            *is_read = false;
            if (node_pwrite_zeroes(dst, off, n, REQ_MAY_UNMAP) == -1)
                return -1;
        } else {
            unsigned fl = 0;

            if (!buf && !(buf = malloc(len))) {
                vimg_error(ENOMEM, "out of memory");
                return -1;
            }
            if (node_pread(src, buf, n, off) == -1)
                return -1;
            if (compress_unit && IS_ALIGNED(off, compress_unit) &&
                (IS_ALIGNED(n, compress_unit) || off + n == src->size))
                fl = REQ_COMPRESSED;
            *is_read = false;
            if (node_pwrite(dst, buf, n, off, fl) == -1)
                return -1;
        }
        off += n;
    }
    return 0;
}

int
job_copy_failed(struct job *j, enum job_on_error act, bool is_read)
{
    static const char *const names[] = { "report", "ignore", "stop" };
    int err = errno;
    CLEANUP_FREE char *msg = strdup(vimg_get_error());

    job_io_error(j, is_read, names[act], err);
    if (act != ON_ERROR_REPORT)
        return 0;
    vimg_error(EIO, "%s", msg ? msg : "I/O error");
    return -1;
}
