/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The node graph and the driver contract.
 *
 * A node is one open layer: a protocol node (bytes in a file), a format
 * node (raw, qcow2) over a "file" child, and optionally a "backing" and a
 * "data-file" child.  Nodes are reference counted; children are owned by
 * their parent through one reference each.
 *
 * Driver contract (see also lib/io.h):
 *  - Callbacks work on the node's own layer only.  Chain walking, copy-on-
 *    write of partial allocation units, alignment, serialisation of
 *    overlapping writes and bitmap dirtying live in lib/io.c.
 *  - A NULL callback means "not supported": the core answers ENOTSUP.
 *  - Callbacks return 0 / -1 and call vimg_error() once on failure.
 *  - Callbacks may be called from several threads at once.  lib/io.c
 *    guarantees that no two write-type requests (pwrite, pwrite_zeroes,
 *    discard, truncate) touching the same n->serialise_align unit run
 *    at the same time, and that truncate runs alone.  Reads may run
 *    concurrently with anything.  Drivers protect their metadata with
 *    their own lock.
 */
#ifndef VIMG_NODE_H
#define VIMG_NODE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "vector.h"
#include "vimg.h"

struct node;

enum driver_kind { DRV_PROTOCOL, DRV_FORMAT, DRV_FILTER };

/* Layer-local extent flags returned by driver block_status. */
#define EXT_ALLOCATED 0x1u /* this layer decides the content; else go to
                            * backing (or zeroes without backing) */
#define EXT_DATA 0x2u      /* data is stored (may read as zero) */
#define EXT_ZERO 0x4u      /* reads as zero */
#define EXT_OFFSET 0x8u    /* ext->offset is a valid host offset */
#define EXT_COMPRESSED 0x10u
#define EXT_WRITABLE 0x20u /* a partial write into any cow_align unit of
                            * this extent may be done in place (allocated,
                            * not compressed, not shared, not zero) */

struct extent {
    uint64_t length; /* >= 1, <= the length asked */
    uint32_t flags;  /* EXT_* */
    uint64_t offset; /* host offset in ext_file when EXT_OFFSET */
    struct node *file; /* node that holds offset (n->file, data_file...) */
};

/* Request flags (same values as VIMG_REQ_*). */
#define REQ_FUA VIMG_REQ_FUA
#define REQ_MAY_UNMAP VIMG_REQ_MAY_UNMAP
#define REQ_FAST VIMG_REQ_FAST
/* pwrite: store compressed.  io.c passes it only for requests that
 * cover whole clusters (n->serialise_align units; the last may end at
 * n->size); drivers without compression fail with ENOTSUP. */
#define REQ_COMPRESSED VIMG_REQ_COMPRESSED

/* Result of a consistency check (qemu-img check's counters).  Drivers
 * report each finding through REPORT (one line, no newline), never by
 * printing. */
struct check_result {
    uint64_t corruptions, leaks, check_errors;
    uint64_t corruptions_fixed, leaks_fixed;
    uint64_t image_end_offset;
    uint64_t allocated_clusters, total_clusters;
    uint64_t fragmented_clusters, compressed_clusters;
    bool has_cluster_stats; /* the *_clusters fields are meaningful */
    void (*report)(void *opaque, const char *msg);
    void *opaque;
};
#define CHECK_FIX_LEAKS 0x1u
#define CHECK_FIX_ERRORS 0x2u

/* Preallocation modes for create and truncate. */
enum prealloc { PREALLOC_OFF, PREALLOC_METADATA, PREALLOC_FALLOC,
                PREALLOC_FULL };

/* Persistent dirty bitmap operations (qemu-img bitmap, QMP
 * block-dirty-bitmap-*). */
struct bitmap; /* bitmap.h */
enum bitmap_op_kind { BITMAP_OP_ADD, BITMAP_OP_REMOVE, BITMAP_OP_CLEAR,
                      BITMAP_OP_ENABLE, BITMAP_OP_DISABLE, BITMAP_OP_MERGE };

