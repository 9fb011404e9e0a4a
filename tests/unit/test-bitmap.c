/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for lib/bitmap.c against a bool[] shadow model (one bool per
 * granule), after QEMU's tests/unit/test-hbitmap.c.  Random operations
 * (set, reset, merge, clear, fill, deserialise) are applied to both; after
 * each, get, count, next_dirty, next_clean and next_dirty_area are compared
 * at random offsets, and the serialised form is compared byte for byte
 * with one built from the model in qcow2's order.  A fixed-seed PRNG keeps
 * failures reproducible.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "bitmap.h"

#define UNUSED __attribute__((unused))
#define KiB 1024ull
#define MiB (1024 * KiB)
#define TiB (1024 * 1024 * MiB)

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint64_t
rnd_below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

struct model {
    struct bitmap *bm;
    uint64_t size, gran, nbits;
    bool *dirty;
};

static void
model_init(struct model *m, uint64_t size, uint32_t gran)
{
    m->size = size;
    m->gran = gran;
    m->nbits = (size + gran - 1) / gran;
    m->dirty = calloc(m->nbits + 1, sizeof(bool));
    assert_non_null(m->dirty);
    m->bm = bitmap_new(size, gran);
    assert_non_null(m->bm);
}

static void
model_fini(struct model *m)
{
    bitmap_free(m->bm);
    free(m->dirty);
}

static void
model_put(struct model *m, uint64_t off, uint64_t len, bool val)
{
    uint64_t end = off + len;

    if (len == 0 || off >= m->size)
        return;
    if (end > m->size || end < off)
        end = m->size;
    for (uint64_t n = off / m->gran; n <= (end - 1) / m->gran; n++)
        m->dirty[n] = val;
    if (val)
        bitmap_set(m->bm, off, len);
    else
        bitmap_reset(m->bm, off, len);
}

static uint64_t
model_count(const struct model *m)
{
    uint64_t c = 0;

    for (uint64_t n = 0; n < m->nbits; n++)
        if (m->dirty[n])
            c += ((n + 1) * m->gran < m->size ? (n + 1) * m->gran : m->size) -
                 n * m->gran;
    return c;
}

static int64_t
model_next(const struct model *m, uint64_t off, uint64_t end, bool val)
{
    if (end > m->size)
        end = m->size;
    for (uint64_t n = off / m->gran; off < end && n <= (end - 1) / m->gran;
         n++)
        if (m->dirty[n] == val)
            return n * m->gran > off ? n * m->gran : off;
    return -1;
}

/* Expected next_dirty_area result, same contract as bitmap.h. */
static bool
model_area(const struct model *m, uint64_t *off, uint64_t *len,
           uint64_t max_len)
{
    uint64_t end = *off + *len, limit;
    int64_t start, clean;

    if (end > m->size || end < *off)
        end = m->size;
    start = model_next(m, *off, end, true);
    if (start < 0)
        return false;
    limit = end;
    if (max_len && max_len < end - start)
        limit = start + max_len;
    clean = model_next(m, start, limit, false);
    *off = start;
    *len = (clean < 0 ? limit : (uint64_t)clean) - start;
    return true;
}

/* A random byte offset, often near a word or summary boundary. */
static uint64_t
rnd_offset(const struct model *m)
{
    static const uint64_t step[] = {64, 4096, 1, 1};
    uint64_t k = rnd() % 4, n = rnd_below(m->nbits / step[k] + 2) * step[k];

    if (step[k] > 1) {
        n += rnd_below(3);
        n = n ? n - 1 : 0; /* one before, at or after a boundary */
    }
    return n * m->gran + rnd_below(m->gran);
}

/* A random length: a few granules, about a word, thousands, any. */
static uint64_t
rnd_len(const struct model *m)
{
    static const uint64_t span[] = {4, 130, 5000};
    uint64_t k = rnd() % 4;

    return rnd_below(k < 3 ? span[k] * m->gran : m->size + 1);
}

static void
check_queries(const struct model *m, int n)
{
    assert_int_equal(bitmap_count(m->bm), model_count(m));
    for (int i = 0; i < n; i++) {
        uint64_t off = rnd_offset(m), end = off + rnd_len(m);
        uint64_t aoff = off, alen = end - off, max = rnd_below(3000) * 512;
        uint64_t eoff = off, elen = end - off;
        bool found;

        assert_int_equal(bitmap_get(m->bm, off),
                         off < m->size && m->dirty[off / m->gran]);
        assert_int_equal(bitmap_next_dirty(m->bm, off, end),
                         model_next(m, off, end, true));
        assert_int_equal(bitmap_next_clean(m->bm, off, end),
                         model_next(m, off, end, false));
        found = model_area(m, &eoff, &elen, max);
        assert_int_equal(bitmap_next_dirty_area(m->bm, &aoff, &alen, max),
                         found);
        assert_int_equal(aoff, eoff);
        assert_int_equal(alen, elen);
    }
}

