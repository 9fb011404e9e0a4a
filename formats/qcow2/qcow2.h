/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 format driver: internal header.
 *
 * On-disk structures are packed big-endian structs; they are converted to
 * host order only where bytes enter or leave (header.c, the table
 * accessors in l2.c and refcount.c).
 *
 * Locking: struct qcow2_state.lock protects every field of the state
 * after open (L1, the L2 and refcount caches, the refcount table, the
 * free-cluster hint and the pending-free list).  Functions that expect it
 * held end in _locked.  Data I/O runs outside it: to clusters already
 * allocated, and for runs of whole new clusters (write-run.c: allocate
 * under the lock, write unlocked, install the L2 entries under it).
 *
 * Durability (DESIGN.md): the caches are write-back.  A dirty L2 table is
 * written only after the refcount blocks (and the data written so far)
 * are flushed; the L1 table only after the L2 tables; refcount decreases
 * are queued (pending_free) and applied only after the L2/L1 tables that
 * dropped the references are durable.
 */
#ifndef VIMG_QCOW2_H
#define VIMG_QCOW2_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "node.h"
#include "vector.h"

#define QCOW2_MAGIC 0x514649fbu
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_L1_BYTES (32u * 1024 * 1024)
#define QCOW2_MAX_RT_BYTES (8u * 1024 * 1024)
#define QCOW2_MAX_SNAPSHOTS 65536
#define QCOW2_MAX_SNAPSHOT_TABLE (64u * 1024 * 1024)
#define QCOW2_MAX_BACKING_NAME 1023
#define QCOW2_V2_HEADER_LEN 72
#define QCOW2_V3_HEADER_LEN 112

/* Feature bits. */
#define QCOW2_INCOMPAT_DIRTY (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2 (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN 0x1full
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
#define QCOW2_AUTOCLEAR_BITMAPS (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)
#define QCOW2_AUTOCLEAR_KNOWN 0x3ull

/* Header extension types. */
#define QCOW2_EXT_END 0x00000000u
#define QCOW2_EXT_BACKING_FMT 0xe2792acau
#define QCOW2_EXT_FEATURES 0x6803f857u
#define QCOW2_EXT_BITMAPS 0x23852875u
#define QCOW2_EXT_CRYPTO 0x0537be77u
#define QCOW2_EXT_DATA_FILE 0x44415441u

/* Table entry bits. */
#define QCOW2_OFLAG_COPIED (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO 1ull
/* All subclusters of an extended L2 bitmap half. */
#define QCOW2_SC_ALL 0xffffffffull
#define QCOW2_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_L1_RESERVED 0x7f000000000001ffull
#define QCOW2_RT_OFFSET_MASK 0xfffffffffffffe00ull

/* Byte offsets of header fields rewritten in place. */
#define QCOW2_HDR_L1_SIZE 36
#define QCOW2_HDR_L1_OFFSET 40
#define QCOW2_HDR_RT_OFFSET 48
#define QCOW2_HDR_INCOMPAT 72
#define QCOW2_HDR_AUTOCLEAR 88

struct qcow2_header {
    uint32_t magic;
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    /* v3 */
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;
    uint8_t padding[7];
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_header) == 112, "qcow2 header size");

struct qcow2_ext_hdr {
    uint32_t type;
    uint32_t len;
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_ext_hdr) == 8, "extension header size");

struct qcow2_feature_name {
    uint8_t type;
    uint8_t bit;
    char name[46];
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_feature_name) == 48, "feature name");

struct qcow2_bitmaps_ext {
    uint32_t nb_bitmaps;
    uint32_t reserved;
    uint64_t directory_size;
    uint64_t directory_offset;
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_bitmaps_ext) == 24, "bitmaps ext");

struct qcow2_snapshot_hdr {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    uint16_t id_str_size;
    uint16_t name_size;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint32_t vm_state_size;
    uint32_t extra_data_size;
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_snapshot_hdr) == 40, "snapshot header");

struct qcow2_bitmap_dir_entry {
    uint64_t bitmap_table_offset;
    uint32_t bitmap_table_size;
    uint32_t flags;
    uint8_t type;
    uint8_t granularity_bits;
    uint16_t name_size;
    uint32_t extra_data_size;
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_bitmap_dir_entry) == 24, "bitmap dir");

/* A header extension kept verbatim (unknown ones, and known ones we do
 * not interpret).  DATA is malloc'd. */