/* One action on bitmap NAME of a node.  Borrowed by the callee. */
struct bitmap_action {
    enum bitmap_op_kind op;
    const char *name;
    uint32_t granularity; /* ADD: bytes per bit; 0 = the format default */
    bool disabled;        /* ADD: create without recording (no auto) */
    struct node *src;     /* MERGE: node holding the source; NULL = same */
    const char *src_name; /* MERGE: source bitmap, OR-ed into NAME */
    /* Next action, or NULL.  The whole list applies in order, all or
     * nothing: on failure the image is left unchanged. */
    const struct bitmap_action *next;
};

struct driver {
    const char *name;
    enum driver_kind kind;
    size_t state_size; /* bytes of zeroed n->state allocated before open */

    /* Format probing: score 0 (no) to 100 for the first 512+ bytes. */
    int (*probe)(const uint8_t *buf, size_t len);

    /* Open N.  n->flags, n->file (for formats: already opened from the
     * "file" option) are set.  OPTS is the node's option object (never
     * NULL).  Must set n->size; formats with backing set
     * n->backing_name (as recorded, malloc'd) and n->backing_fmt
     * (malloc'd or NULL); formats set n->cow_align and
     * n->serialise_align (bytes, powers of two, 1 = none).  A driver
     * that needs a data-file child opens it with node_open_child() and
     * stores it in n->data_file.  On failure, open frees what it put in
     * n->state (the core frees n->state itself and drops children). */
    int (*open)(struct node *n, json_t *opts);
    /* Flush and release everything in n->state (not the children).
     * Returns -1 if the final flush failed. */
    int (*close)(struct node *n);

    /* Read bytes of this layer.  io.c only calls it for ranges that
     * block_status reported EXT_ALLOCATED and not EXT_ZERO; anything
     * else must read as zeroes. */
    int (*pread)(struct node *n, void *buf, uint64_t count, uint64_t off);
    /* Write.  Where the cow_align unit under the request's head or tail
     * was not EXT_WRITABLE, io.c has already widened the request to
     * whole cow_align units (filled from the chain; the image's last
     * unit ends at n->size and may be short), so the driver
     * never needs data from the backing file.  The driver must keep the
     * content of the rest of the same cluster (snapshot-shared or
     * compressed clusters included). */
    int (*pwrite)(struct node *n, const void *buf, uint64_t count,
                  uint64_t off, unsigned flags);
    /* Make [off, off+count) read as zeroes in this layer, whatever the
     * backing file holds.  Aligned to cow_align (io.c writes zero
     * buffers for partial units).  REQ_FAST: fail with ENOTSUP unless
     * cheap.  ENOTSUP makes io.c fall back to pwrite of zero buffers. */
    int (*pwrite_zeroes)(struct node *n, uint64_t off, uint64_t count,
                         unsigned flags);
    /* Discard: content becomes unspecified (qcow2: unallocated, or zero
     * when a backing file would show through on v3).  Aligned to
     * cow_align (io.c drops partial units). */
    int (*discard)(struct node *n, uint64_t off, uint64_t count);
    /* Get ready for a change that io.c records without calling the
     * driver (a discard of partial units only): qcow2 makes its bitmaps
     * live so that the change is tracked.  NULL: nothing to do. */
    int (*prepare_write)(struct node *n);
    /* Make all completed writes durable (data and metadata). */
    int (*flush)(struct node *n);
    /* Describe [off, off+count) in this layer only: one extent starting
     * at OFF.  WANT_ZERO asks for precise EXT_ZERO on data (e.g. holes in
     * a raw file); without it a driver may answer quickly and coarsely. */
    int (*block_status)(struct node *n, bool want_zero, uint64_t off,
                        uint64_t count, struct extent *ext);
    /* Change the virtual size; io.c has drained the node. */
    int (*truncate)(struct node *n, uint64_t size, enum prealloc prealloc);
    /* Bytes used on disk (qemu-img's actual-size), or -1. */
    int64_t (*allocated_size)(struct node *n);