/* Serialised bytes as the model says they should be. */
static uint8_t *
model_serial(const struct model *m, size_t extra)
{
    size_t total = (m->nbits + 7) / 8;
    uint8_t *buf = calloc(total + extra + 1, 1);

    assert_non_null(buf);
    for (uint64_t n = 0; n < m->nbits; n++)
        if (m->dirty[n])
            buf[n / 8] |= 1u << (n % 8);
    return buf;
}

/* Serialise must match the model; deserialising it in random chunks into a
 * fresh bitmap must give back the same bytes and count. */
static void
check_serial(const struct model *m)
{
    size_t total = bitmap_serial_size(m->bm);
    uint8_t *want = model_serial(m, 16), *got = malloc(total + 16);
    struct bitmap *c = bitmap_new(m->size, m->gran);

    assert_int_equal(total, (m->nbits + 7) / 8);
    assert_non_null(got);
    assert_non_null(c);
    memset(got, 0xaa, total + 16);
    bitmap_serialise(m->bm, got, 0, total + 16);
    assert_memory_equal(got, want, total + 16);
    for (size_t pos = 0; pos < total + 16;) {
        size_t chunk = 1 + rnd_below(total / 3 + 8);
        if (chunk > total + 16 - pos)
            chunk = total + 16 - pos;
        assert_int_equal(bitmap_deserialise(c, want + pos, pos, chunk), 0);
        pos += chunk;
    }
    memset(got, 0xaa, total + 16);
    bitmap_serialise(c, got, 0, total + 16);
    assert_memory_equal(got, want, total + 16);
    assert_int_equal(bitmap_count(c), bitmap_count(m->bm));
    for (int i = 0; i < 20; i++) {
        uint64_t b = rnd_below(total + 4), len = rnd_below(total / 2 + 4);
        bool zero = true, one = true;
        for (uint64_t n = b * 8; n < (b + len) * 8 && n < m->nbits; n++) {
            zero &= !m->dirty[n];
            one &= m->dirty[n];
        }
        assert_int_equal(bitmap_range_is_zero(m->bm, b, len), zero);
        assert_int_equal(bitmap_range_is_one(m->bm, b, len), one);
    }
    bitmap_free(c);
    free(got);
    free(want);
}

/* Merge a random bitmap of the same geometry into M. */
static void
random_merge(struct model *m)
{
    struct model src;

    model_init(&src, m->size, m->gran);
    for (int i = 0; i < 4; i++)
        model_put(&src, rnd_offset(m), rnd_len(m) / 4, true);
    assert_int_equal(bitmap_merge(m->bm, src.bm), 0);
    for (uint64_t n = 0; n < m->nbits; n++)
        m->dirty[n] |= src.dirty[n];
    model_fini(&src);
}

/* Deserialise a random serialised chunk into M. */
static void
random_deserialise(struct model *m)
{
    size_t total = (m->nbits + 7) / 8;
    uint64_t first = rnd_below(total), len = 1 + rnd_below(total - first);
    uint8_t *buf = malloc(len);

    assert_non_null(buf);
    for (uint64_t i = 0; i < len; i++) {
        buf[i] = rnd() % 3 ? (rnd() % 2 ? 0 : 0xff) : rnd() & 0xff;
        for (unsigned j = 0; j < 8; j++) {
            uint64_t n = (first + i) * 8 + j;
            if (n >= m->nbits)
                buf[i] &= ~(1u << j);
            else
                m->dirty[n] = buf[i] >> j & 1;
        }
    }
    assert_int_equal(bitmap_deserialise(m->bm, buf, first, len), 0);
    free(buf);
}

/* Resize M to SIZE: kept granules keep their bits, new ones are clean. */
static void
model_resize(struct model *m, uint64_t size)
{
    uint64_t nbits = (size + m->gran - 1) / m->gran;
    bool *d = calloc(nbits + 1, sizeof(bool));

    assert_non_null(d);
    memcpy(d, m->dirty, (nbits < m->nbits ? nbits : m->nbits) * sizeof(bool));
    free(m->dirty);
    m->dirty = d;
    m->nbits = nbits;
    m->size = size;
    assert_int_equal(bitmap_resize(m->bm, size), 0);
    assert_int_equal(bitmap_size(m->bm), size);
}