struct qcow2_ext {
    uint32_t type;
    uint32_t len;
    uint8_t *data;
};
DEFINE_VECTOR(struct qcow2_ext, qcow2_ext_vector)

struct qcow2_snapshot {
    uint64_t l1_offset;
    uint32_t l1_size;
    char *id;
    char *name;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size; /* UINT64_MAX if not recorded */
    uint64_t icount;    /* UINT64_MAX if not recorded */
    bool has_icount;
};

/* Bitmap directory entry flags. */
#define QCOW2_BME_IN_USE 0x1u
#define QCOW2_BME_AUTO 0x2u
/* Limits QEMU applies to the bitmaps extension. */
#define QCOW2_MAX_BITMAPS 65535
#define QCOW2_MAX_BITMAP_DIR_SIZE (64u * 1024 * 1024)
#define QCOW2_MAX_BITMAP_NAME 1023

struct qcow2_bitmap_info {
    char *name;
    uint32_t granularity;
    uint32_t flags;
    uint64_t table_offset;
    uint32_t table_size;
    uint8_t type;
    uint32_t extra_size;
    uint8_t *extra; /* extra_size bytes, malloc'd, kept verbatim */
    /* The content, while the bitmaps are live (s->bitmaps_live) and this
     * one is consistent; tracked by the node while enabled (auto).
     * Protected by the node's dirty_lock; owned here. */
    struct bitmap *live;
};

/* One cached metadata cluster (L2 table or refcount block), raw bytes. */
struct qcow2_cache_entry {
    uint64_t offset; /* host offset, 0 = slot empty */
    uint8_t *buf;    /* cluster_size bytes, on-disk byte order */
    uint64_t lru;
    bool dirty;
};

struct qcow2_cache {
    struct qcow2_cache_entry *e;
    size_t n;
    uint64_t tick;
    size_t last; /* index of the last hit */
};

DEFINE_VECTOR(uint64_t, u64_vector)

struct qcow2_state {
    pthread_mutex_t lock;
    struct node *node;

    /* Header as read (header_length bytes, on-disk order); unknown fields
     * past 112 are preserved from here. */
    uint8_t *hdr_raw;
    uint32_t header_length;
    uint32_t version;
    uint32_t cluster_bits;
    uint64_t cluster_size;
    uint64_t incompat, compat, autoclear;
    uint32_t refcount_order;
    uint32_t refcount_bits;
    uint64_t refcount_max;
    uint8_t compression_type;
    uint32_t crypt_method;

    bool extl2;
    uint32_t l2_entries;    /* entries per L2 table */
    uint32_t l2_entry_size; /* 8 or 16 */
    uint64_t subcluster_size;
    uint64_t rb_entries; /* entries per refcount block */

    uint64_t l1_offset;
    uint32_t l1_size;
    uint64_t *l1; /* host order */
    bool l1_dirty;

    uint64_t rt_offset;
    uint32_t rt_clusters;
    uint64_t rt_entries;
    uint64_t *rt; /* host order */
    bool rt_dirty;

    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t snapshots_size; /* bytes */
    struct qcow2_snapshot *snapshots;

    struct qcow2_ext_vector exts; /* all extensions in file order */
    char *data_file_name;
    bool has_bitmaps_ext;
    struct qcow2_bitmaps_ext bitmaps_ext; /* host order */
    struct qcow2_bitmap_info *bitmaps;
    uint32_t nb_bitmaps;
    uint64_t backing_offset;
    uint32_t backing_size;

    struct node *data; /* node holding guest data (file or data_file) */
    /* qemu's metadata-preallocation detection, made once per open. */
    bool metadata_prealloc, metadata_prealloc_checked;
    bool raw_data;     /* data_file_raw */

    struct qcow2_cache l2_cache;
    struct qcow2_cache rb_cache;
    bool need_sync; /* data or refcounts written since the last sync */
    uint64_t free_hint; /* no free cluster below this index */
    uint64_t comp_tail; /* next free byte of the cluster compressed data
                         * is packed into; 0 = none (compress.c) */
    struct u64_vector pending_free; /* (offset | nclusters<<?) see alloc.c */
    bool autoclear_done; /* unknown/bitmap autoclear bits cleared */
    /* Writes have begun: every bitmap is in_use on disk, and the content
     * of the consistent ones is in bitmaps[i].live (bitmaps.c). */
    bool bitmaps_live;
    bool readonly;
    /* A flush of the file failed: writes and flushes fail from now on
     * (the kernel may have dropped the data; never retry). */
    bool flush_failed;
};

