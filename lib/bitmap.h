/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * In-memory dirty bitmap: one bit per granule of an image, with a summary
 * level for fast next-dirty/next-clean search, merge, and serialisation in
 * qcow2's on-disk order.  Offsets and lengths are bytes of the image unless
 * a parameter says "serialised bytes".
 *
 * Thread safety: none inside.  Callers serialise every call on one bitmap
 * (the owning node's lock); const calls may run concurrently with each
 * other but not with a mutating call.
 */
#ifndef VIMG_BITMAP_H
#define VIMG_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bitmap;

#define BITMAP_MIN_GRANULARITY 512u
#define BITMAP_MAX_GRANULARITY (UINT32_C(1) << 31)

/* New all-clean bitmap over SIZE bytes (<= INT64_MAX), GRANULARITY bytes per
 * bit (power of two, 512 .. 2 GiB); caller frees with bitmap_free; NULL +
 * vimg_error (EINVAL, ENOMEM) on failure. */
struct bitmap *bitmap_new(uint64_t size, uint32_t granularity);
/* Free BM and everything it owns; NULL is a no-op. */
void bitmap_free(struct bitmap *bm);
/* Independent copy of BM; caller frees with bitmap_free; NULL + vimg_error
 * (ENOMEM). */
struct bitmap *bitmap_copy(const struct bitmap *bm);

/* Change the image size BM covers to SIZE: granules that stay keep their
 * bits, granules only the new size covers start clean.  -1 + vimg_error
 * (EINVAL, ENOMEM) on failure, BM unchanged. */
int bitmap_resize(struct bitmap *bm, uint64_t size);
/* Image size in bytes covered by BM. */
uint64_t bitmap_size(const struct bitmap *bm);
/* Bytes per bit of BM. */
uint32_t bitmap_granularity(const struct bitmap *bm);

/* Mark dirty every granule touching bytes [OFFSET, OFFSET+LEN), clipped to
 * the image size (rounded outward to the granularity). */
void bitmap_set(struct bitmap *bm, uint64_t offset, uint64_t len);
/* Mark clean every granule touching bytes [OFFSET, OFFSET+LEN), clipped to
 * the image size (rounded outward to the granularity). */
void bitmap_reset(struct bitmap *bm, uint64_t offset, uint64_t len);
/* True if the granule holding byte OFFSET is dirty (false beyond size). */
bool bitmap_get(const struct bitmap *bm, uint64_t offset);
/* Dirty bytes: dirty granules x granularity, the last granule clipped to
 * the size.  O(1). */
uint64_t bitmap_count(const struct bitmap *bm);

/* Byte offset of the first dirty byte in [OFFSET, END) (END clipped to the
 * size): MAX(OFFSET, start of the first dirty granule), or -1 if none. */
int64_t bitmap_next_dirty(const struct bitmap *bm, uint64_t offset,
                          uint64_t end);
/* Byte offset of the first clean byte in [OFFSET, END) (END clipped to the
 * size): MAX(OFFSET, start of the first clean granule), or -1 if none. */
int64_t bitmap_next_clean(const struct bitmap *bm, uint64_t offset,
                          uint64_t end);
/* Find the first dirty extent in the window [*OFFSET, *OFFSET + *LEN)
 * (clipped to the size).  If found, set *OFFSET to its first byte, *LEN to
 * its length clipped to the window and to MAX_LEN (0 = no limit), and return
 * true; otherwise return false and leave both untouched. */
bool bitmap_next_dirty_area(const struct bitmap *bm, uint64_t *offset,
                            uint64_t *len, uint64_t max_len);

/* DST |= SRC.  Both must have the same size and granularity: otherwise -1 +
 * vimg_error(EINVAL) and DST is unchanged.  Returns 0 on success. */
int bitmap_merge(struct bitmap *dst, const struct bitmap *src);
/* Mark every granule clean. */
void bitmap_clear(struct bitmap *bm);
/* Mark every granule dirty. */
void bitmap_fill(struct bitmap *bm);

/* Serialised form (qcow2 bitmap data): bit n covers image bytes
 * [n*gran, (n+1)*gran), LSB first within each byte, bits past the last
 * granule zero.  Length in bytes: ceil(granules / 8). */
size_t bitmap_serial_size(const struct bitmap *bm);
/* Write serialised bytes [FIRST_BYTE, FIRST_BYTE+LEN) into caller-owned BUF
 * (LEN bytes); bytes past bitmap_serial_size are written as zero. */
void bitmap_serialise(const struct bitmap *bm, uint8_t *buf,
                      uint64_t first_byte, size_t len);
/* Replace serialised bytes [FIRST_BYTE, FIRST_BYTE+LEN) from BUF (LEN
 * bytes, caller-owned).  Any set bit past the last granule (including bytes
 * past bitmap_serial_size) is -1 + vimg_error(EINVAL), BM unchanged. */
int bitmap_deserialise(struct bitmap *bm, const uint8_t *buf,
                       uint64_t first_byte, size_t len);
/* True if every granule bit in serialised bytes [FIRST_BYTE,
 * FIRST_BYTE+LEN) is clean (bits past the last granule are ignored). */
bool bitmap_range_is_zero(const struct bitmap *bm, uint64_t first_byte,
                          size_t len);
/* True if every granule bit in serialised bytes [FIRST_BYTE,
 * FIRST_BYTE+LEN) is dirty (bits past the last granule are ignored). */
bool bitmap_range_is_one(const struct bitmap *bm, uint64_t first_byte,
                         size_t len);

#endif