    /* Add the format's own fields to qemu-img's ImageInfo object INFO:
     * cluster-size, dirty-flag, snapshots, format-specific. */
    int (*info)(struct node *n, json_t *info);
    /* Record NAME (may be NULL: none) and FMT as the backing file in
     * the image's metadata, after making everything written so far
     * durable; updates n->backing_name/backing_fmt (not n->backing). */
    int (*change_backing)(struct node *n, const char *name,
                          const char *fmt);
    /* Drop everything this layer allocates, so that the whole image
     * reads through to its backing file again (commit). */
    int (*make_empty)(struct node *n);
    /* Check this layer's metadata, repairing what FIX allows; fills R.
     * Returns -1 only when the check itself could not run. */
    int (*check)(struct node *n, struct check_result *r, unsigned fix);
    /* qemu-img measure: bytes a new image with create options OPTS
     * ("size" is set) needs when holding the data of SRC (NULL: empty)
     * and when fully allocated. */
    int (*measure)(json_t *opts, struct node *src, uint64_t *required,
                   uint64_t *fully_allocated);
    /* Create an image at FILENAME.  OPTS holds the resolved create
     * options: "size" (integer), and the -o keys as strings
     * (cluster_size, compat, backing_file, backing_fmt, ...). */
    int (*create)(const char *filename, json_t *opts);
    /* Apply the bitmap action list A (see struct bitmap_action) to the
     * node's persistent bitmaps; the node is open read-write.  The
     * error message names the failing action. */
    int (*bitmap_op)(struct node *n, const struct bitmap_action *a);
    /* A copy of the content of persistent bitmap NAME; caller frees with
     * bitmap_free.  NULL + vimg_error: ENOENT if absent, EINVAL if in use
     * (inconsistent) or of an unknown type. */
    struct bitmap *(*bitmap_get)(struct node *n, const char *name);
    /* Run FN(BM, OPAQUE) on the live content of persistent bitmap NAME
     * (the one writes mark while it records) with n->dirty_lock held,
     * and return its result.  The bitmaps go live first, so N must be
     * open read-write.  -1 + vimg_error: ENOENT if absent, EINVAL if
     * inconsistent, EROFS on a read-only node. */
    int (*bitmap_live)(struct node *n, const char *name,
                       int (*fn)(struct bitmap *bm, void *opaque),
                       void *opaque);
    /* Protocols: hold n->perm and share n->shared (PERM_* of lib/lock.h)
     * from now on, or fail (keeping the old set) when another process's
     * use conflicts.  node.c calls it after open.  NULL: nothing to
     * lock. */
    int (*set_perm)(struct node *n);
    /* Become writable (N was opened read-only): protocols reopen their
     * file for writing and take their locks again; formats allow
     * writes.  node_reopen_rw drained N.  NULL: not supported. */
    int (*reopen_rw)(struct node *n);
};

/* Node flags. */
#define NODE_RDWR VIMG_OPEN_RDWR
#define NODE_FORCE_SHARE VIMG_OPEN_FORCE_SHARE
#define NODE_NO_BACKING VIMG_OPEN_NO_BACKING
#define NODE_NO_FLUSH VIMG_OPEN_NO_FLUSH
#define NODE_CHECK VIMG_OPEN_CHECK
#define NODE_NO_SHARE VIMG_OPEN_NO_SHARE

struct inflight; /* io.c */
DEFINE_VECTOR(struct bitmap *, bitmap_ptr_vector);

struct node {
    const struct driver *drv;
    void *state;        /* driver private, drv->state_size bytes */
    unsigned refcnt;    /* atomic */
    unsigned flags;     /* NODE_* */
    char *node_name;    /* user-given or generated ("#n12") */
    char *filename;     /* protocol: the path; format: file child's */
    uint64_t size;      /* virtual size; changed only by truncate */
    unsigned perm;      /* PERM_* the node's users hold (QEMU's model) */
    unsigned shared;    /* PERM_* they let other users hold */

    struct node *file;      /* "file" child (formats) */
    struct node *backing;   /* "backing" child, or NULL */
    struct node *data_file; /* "data-file" child (qcow2), or NULL */

    char *backing_name;   /* backing file name as recorded, or NULL */
    char *backing_fmt;    /* recorded backing format, or NULL */
    char *backing_full;   /* resolved backing path, or NULL */

    uint32_t cow_align;       /* allocation unit for partial writes */
    uint32_t serialise_align; /* unit for overlapping-write exclusion */
    uint32_t request_align;   /* protocol alignment (O_DIRECT), 1 */