/* Host order entry of an L2 table: the descriptor, and the subcluster
 * bitmap (0 without extended L2). */
struct qcow2_l2e {
    uint64_t entry;
    uint64_t bitmap;
};

/* Classification of one (sub)cluster. */
enum qcow2_kind {
    Q_UNALLOC,    /* go to backing */
    Q_ZERO,       /* reads as zero, no host cluster */
    Q_ZERO_ALLOC, /* reads as zero, host cluster preallocated */
    Q_NORMAL,     /* data at host offset */
    Q_COMPRESSED,
};

/* header.c */
/* Read, validate and parse the header and its extensions into S. */
int qcow2_header_read(struct node *n, struct qcow2_state *s);
/* Rewrite the whole header cluster from S, keeping unknown fields and
 * extensions; BACKING/BACKING_FMT are the names to record (may be NULL). */
int qcow2_header_write_locked(struct qcow2_state *s, const char *backing,
                              const char *backing_fmt);
/* Write the 8-byte feature field at OFF (QCOW2_HDR_INCOMPAT...), sync. */
int qcow2_header_update_u64_locked(struct qcow2_state *s, uint64_t off,
                                   uint64_t val);
/* Free everything header_read allocated. */
void qcow2_header_free(struct qcow2_state *s);
/* Build the extension list a fresh image carries (feature table). */
int qcow2_features_ext(struct qcow2_ext *ext);

/* l2.c */
/* Get the cluster at OFFSET through cache C; FRESH: zeroed and dirty.
 * The pointer is valid until the next call on C. */
uint8_t *qcow2_cache_get_locked(struct qcow2_state *s, struct qcow2_cache *c,
                                uint64_t offset, bool fresh);
/* Mark the cached cluster at OFFSET dirty (it must be cached). */
void qcow2_cache_mark_dirty(struct qcow2_cache *c, uint64_t offset);
/* Write back every dirty entry of C (no sync). */
int qcow2_cache_writeback_locked(struct qcow2_state *s,
                                 struct qcow2_cache *c);
bool qcow2_cache_is_dirty(const struct qcow2_cache *c);
/* Empty C without writing (after the clusters moved). */
void qcow2_cache_drop(struct qcow2_cache *c);
int qcow2_cache_init(struct qcow2_state *s, struct qcow2_cache *c,
                     size_t n);
void qcow2_cache_free(struct qcow2_cache *c);
/* Get the cached L2 table at OFFSET (reading it); pointer valid until
 * the next cache operation. */
uint8_t *qcow2_l2_get_locked(struct qcow2_state *s, uint64_t offset);
/* Get a zeroed fresh L2 table at OFFSET, marked dirty. */
uint8_t *qcow2_l2_new_locked(struct qcow2_state *s, uint64_t offset);
void qcow2_l2_mark_dirty_locked(struct qcow2_state *s, uint64_t offset);
void qcow2_l2_read_entry(const struct qcow2_state *s, const uint8_t *tbl,
                         uint32_t idx, struct qcow2_l2e *e);
void qcow2_l2_write_entry(const struct qcow2_state *s, uint8_t *tbl,
                          uint32_t idx, const struct qcow2_l2e *e);
/* Entry for guest offset VOFF (zeroed entry if no L2 table). */
int qcow2_lookup_locked(struct qcow2_state *s, uint64_t voff,
                        struct qcow2_l2e *e);
/* Classify subcluster SC (0..31, or 0 without extended L2) of E. */
enum qcow2_kind qcow2_classify(const struct qcow2_state *s,
                               const struct qcow2_l2e *e, unsigned sc);
/* Write back dirty L2 tables (after refcounts) then L1; sync. */
int qcow2_flush_l2_locked(struct qcow2_state *s);
/* Write the whole L1 table now. */
int qcow2_write_l1_locked(struct qcow2_state *s);
/* Drop clean L2 cache entries for OFFSET (after freeing a table). */
void qcow2_l2_forget_locked(struct qcow2_state *s, uint64_t offset);
/* Compressed descriptor: host byte offset and byte length bound. */
void qcow2_compressed_range(const struct qcow2_state *s, uint64_t entry,
                            uint64_t *off, uint64_t *len);

