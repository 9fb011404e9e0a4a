/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvimg public API: open raw and qcow2 images (with their backing
 * chains) and do synchronous, thread-safe I/O on them.
 *
 * Errors: every function that fails returns -1 (or NULL) and records a
 * thread-local message and errno, read with vimg_get_error() and
 * vimg_get_errno().  Success never changes them.
 */
#ifndef VIMG_H
#define VIMG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VIMG_API __attribute__((visibility("default")))

typedef struct vimg_node vimg_node;

/* Flags for the vimg_open* family. */
#define VIMG_OPEN_RDWR 0x1u        /* open for writing */
#define VIMG_OPEN_FORCE_SHARE 0x2u /* -U: read-only, share everything */
#define VIMG_OPEN_NO_BACKING 0x4u  /* do not open backing files */
#define VIMG_OPEN_ALLOW_PROBE_RAW 0x8u /* accept raw when probing (vimg_open
                                          * sets it for read-only opens) */
#define VIMG_OPEN_CHECK 0x10u    /* for check -r: open a corrupt image
                                   * read-write, no automatic repair */
#define VIMG_OPEN_NO_FLUSH 0x20u /* cache=unsafe: flushes write back caches
                                 * but never fsync (qemu-img convert) */
#define VIMG_OPEN_NO_SHARE 0x40u /* let no other process write or resize
                                  * the image while open (qemu-img's
                                  * BDRV_O_NO_SHARE; formats like qcow2
                                  * refuse that anyway) */
#define VIMG_OPEN_NO_IO 0x80u /* metadata only (info): do not open files
                               * an image names, such as a qcow2 external
                               * data file, unless the options name them
                               * (qemu-img's BDRV_O_NO_IO) */

/* Request flags. */
#define VIMG_REQ_FUA 0x1u       /* write: durable on return */
#define VIMG_REQ_MAY_UNMAP 0x2u /* zeroes: may deallocate */
#define VIMG_REQ_FAST 0x4u      /* zeroes: fail with ENOTSUP if slow */
#define VIMG_REQ_COMPRESSED 0x8u /* write: store compressed (qcow2; whole
                                  * clusters only) */

/* Extent flags (vimg_block_status). */
#define VIMG_EXT_ALLOCATED 0x1u /* some layer of the chain decides it */
#define VIMG_EXT_DATA 0x2u      /* holds data (may still read as 0) */
#define VIMG_EXT_ZERO 0x4u      /* reads as zeroes */
#define VIMG_EXT_OFFSET 0x8u    /* offset below is valid */
#define VIMG_EXT_COMPRESSED 0x10u /* stored compressed */

struct vimg_extent {
    uint64_t length;  /* bytes from the queried offset */
    uint32_t flags;   /* VIMG_EXT_* */
    int depth;        /* 0 = top layer; chain length if unallocated */
    uint64_t offset;  /* host offset in that layer's file */
};

/* Open FILENAME with FORMAT ("raw", "qcow2" or NULL to probe). */
VIMG_API vimg_node *vimg_open(const char *filename, const char *format,
                              unsigned flags);
/* Open from dotted options: "driver=qcow2,file.filename=x.qcow2". */
VIMG_API vimg_node *vimg_open_opts(const char *optstr, unsigned flags);
/* Open from a JSON option tree (blockdev-add shape). */
VIMG_API vimg_node *vimg_open_json(const char *json, unsigned flags);
/* Flush, close and free the node and its children.  -1 if the final
 * flush failed (the node is freed either way). */
VIMG_API int vimg_close(vimg_node *node);

/* Virtual size in bytes, or -1. */
VIMG_API int64_t vimg_get_size(vimg_node *node);
/* The node's format driver name ("qcow2", "raw", "file"). */
VIMG_API const char *vimg_get_format(vimg_node *node);
/* The node's filename (the file under a format); owned by the node. */
VIMG_API const char *vimg_get_filename(vimg_node *node);
/* The backing node, or NULL; owned by NODE. */
VIMG_API vimg_node *vimg_get_backing(vimg_node *node);

VIMG_API int vimg_pread(vimg_node *node, void *buf, size_t count,
                        uint64_t offset, unsigned flags);
VIMG_API int vimg_pwrite(vimg_node *node, const void *buf, size_t count,
                         uint64_t offset, unsigned flags);
VIMG_API int vimg_pwrite_zeroes(vimg_node *node, uint64_t offset,
                                uint64_t count, unsigned flags);
VIMG_API int vimg_discard(vimg_node *node, uint64_t offset, uint64_t count,
                          unsigned flags);
VIMG_API int vimg_flush(vimg_node *node);
/* Describe the chain's content at OFFSET: fills EXT for one extent of
 * at most COUNT bytes (and at least 1). */
VIMG_API int vimg_block_status(vimg_node *node, uint64_t offset,
                               uint64_t count, struct vimg_extent *ext);
VIMG_API int vimg_truncate(vimg_node *node, uint64_t size);

/* Create an image.  OPTIONS is qemu-img's -o syntax plus "size=";
 * BACKING/BACKING_FMT may be NULL.  FLAGS: VIMG_CREATE_*. */
#define VIMG_CREATE_UNSAFE 0x1u /* -u: do not open the backing file */
VIMG_API int vimg_create(const char *format, const char *filename,
                         const char *options, unsigned flags);

/* qemu-img's ImageInfo JSON for this node alone; caller frees. */
VIMG_API char *vimg_info_json(vimg_node *node);

/* Parse a size with k/M/G/T/P/E suffixes (default unit: bytes). */
VIMG_API int vimg_parse_size(const char *str, uint64_t *size);

/* The last error of this thread. */
VIMG_API const char *vimg_get_error(void);
VIMG_API int vimg_get_errno(void);

#ifdef __cplusplus
}
#endif

#endif /* VIMG_H */