static void
random_step(struct model *m)
{
    unsigned op = rnd() % 100;

    if (op < 40)
        model_put(m, rnd_offset(m), rnd_len(m), true);
    else if (op < 85)
        model_put(m, rnd_offset(m), rnd_len(m), false);
    else if (op < 92)
        random_merge(m);
    else if (op < 97)
        random_deserialise(m);
    else if (op < 99) {
        bitmap_clear(m->bm);
        memset(m->dirty, 0, m->nbits);
    } else {
        bitmap_fill(m->bm);
        memset(m->dirty, 1, m->nbits);
    }
}

static void
run_model(uint64_t size, uint32_t gran, int steps)
{
    struct model m;

    model_init(&m, size, gran);
    check_queries(&m, 8);
    for (int i = 0; i < steps; i++) {
        random_step(&m);
        check_queries(&m, 8);
        if (i % 64 == 0)
            check_serial(&m);
    }
    check_serial(&m);
    model_fini(&m);
}

static void
test_bitmap_resize_model(void **state UNUSED)
{
    struct model m;

    model_init(&m, 3 * MiB + 512, 512);
    for (int i = 0; i < 300; i++) {
        if (i % 10 == 0) {
            /* Sizes around word and summary boundaries, and odd ones. */
            static const uint64_t base[] = {64 * 512, 4096 * 512, 1};
            uint64_t b = base[rnd() % 3];
            uint64_t size = (1 + rnd_below(8 * MiB / b)) * b;
            size += rnd() % 2 ? 0 : rnd_below(1024);
            model_resize(&m, size);
            check_queries(&m, 8);
            check_serial(&m);
        }
        random_step(&m);
        check_queries(&m, 4);
    }
    model_fini(&m);
}