/* refcount.c */
uint64_t qcow2_rb_get(const struct qcow2_state *s, const uint8_t *rb,
                      uint64_t idx);
void qcow2_rb_set(const struct qcow2_state *s, uint8_t *rb, uint64_t idx,
                  uint64_t val);
int qcow2_refcount_get_locked(struct qcow2_state *s, uint64_t cluster,
                              uint64_t *rc);
/* Add DELTA (may be negative) to the refcount of CLUSTER. */
int qcow2_refcount_update_locked(struct qcow2_state *s, uint64_t cluster,
                                 int64_t delta);
/* Write dirty refcount blocks and the table, and sync the files. */
int qcow2_flush_refcounts_locked(struct qcow2_state *s);
/* Find and reference N contiguous free clusters; host offset. */
int64_t qcow2_alloc_clusters_locked(struct qcow2_state *s, uint64_t n);
/* check*.c, repair.c: the check callback (qemu-img check), and the
 * dirty-bit repair on a read-write open (a check with every fix). */
int qcow2_check(struct node *n, struct check_result *r, unsigned fix);
int qcow2_rebuild_refcounts_locked(struct qcow2_state *s);
/* Helpers shared with check.c. */
int qcow2_write_new_structure_locked(struct qcow2_state *s, uint64_t start,
                                     uint64_t nb, uint64_t nt,
                                     uint64_t first_rt, uint64_t *tbl,
                                     uint64_t entries,
                                     const uint32_t *counts,
                                     uint64_t ncounts);
/* Size a new refcount structure at cluster START whose blocks cover rt
 * indices FIRST_RT..: *NB blocks, *NT table clusters, *ENTRIES. */
int qcow2_size_new_structure(struct qcow2_state *s, uint64_t start,
                             uint64_t first_rt, uint64_t min_entries,
                             uint64_t *nb, uint64_t *nt, uint64_t *entries);
int qcow2_switch_rt_locked(struct qcow2_state *s, uint64_t off,
                           uint32_t clusters);

/* alloc.c */
int qcow2_pwrite(struct node *n, const void *buf, uint64_t count,
                 uint64_t off, unsigned flags);
int qcow2_pwrite_zeroes(struct node *n, uint64_t off, uint64_t count,
                        unsigned flags);
int qcow2_discard(struct node *n, uint64_t off, uint64_t count);
/* Queue freeing ENTRY's host clusters after the next metadata flush. */
int qcow2_free_entry_locked(struct qcow2_state *s, uint64_t entry);
int qcow2_free_clusters_later_locked(struct qcow2_state *s, uint64_t off,
                                     uint64_t n);
/* Flush all metadata in dependency order and apply pending frees. */
int qcow2_flush_all_locked(struct qcow2_state *s);
/* Point guest cluster CL at the compressed descriptor ENTRY (data already
 * written) and queue freeing of what it held. */
int qcow2_set_compressed_locked(struct qcow2_state *s, uint64_t cl,
                                uint64_t entry);
/* Whether ENTRY has a host cluster (external data: offset may be 0). */
bool qcow2_entry_has_host(const struct qcow2_state *s, uint64_t entry);
/* Set the L2 entry of guest cluster VOFF (L2 table made writable). */
int qcow2_set_entry_locked(struct qcow2_state *s, uint64_t voff,
                           const struct qcow2_l2e *e);
/* Flush metadata when the pending-free queue is long. */
int qcow2_maybe_flush_locked(struct qcow2_state *s);
/* write-run.c: write COUNT bytes (whole clusters) at cluster-aligned OFF;
 * takes s->lock itself. */
int qcow2_write_whole(struct qcow2_state *s, const uint8_t *buf, uint64_t off,
                      uint64_t count);
/* Get the L2 table for VOFF writable (allocating or copying it). */
uint8_t *qcow2_l2_for_write_locked(struct qcow2_state *s, uint64_t voff,
                                   uint64_t *l2_off);
/* Preallocate guest range [start, size) (metadata/falloc/full). */
int qcow2_preallocate(struct node *n, uint64_t start, uint64_t size,
                      enum prealloc mode);
/* measure.c: the measure driver callback. */
int qcow2_measure(json_t *opts, struct node *src, uint64_t *required,
                  uint64_t *fully_allocated);

/* backing.c: the change_backing and make_empty driver callbacks. */
int qcow2_change_backing(struct node *n, const char *name, const char *fmt);
int qcow2_make_empty(struct node *n);

