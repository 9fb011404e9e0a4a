/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * In-memory dirty bitmap (see bitmap.h).
 *
 * Level 0 is WORDS: bit n (word n/64, bit n%64) is granule n, i.e. image
 * bytes [n << shift, (n+1) << shift).  Level 1 is two summaries with one
 * bit per word: NONZERO (word has a dirty bit) and NOTFULL (word has a
 * clean bit among its valid bits).  Searches scan the summary word by word,
 * so a mostly clean or mostly dirty bitmap is searched 4096 granules per
 * load.
 *
 * Invariants, kept by store(), the one place a word changes:
 *   - bits at or past NBITS in the last word are zero;
 *   - summary bits at or past NWORDS are zero;
 *   - NONZERO bit w == (words[w] != 0),
 *     NOTFULL bit w == (words[w] != full_mask(w));
 *   - NDIRTY == popcount of all words.
 *
 * Locking: none; the caller serialises (the owning node's lock).
 */
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "checked.h"
#include "error.h"

struct bitmap {
    uint64_t size;        /* image bytes covered */
    uint32_t granularity; /* bytes per bit, power of two */
    unsigned shift;       /* log2(granularity) */
    uint64_t nbits;       /* granules: DIV_ROUND_UP(size, granularity) */
    size_t nwords;        /* level 0 words */
    size_t nsum;          /* level 1 words (each summary) */
    uint64_t ndirty;      /* dirty granules */
    uint64_t *words;
    uint64_t *nonzero;
    uint64_t *notfull;
};

#define NONE UINT64_MAX

/* Valid bits of word W. */
static uint64_t
full_mask(const struct bitmap *bm, size_t w)
{
    unsigned tail = bm->nbits % 64;

    if (w == bm->nwords - 1 && tail)
        return (UINT64_C(1) << tail) - 1;
    return UINT64_MAX;
}

static void
sum_put(uint64_t *sum, size_t w, bool on)
{
    uint64_t bit = UINT64_C(1) << (w % 64);

    if (on)
        sum[w / 64] |= bit;
    else
        sum[w / 64] &= ~bit;
}

/* Set word W to V (valid bits only), keeping summaries and ndirty. */
static void
store(struct bitmap *bm, size_t w, uint64_t v)
{
    uint64_t old = bm->words[w];

    if (old == v)
        return;
    bm->ndirty += __builtin_popcountll(v);
    bm->ndirty -= __builtin_popcountll(old);
    bm->words[w] = v;
    sum_put(bm->nonzero, w, v != 0);
    sum_put(bm->notfull, w, v != full_mask(bm, w));
}

/* Rebuild both summaries and ndirty from the words. */
static void
resummarise(struct bitmap *bm)
{
    memset(bm->nonzero, 0, bm->nsum * sizeof(uint64_t));
    memset(bm->notfull, 0, bm->nsum * sizeof(uint64_t));
    bm->ndirty = 0;
    for (size_t w = 0; w < bm->nwords; w++) {
        uint64_t v = bm->words[w];
        bm->ndirty += __builtin_popcountll(v);
        if (v)
            sum_put(bm->nonzero, w, true);
        if (v != full_mask(bm, w))
            sum_put(bm->notfull, w, true);
    }
}

static uint64_t *
alloc_words(size_t n)
{
    return calloc(n ? n : 1, sizeof(uint64_t));
}

static struct bitmap *
alloc_bitmap(uint64_t size, uint32_t granularity)
{
    struct bitmap *bm = calloc(1, sizeof(*bm));

    if (!bm)
        return NULL;
    bm->size = size;
    bm->granularity = granularity;
    bm->shift = __builtin_ctz(granularity);
    bm->nbits = DIV_ROUND_UP(size, (uint64_t)granularity);
    bm->nwords = DIV_ROUND_UP(bm->nbits, 64);
    bm->nsum = DIV_ROUND_UP(bm->nwords, 64);
    bm->words = alloc_words(bm->nwords);
    bm->nonzero = alloc_words(bm->nsum);
    bm->notfull = alloc_words(bm->nsum);
    if (!bm->words || !bm->nonzero || !bm->notfull) {
        bitmap_free(bm);
        return NULL;
    }
    return bm;
}

struct bitmap *
bitmap_new(uint64_t size, uint32_t granularity)
{
    struct bitmap *bm;

    if (!is_power_of_2(granularity) || granularity < BITMAP_MIN_GRANULARITY ||
        granularity > BITMAP_MAX_GRANULARITY) {
        vimg_error(EINVAL, "bitmap granularity %" PRIu32
                   " is not a power of two between 512 and 2 GiB",
                   granularity);
        return NULL;
    }
    if (size > INT64_MAX ||
        DIV_ROUND_UP(size, (uint64_t)granularity) / 64 >= SIZE_MAX / 8) {
        vimg_error(EINVAL, "bitmap size %" PRIu64 " too large", size);
        return NULL;
    }
    bm = alloc_bitmap(size, granularity);
    if (!bm) {
        vimg_error(ENOMEM, "bitmap: %m");
        return NULL;
    }
    resummarise(bm);
    return bm;
}

void
bitmap_free(struct bitmap *bm)
{
    if (!bm)
        return;
    free(bm->words);
    free(bm->nonzero);
    free(bm->notfull);
    free(bm);
}

struct bitmap *
bitmap_copy(const struct bitmap *bm)
{
    struct bitmap *c = alloc_bitmap(bm->size, bm->granularity);

    if (!c) {
        vimg_error(ENOMEM, "bitmap copy: %m");
        return NULL;
    }
    memcpy(c->words, bm->words, bm->nwords * sizeof(uint64_t));
    memcpy(c->nonzero, bm->nonzero, bm->nsum * sizeof(uint64_t));
    memcpy(c->notfull, bm->notfull, bm->nsum * sizeof(uint64_t));
    c->ndirty = bm->ndirty;
    return c;
}

int
bitmap_resize(struct bitmap *bm, uint64_t size)
{
    struct bitmap *nb;
    size_t keep;

    if (size == bm->size)
        return 0;
    if (size > INT64_MAX ||
        DIV_ROUND_UP(size, (uint64_t)bm->granularity) / 64 >= SIZE_MAX / 8) {
        vimg_error(EINVAL, "bitmap size %" PRIu64 " too large", size);
        return -1;
    }
    nb = alloc_bitmap(size, bm->granularity);
    if (!nb) {
        vimg_error(ENOMEM, "bitmap: %m");
        return -1;
    }
    keep = MIN(nb->nwords, bm->nwords);
    memcpy(nb->words, bm->words, keep * sizeof(uint64_t));
    /* Bits of a kept partial last word past the new end must be zero,
     * and granules that only the new size covers start clean. */
    if (keep) {
        size_t w = keep - 1;
        uint64_t old_valid = full_mask(bm, w), new_valid = full_mask(nb, w);
        nb->words[w] &= old_valid & new_valid;
    }
    resummarise(nb);
    free(bm->words);
    free(bm->nonzero);
    free(bm->notfull);
    *bm = *nb;
    free(nb);
    return 0;
}

uint64_t
bitmap_size(const struct bitmap *bm)
{
    return bm->size;
}

uint32_t
bitmap_granularity(const struct bitmap *bm)
{
    return bm->granularity;
}

/* Set (VAL) or clear granule bits [B, E), B < E <= nbits. */
static void
put_bits(struct bitmap *bm, uint64_t b, uint64_t e, bool val)
{
    for (uint64_t w = b / 64; w <= (e - 1) / 64; w++) {
        uint64_t mask = UINT64_MAX;

        if (w == b / 64)
            mask &= UINT64_MAX << (b % 64);
        if (w == (e - 1) / 64 && e % 64)
            mask &= (UINT64_C(1) << (e % 64)) - 1;
        store(bm, w, val ? bm->words[w] | mask : bm->words[w] & ~mask);
    }
}

static void
put_range(struct bitmap *bm, uint64_t offset, uint64_t len, bool val)
{
    uint64_t end;

    if (len == 0 || offset >= bm->size)
        return;
    if (ADD_OVERFLOW(offset, len, &end) || end > bm->size)
        end = bm->size;
    put_bits(bm, offset >> bm->shift, ((end - 1) >> bm->shift) + 1, val);
}

void
bitmap_set(struct bitmap *bm, uint64_t offset, uint64_t len)
{
    put_range(bm, offset, len, true);
}

void
bitmap_reset(struct bitmap *bm, uint64_t offset, uint64_t len)
{
    put_range(bm, offset, len, false);
}

bool
bitmap_get(const struct bitmap *bm, uint64_t offset)
{
    uint64_t n;

    if (offset >= bm->size)
        return false;
    n = offset >> bm->shift;
    return bm->words[n / 64] >> (n % 64) & 1;
}

uint64_t
bitmap_count(const struct bitmap *bm)
{
    uint64_t bytes = bm->ndirty << bm->shift;
    uint64_t last = bm->nbits - 1;

    if (bm->ndirty && (bm->words[last / 64] >> (last % 64) & 1))
        bytes -= (bm->nbits << bm->shift) - bm->size;
    return bytes;
}

/* Word W as seen by a search for dirty (DIRTY) or clean bits. */
static uint64_t
search_word(const struct bitmap *bm, size_t w, bool dirty)
{
    return dirty ? bm->words[w] : ~bm->words[w] & full_mask(bm, w);
}

/* First word index >= W whose summary bit is set, or NONE. */
static uint64_t
next_word(const struct bitmap *bm, uint64_t w, bool dirty)
{
    const uint64_t *sum = dirty ? bm->nonzero : bm->notfull;
    uint64_t s = w / 64, v;

    if (w >= bm->nwords)
        return NONE;
    v = sum[s] & (UINT64_MAX << (w % 64));
    while (!v) {
        if (++s >= bm->nsum)
            return NONE;
        v = sum[s];
    }
    return s * 64 + __builtin_ctzll(v);
}

/* First granule in [B, E) that is dirty (DIRTY) or clean, or NONE. */
static uint64_t
find_bit(const struct bitmap *bm, uint64_t b, uint64_t e, bool dirty)
{
    uint64_t w = b / 64, v, n;

    if (b >= e)
        return NONE;
    v = search_word(bm, w, dirty) & (UINT64_MAX << (b % 64));
    if (!v) {
        w = next_word(bm, w + 1, dirty);
        if (w == NONE)
            return NONE;
        v = search_word(bm, w, dirty);
    }
    n = w * 64 + __builtin_ctzll(v);
    return n < e ? n : NONE;
}

static int64_t
find_byte(const struct bitmap *bm, uint64_t offset, uint64_t end, bool dirty)
{
    uint64_t n;

    end = MIN(end, bm->size);
    if (offset >= end)
        return -1;
    n = find_bit(bm, offset >> bm->shift, ((end - 1) >> bm->shift) + 1,
                 dirty);
    if (n == NONE)
        return -1;
    return MAX(offset, n << bm->shift);
}

int64_t
bitmap_next_dirty(const struct bitmap *bm, uint64_t offset, uint64_t end)
{
    return find_byte(bm, offset, end, true);
}

int64_t
bitmap_next_clean(const struct bitmap *bm, uint64_t offset, uint64_t end)
{
    return find_byte(bm, offset, end, false);
}

bool
bitmap_next_dirty_area(const struct bitmap *bm, uint64_t *offset,
                       uint64_t *len, uint64_t max_len)
{
    uint64_t end, limit;
    int64_t start, clean;

    if (ADD_OVERFLOW(*offset, *len, &end) || end > bm->size)
        end = bm->size;
    start = bitmap_next_dirty(bm, *offset, end);
    if (start < 0)
        return false;
    limit = end;
    if (max_len && max_len < end - start)
        limit = start + max_len;
    clean = bitmap_next_clean(bm, start, limit);
    *offset = start;
    *len = (clean < 0 ? limit : (uint64_t)clean) - start;
    return true;
}

int
bitmap_merge(struct bitmap *dst, const struct bitmap *src)
{
    if (dst->size != src->size || dst->granularity != src->granularity) {
        vimg_error(EINVAL, "cannot merge bitmaps of different size or "
                   "granularity");
        return -1;
    }
    for (uint64_t w = next_word(src, 0, true); w != NONE;
         w = next_word(src, w + 1, true))
        store(dst, w, dst->words[w] | src->words[w]);
    return 0;
}

void
bitmap_clear(struct bitmap *bm)
{
    memset(bm->words, 0, bm->nwords * sizeof(uint64_t));
    resummarise(bm);
}

void
bitmap_fill(struct bitmap *bm)
{
    for (size_t w = 0; w < bm->nwords; w++)
        bm->words[w] = full_mask(bm, w);
    resummarise(bm);
}

size_t
bitmap_serial_size(const struct bitmap *bm)
{
    return DIV_ROUND_UP(bm->nbits, 8);
}

void
bitmap_serialise(const struct bitmap *bm, uint8_t *buf, uint64_t first_byte,
                 size_t len)
{
    uint64_t total = bitmap_serial_size(bm);

    for (size_t i = 0; i < len; i++) {
        uint64_t k = first_byte + i;
        buf[i] = k >= first_byte && k < total ? bm->words[k / 8] >> (k % 8 * 8) & 0xff : 0;
    }
}

/* Byte K of the serialised form may hold byte value V. */
static bool
serial_byte_ok(const struct bitmap *bm, uint64_t k, uint8_t v)
{
    uint64_t total = bitmap_serial_size(bm);

    if (k >= total)
        return v == 0;
    if (k == total - 1 && bm->nbits % 8)
        return (v >> (bm->nbits % 8)) == 0;
    return true;
}

int
bitmap_deserialise(struct bitmap *bm, const uint8_t *buf, uint64_t first_byte,
                   size_t len)
{
    uint64_t total = bitmap_serial_size(bm), end;

    if (ADD_OVERFLOW(first_byte, (uint64_t)len, &end)) {
        vimg_error(EINVAL, "bitmap data range overflows");
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (!serial_byte_ok(bm, first_byte + i, buf[i])) {
            vimg_error(EINVAL, "bitmap data has bits set past the end of "
                       "the bitmap (byte %" PRIu64 ")", first_byte + i);
            return -1;
        }
    }
    for (size_t i = 0; i < len && first_byte + i < total; i++) {
        uint64_t k = first_byte + i, sh = k % 8 * 8;
        uint64_t v = bm->words[k / 8] & ~(UINT64_C(0xff) << sh);
        store(bm, k / 8, v | (uint64_t)buf[i] << sh);
    }
    return 0;
}

/* Granule bits of serialised bytes [FIRST_BYTE, FIRST_BYTE+LEN) as [*B, *E). */
static void
serial_bits(const struct bitmap *bm, uint64_t first_byte, size_t len,
            uint64_t *b, uint64_t *e)
{
    uint64_t total = bitmap_serial_size(bm), last;

    first_byte = MIN(first_byte, total);
    last = first_byte + MIN((uint64_t)len, total - first_byte);
    *b = first_byte * 8;
    *e = MIN(last * 8, bm->nbits);
}

bool
bitmap_range_is_zero(const struct bitmap *bm, uint64_t first_byte,
                     size_t len)
{
    uint64_t b, e;

    serial_bits(bm, first_byte, len, &b, &e);
    return find_bit(bm, b, e, true) == NONE;
}

bool
bitmap_range_is_one(const struct bitmap *bm, uint64_t first_byte, size_t len)
{
    uint64_t b, e;

    serial_bits(bm, first_byte, len, &b, &e);
    return find_bit(bm, b, e, false) == NONE;
}