static void
test_bitmap_resize_rejects_huge(void **state UNUSED)
{
    struct bitmap *bm = bitmap_new(1 * MiB, 512);

    bitmap_set(bm, 0, 4096);
    assert_int_equal(bitmap_resize(bm, UINT64_MAX), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(bitmap_size(bm), 1 * MiB);
    assert_int_equal(bitmap_count(bm), 4096);
    bitmap_free(bm);
}

static void
test_bitmap_model_gran512_crosses_summary(void **state UNUSED)
{
    /* 2 summary words + 77 granules, last granule partial. */
    run_model(512 * (4096 * 2 + 77) - 100, 512, 1500);
}

static void
test_bitmap_model_gran64k(void **state UNUSED)
{
    run_model(64 * KiB * (64 * 5 + 3) - 1000, 64 * KiB, 1500);
}

static void
test_bitmap_model_gran2m(void **state UNUSED)
{
    run_model(2 * MiB * 130 + 1, 2 * MiB, 1500);
}

static void
test_bitmap_model_exact_words(void **state UNUSED)
{
    run_model(512 * 64 * 3, 512, 800);  /* ends on a word boundary */
    run_model(512 * 4096, 512, 400);    /* ends on a summary boundary */
    run_model(1000, 512, 200);          /* two granules */
}

static void
test_bitmap_new_rejects_bad_granularity(void **state UNUSED)
{
    assert_null(bitmap_new(1 * MiB, 256));
    assert_int_equal(errno, EINVAL);
    assert_null(bitmap_new(1 * MiB, 65536 + 512));
    assert_null(bitmap_new(1 * MiB, 0));
    assert_null(bitmap_new(UINT64_MAX, 65536));
    bitmap_free(bitmap_new(1 * MiB, 1u << 31));
}

static void
test_bitmap_set_rounds_outward(void **state UNUSED)
{
    struct bitmap *bm = bitmap_new(1 * MiB, 64 * KiB);

    bitmap_set(bm, 64 * KiB - 1, 2);
    assert_true(bitmap_get(bm, 0));
    assert_true(bitmap_get(bm, 128 * KiB - 1));
    assert_false(bitmap_get(bm, 128 * KiB));
    assert_int_equal(bitmap_count(bm), 128 * KiB);
    bitmap_reset(bm, 100, 1);
    assert_false(bitmap_get(bm, 64 * KiB - 1));
    assert_int_equal(bitmap_count(bm), 64 * KiB);
    bitmap_set(bm, 1 * MiB, 100);  /* beyond the end: ignored */
    bitmap_set(bm, 0, 0);          /* empty: ignored */
    assert_int_equal(bitmap_count(bm), 64 * KiB);
    bitmap_free(bm);
}

static void
test_bitmap_count_clips_last_granule(void **state UNUSED)
{
    struct bitmap *bm = bitmap_new(1 * MiB + 4096, 64 * KiB);

    bitmap_set(bm, 1 * MiB, 1);
    assert_int_equal(bitmap_count(bm), 4096);
    bitmap_fill(bm);
    assert_int_equal(bitmap_count(bm), 1 * MiB + 4096);
    bitmap_clear(bm);
    assert_int_equal(bitmap_count(bm), 0);
    bitmap_free(bm);
}

static void
test_bitmap_next_dirty_crosses_word(void **state UNUSED)
{
    struct bitmap *bm = bitmap_new(512 * 200, 512);

    bitmap_set(bm, 512 * 130, 1);
    assert_int_equal(bitmap_next_dirty(bm, 0, UINT64_MAX), 512 * 130);
    assert_int_equal(bitmap_next_dirty(bm, 512 * 63, 512 * 130), -1);
    assert_int_equal(bitmap_next_dirty(bm, 512 * 130 + 7, UINT64_MAX),
                     512 * 130 + 7);
    assert_int_equal(bitmap_next_dirty(bm, 512 * 131, UINT64_MAX), -1);
    bitmap_free(bm);
}

static void
test_bitmap_next_clean_crosses_summary(void **state UNUSED)
{
    struct bitmap *bm = bitmap_new(512ull * 4096 * 3, 512);

    bitmap_fill(bm);
    assert_int_equal(bitmap_next_clean(bm, 0, UINT64_MAX), -1);
    bitmap_reset(bm, 512ull * (4096 * 2 + 5), 512);
    assert_int_equal(bitmap_next_clean(bm, 0, UINT64_MAX),
                     512 * (4096 * 2 + 5));
    assert_int_equal(bitmap_next_clean(bm, 512ull * (4096 * 2 + 6),
                                       UINT64_MAX),
                     -1);
    bitmap_free(bm);
}

static void
test_bitmap_next_dirty_area_clipped(void **state UNUSED)
{
    struct bitmap *bm = bitmap_new(10 * MiB + 1000, 64 * KiB);
    uint64_t off = 0, len = UINT64_MAX;

    bitmap_set(bm, 1 * MiB, 1 * MiB);
    assert_true(bitmap_next_dirty_area(bm, &off, &len, 0));
    assert_int_equal(off, 1 * MiB);
    assert_int_equal(len, 1 * MiB);
    off = 1 * MiB + 5;
    len = 10 * MiB;
    assert_true(bitmap_next_dirty_area(bm, &off, &len, 64 * KiB));
    assert_int_equal(off, 1 * MiB + 5);
    assert_int_equal(len, 64 * KiB);
    bitmap_set(bm, 10 * MiB, 1);
    off = 3 * MiB;
    len = UINT64_MAX - 1;
    assert_true(bitmap_next_dirty_area(bm, &off, &len, 0));
    assert_int_equal(off, 10 * MiB);
    assert_int_equal(len, 1000);
    off = 3 * MiB;
    len = 1 * MiB;
    assert_false(bitmap_next_dirty_area(bm, &off, &len, 0));
    assert_int_equal(off, 3 * MiB);
    bitmap_free(bm);
}

static void
test_bitmap_merge_rejects_mismatch(void **state UNUSED)
{
    struct bitmap *a = bitmap_new(1 * MiB, 64 * KiB);
    struct bitmap *b = bitmap_new(1 * MiB, 128 * KiB);
    struct bitmap *c = bitmap_new(2 * MiB, 64 * KiB);

    bitmap_set(b, 0, 1);
    bitmap_set(c, 0, 1);
    assert_int_equal(bitmap_merge(a, b), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(bitmap_merge(a, c), -1);
    assert_int_equal(bitmap_count(a), 0);
    bitmap_free(a);
    bitmap_free(b);
    bitmap_free(c);
}

static void
test_bitmap_copy_independent(void **state UNUSED)
{
    struct bitmap *a = bitmap_new(5 * MiB, 512), *b;

    bitmap_set(a, 4096, 8192);
    b = bitmap_copy(a);
    assert_non_null(b);
    bitmap_reset(a, 0, 5 * MiB);
    assert_int_equal(bitmap_count(b), 8192);
    assert_int_equal(bitmap_next_dirty(b, 0, UINT64_MAX), 4096);
    assert_int_equal(bitmap_merge(a, b), 0);
    assert_int_equal(bitmap_count(a), 8192);
    bitmap_free(a);
    bitmap_free(b);
}

static void
test_bitmap_serialise_qcow2_order(void **state UNUSED)
{
    struct bitmap *bm = bitmap_new(16 * MiB, 64 * KiB);
    uint8_t buf[32];

    assert_int_equal(bitmap_serial_size(bm), 32);
    bitmap_set(bm, 4 * MiB, 128 * KiB);
    bitmap_serialise(bm, buf, 0, sizeof buf);
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], i == 8 ? 0x03 : 0);
    bitmap_serialise(bm, buf, 8, 1);
    assert_int_equal(buf[0], 0x03);
    assert_false(bitmap_range_is_zero(bm, 8, 1));
    assert_true(bitmap_range_is_zero(bm, 9, 23));
    assert_false(bitmap_range_is_one(bm, 8, 1));
    bitmap_set(bm, 4 * MiB, 512 * KiB);
    assert_true(bitmap_range_is_one(bm, 8, 1));
    bitmap_free(bm);
}