/* Before the first write: clear unknown autoclear bits and mark the
 * bitmaps in use. */
int qcow2_before_write_locked(struct qcow2_state *s);

/* compress.c */
/* Decompress SRC into exactly cluster_size bytes of DST. */
int qcow2_decompress(const struct qcow2_state *s, uint8_t *dst,
                     const uint8_t *src, size_t srclen);
/* Compress one cluster; returns the compressed length, 0 if it does not
 * shrink, -1 on error. */
ssize_t qcow2_compress(const struct qcow2_state *s, uint8_t *dst,
                       size_t dstlen, const uint8_t *src);
/* Read and decompress the compressed cluster ENTRY into DST. */
int qcow2_read_compressed(struct qcow2_state *s, uint64_t entry,
                          uint8_t *dst);
/* Write whole clusters [off, off+count) compressed (REQ_COMPRESSED; the
 * last may end at the image's end); clusters that do not shrink are
 * written normally.  Called without s->lock. */
int qcow2_pwrite_compressed(struct node *n, const uint8_t *buf,
                            uint64_t count, uint64_t off);

/* snapshot.c */
int qcow2_snapshots_read(struct node *n, struct qcow2_state *s);
void qcow2_snapshots_free(struct qcow2_state *s);

/* bitmaps.c (reading) and bitmap-ops.c (bitmap_op) */
/* Parse the bitmap directory into s->bitmaps (at open). */
int qcow2_bitmaps_read(struct node *n, struct qcow2_state *s);
/* Free s->bitmaps. */
void qcow2_bitmaps_free(struct qcow2_state *s);
/* The bitmap_op driver callback: apply the action list A in order, all
 * or nothing, rewriting the bitmap directory once. */
int qcow2_bitmap_op(struct node *n, const struct bitmap_action *a);
struct bitmap;
/* The bitmap_get driver callback: a copy of bitmap NAME's content;
 * caller frees with bitmap_free. */
struct bitmap *qcow2_bitmap_get(struct node *n, const char *name);
/* The bitmap_live callback (see lib/node.h). */
int qcow2_bitmap_live(struct node *n, const char *name,
                      int (*fn)(struct bitmap *bm, void *opaque),
                      void *opaque);
/* Free the strings of B (not B itself). */
void qcow2_bitmap_info_free(struct qcow2_bitmap_info *b);
/* Read B's bitmap table, host order; caller frees. */
uint64_t *qcow2_bitmap_read_table(struct qcow2_state *s,
                                  const struct qcow2_bitmap_info *b);
/* A copy of B's content: its live copy if it has one, else loaded from
 * disk; caller frees with bitmap_free. */
struct bitmap *qcow2_bitmap_live_copy(struct qcow2_state *s,
                                      const struct qcow2_bitmap_info *b);
/* Load the content of on-disk bitmap B; caller frees with bitmap_free. */
struct bitmap *qcow2_bitmap_load(struct qcow2_state *s,
                                 const struct qcow2_bitmap_info *b);
/* Before the first write: load every consistent bitmap into its live
 * copy, track the enabled ones, and set in_use on every bitmap on disk
 * (durably).  A bitmap whose content cannot be loaded becomes
 * inconsistent. */
int qcow2_bitmaps_go_live_locked(struct qcow2_state *s);
/* Drop (untrack and free) every live copy.  Caller holds the node's
 * dirty_lock. */
void qcow2_bitmaps_drop_live_dirty_locked(struct qcow2_state *s);
/* Free the directory entries (names, extras), not the live copies. */
void qcow2_bitmaps_free_entries(struct qcow2_state *s);
/* At a clean close: write the live bitmaps back and clear in_use, with
 * one header switch.  On failure they stay in_use (inconsistent). */
int qcow2_bitmaps_store_locked(struct qcow2_state *s);
/* After a resize to SIZE: resize the live copies (new area clean). */
int qcow2_bitmaps_resize_locked(struct qcow2_state *s, uint64_t size);
/* Refuse (-1 + vimg_error) if a bitmap is inconsistent, with QEMU's
 * message; used before a resize. */
int qcow2_bitmaps_check_consistent_locked(struct qcow2_state *s);
/* create.c / info.c */
int qcow2_create(const char *filename, json_t *opts);
int qcow2_info(struct node *n, json_t *info);

#endif