    /* io.c request tracking, protected by io_lock. */
    pthread_mutex_t io_lock;
    pthread_cond_t io_cond;
    struct inflight *inflight; /* list of in-flight write ranges */
    unsigned in_flight;        /* requests in progress */
    bool exclusive;            /* a truncate/drain holds the node */

    /* Bitmaps every write marks (lib/dirty.c), protected by dirty_lock. */
    pthread_mutex_t dirty_lock;
    struct bitmap_ptr_vector dirty;

    /* Hooks run before every write-type request (lib/hook.c): the list
     * is changed under the write side of hooks_lock, run under the read
     * side. */
    pthread_rwlock_t hooks_lock;
    struct write_hook *hooks;

    /* In-memory (non-persistent) bitmaps, by dirty_lock
     * (lib/node-bitmaps.c). */
    struct mem_bitmap *mem_bitmaps;
};

/* The public opaque handle is the internal node. */
static inline struct node *
node_of(vimg_node *h)
{
    return (struct node *)h;
}

static inline vimg_node *
node_handle(struct node *n)
{
    return (vimg_node *)n;
}

extern const struct driver file_proto;
extern const struct driver nbd_proto;
extern const struct driver raw_format;
extern const struct driver qcow2_format;
extern const struct driver inject_filter;

/* The descriptor of a file protocol node opened without O_DIRECT, for
 * zero-copy reads (sendfile); -1 for anything else. */
int file_proto_fd(struct node *n);

/* Look up a driver by name; NULL with vimg_error if unknown. */
const struct driver *driver_find(const char *name);

/* A bare node for DRV with zeroed state, not opened (filters, tests);
 * release with node_unref() (which calls drv->close). */
struct node *node_new(const struct driver *drv, unsigned flags);
/* Open a node from an option tree (borrowed).  FLAGS: NODE_*. */
struct node *node_open(json_t *opts, unsigned flags);
/* Open PARENT's child KEY ("file", "data-file") from OPTS[KEY], which is
 * a filename string or an option object.  Formats call this for
 * data-file; node.c opens "file" and "backing" itself.  The child is
 * stored by the caller.  DEFAULT_NAME is used when OPTS has no KEY (may
 * be NULL: then KEY is required).  The child's permissions (and so its
 * lock bytes) follow from PARENT's role; with PARENT NULL it takes no
 * locks until the caller calls node_set_perm(). */
struct node *node_open_child(struct node *parent, json_t *opts,
                             const char *key, const char *default_name,
                             unsigned flags);
/* Give N (and, through its format's rules, its file and data-file) the
 * permissions PERM / SHARED (PERM_*), as QEMU would; takes the OFD lock
 * bytes.  Fails with QEMU's lock message on a conflict. */
int node_set_perm(struct node *n, unsigned perm, unsigned shared);
/* qemu-img's ImageInfo of N alone (new reference); NULL + vimg_error. */
json_t *node_info_json(struct node *n);
/* Make a read-only node (and its file and data-file) writable, as QEMU
 * reopens the base of a commit; its permissions gain write.  -1 +
 * vimg_error (nothing changed if the file cannot be reopened). */
int node_reopen_rw(struct node *n);
/* Make BACKING (NULL: none) N's backing, recorded in N's metadata as
 * NAME (NULL: BACKING's filename) with BACKING's format: the metadata
 * first, then the graph, with N drained; the old backing loses N's
 * reference.  -1 + vimg_error (nothing changed). */
int node_change_backing(struct node *n, struct node *backing,
                        const char *name);
/* The live node called NAME, with a reference taken; NULL if none. */
struct node *node_find(const char *name);
/* Take / drop a reference (thread-safe).  The last unref closes the
 * node and drops its children; returns -1 if a close failed. */
void node_ref(struct node *n);
int node_unref(struct node *n);

/* Resolve NAME relative to the folder of BASE_FILENAME (URIs such as
 * nbd://..., or names under a URI, are kept as they are); caller frees. */
char *node_path_relative(const char *base_filename, const char *name);

#endif /* VIMG_NODE_H */