static void
test_bitmap_deserialise_rejects_tail_bits(void **state UNUSED)
{
    struct bitmap *bm = bitmap_new(64 * KiB * 10, 64 * KiB); /* 10 bits */
    uint8_t ok[2] = {0xff, 0x03}, bad[2] = {0xff, 0x07}, past[1] = {1};

    assert_int_equal(bitmap_serial_size(bm), 2);
    assert_int_equal(bitmap_deserialise(bm, bad, 0, 2), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(bitmap_count(bm), 0);
    assert_int_equal(bitmap_deserialise(bm, past, 2, 1), -1);
    assert_int_equal(bitmap_deserialise(bm, ok, 0, 2), 0);
    assert_int_equal(bitmap_count(bm), 10 * 64 * KiB);
    assert_true(bitmap_range_is_one(bm, 0, 4096));
    bitmap_free(bm);
}

static void
test_bitmap_zero_size(void **state UNUSED)
{
    struct bitmap *bm = bitmap_new(0, 512);
    uint64_t off = 0, len = 100;

    assert_non_null(bm);
    bitmap_set(bm, 0, 100);
    bitmap_fill(bm);
    assert_int_equal(bitmap_count(bm), 0);
    assert_int_equal(bitmap_next_dirty(bm, 0, 100), -1);
    assert_int_equal(bitmap_next_clean(bm, 0, 100), -1);
    assert_false(bitmap_next_dirty_area(bm, &off, &len, 0));
    assert_int_equal(bitmap_serial_size(bm), 0);
    bitmap_free(bm);
}

/* 16 TiB at 64 KiB: 32 MiB of words, 512 KiB per summary.  Searching the
 * empty (or full) bitmap walks the summary only. */
static void
test_bitmap_empty_16t_fast(void **state UNUSED)
{
    struct bitmap *bm = bitmap_new(16 * TiB, 64 * KiB);
    uint64_t off = 0, len = UINT64_MAX;
    clock_t t0 = clock();

    assert_non_null(bm);
    for (int i = 0; i < 100; i++)
        assert_int_equal(bitmap_next_dirty(bm, 0, UINT64_MAX), -1);
    assert_false(bitmap_next_dirty_area(bm, &off, &len, 0));
    assert_int_equal(bitmap_next_clean(bm, 0, UINT64_MAX), 0);
    bitmap_set(bm, 16 * TiB - 1, 1);
    assert_int_equal(bitmap_next_dirty(bm, 0, UINT64_MAX),
                     16 * TiB - 64 * KiB);
    assert_int_equal(bitmap_count(bm), 64 * KiB);
    print_message("16 TiB searches: %.3f s\n",
                  (double)(clock() - t0) / CLOCKS_PER_SEC);
    bitmap_free(bm);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bitmap_new_rejects_bad_granularity),
        cmocka_unit_test(test_bitmap_set_rounds_outward),
        cmocka_unit_test(test_bitmap_count_clips_last_granule),
        cmocka_unit_test(test_bitmap_next_dirty_crosses_word),
        cmocka_unit_test(test_bitmap_next_clean_crosses_summary),
        cmocka_unit_test(test_bitmap_next_dirty_area_clipped),
        cmocka_unit_test(test_bitmap_merge_rejects_mismatch),
        cmocka_unit_test(test_bitmap_copy_independent),
        cmocka_unit_test(test_bitmap_serialise_qcow2_order),
        cmocka_unit_test(test_bitmap_deserialise_rejects_tail_bits),
        cmocka_unit_test(test_bitmap_zero_size),
        cmocka_unit_test(test_bitmap_empty_16t_fast),
        cmocka_unit_test(test_bitmap_model_gran512_crosses_summary),
        cmocka_unit_test(test_bitmap_model_gran64k),
        cmocka_unit_test(test_bitmap_model_gran2m),
        cmocka_unit_test(test_bitmap_model_exact_words),
        cmocka_unit_test(test_bitmap_resize_model),
        cmocka_unit_test(test_bitmap_resize_rejects_huge),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
