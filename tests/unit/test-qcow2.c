/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 driver tests.
 *
 * The main test is a shadow model: a qcow2 image (optionally over a
 * qcow2 backing file) and an in-memory raw copy receive the same random
 * writes, zero writes, discards and reads at unaligned offsets, and must
 * read back byte for byte.  Discard leaves content unspecified in
 * general; with qcow2 v3 every whole cow_align unit inside the range
 * reads as zero afterwards (unallocated without a backing file, a zero
 * cluster with one) and partial units keep their content, so the model
 * applies exactly that.  The image is reopened a few times on the way,
 * and checked with qemu-img check at the end when qemu-img is installed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "vimg.h"
#include "node.h"
#include "qcow2/qcow2.h"

#define VSIZE (64ull << 20)
#define NOPS 10000
#define MAXLEN (192u << 10)

static char tmpdir[] = "/tmp/test-qcow2.XXXXXX";

static uint64_t rng_state;

static uint64_t
rnd(void)
{
    /* xorshift64*: reproducible from the seed printed on failure. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static void
path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
}

static vimg_node *
must_open(const char *file, unsigned flags)
{
    vimg_node *n = vimg_open(file, "qcow2", flags);
    if (!n)
        fail_msg("open %s: %s", file, vimg_get_error());
    return n;
}

static void
must_create(const char *file, const char *opts)
{
    if (vimg_create("qcow2", file, opts, 0) == -1)
        fail_msg("create %s (%s): %s", file, opts, vimg_get_error());
}

static void
qemu_check(const char *file)
{
    char cmd[4096];
    int r;

    if (system("command -v qemu-img >/dev/null 2>&1") != 0)
        return;
    snprintf(cmd, sizeof cmd, "qemu-img check -q '%s'", file);
    r = system(cmd);
    if (r != 0)
        fail_msg("qemu-img check %s: status %d", file, r);
}

static void
compare(vimg_node *n, const uint8_t *shadow, uint64_t off, uint64_t len)
{
    uint8_t *buf = malloc(len);

    assert_non_null(buf);
    if (vimg_pread(n, buf, len, off, 0) == -1)
        fail_msg("pread: %s", vimg_get_error());
    if (memcmp(buf, shadow + off, len) != 0) {
        uint64_t i = 0;
        while (buf[i] == shadow[off + i])
            i++;
        fail_msg("mismatch at offset %" PRIu64 " (read 0x%02x, expected "
                 "0x%02x), seed %" PRIu64,
                 off + i, buf[i], shadow[off + i], rng_state);
    }
    free(buf);
}

/* Offsets biased towards cluster boundaries and lengths of all sizes. */
static void
pick_range(uint64_t cs, uint64_t *off, uint64_t *len)
{
    uint64_t r = rnd() % 4;

    *off = rnd() % VSIZE;
    if (r == 0)
        *off = (*off / cs) * cs;
    else if (r == 1)
        *off = (*off / cs) * cs + cs - 1 - rnd() % 1024 % cs;
    *len = 1 + rnd() % (rnd() % 4 == 0 ? MAXLEN : 8192);
    if (*off + *len > VSIZE)
        *len = VSIZE - *off;
}

static void
apply_discard(uint8_t *shadow, uint64_t unit, uint64_t off, uint64_t len)
{
    uint64_t a = (off + unit - 1) / unit * unit;
    uint64_t b = (off + len) / unit * unit;

    if (off + len == VSIZE)
        b = VSIZE;
    if (b > a)
        memset(shadow + a, 0, b - a);
}

static void
run_shadow(uint64_t cs, bool with_backing, uint64_t seed)
{
    char top[512], base[512], opts[1024];
    uint8_t *shadow = calloc(1, VSIZE), *buf = malloc(MAXLEN);
    vimg_node *n;

    assert_non_null(shadow);
    assert_non_null(buf);
    rng_state = seed;
    path(top, sizeof top, "top.qcow2");
    path(base, sizeof base, "base.qcow2");
    if (with_backing) {
        snprintf(opts, sizeof opts, "size=%llu,cluster_size=65536",
                 (unsigned long long)VSIZE);
        must_create(base, opts);
        n = must_open(base, VIMG_OPEN_RDWR);
        for (int i = 0; i < 64; i++) {
            uint64_t off, len;
            pick_range(65536, &off, &len);
            for (uint64_t j = 0; j < len; j++)
                shadow[off + j] = (uint8_t)(0x80 | (i + j));
            assert_int_equal(vimg_pwrite(n, shadow + off, len, off, 0), 0);
        }
        assert_int_equal(vimg_close(n), 0);
        snprintf(opts, sizeof opts,
                 "size=%llu,cluster_size=%llu,backing_file=base.qcow2,"
                 "backing_fmt=qcow2",
                 (unsigned long long)VSIZE, (unsigned long long)cs);
    } else {
        snprintf(opts, sizeof opts, "size=%llu,cluster_size=%llu",
                 (unsigned long long)VSIZE, (unsigned long long)cs);
    }
    must_create(top, opts);
    n = must_open(top, VIMG_OPEN_RDWR);
    for (int i = 0; i < NOPS; i++) {
        uint64_t off, len, op = rnd() % 10;
        pick_range(cs, &off, &len);
        if (op < 4) {
            uint8_t pat = rnd();
            for (uint64_t j = 0; j < len; j++)
                buf[j] = pat + j / 512;
            if (vimg_pwrite(n, buf, len, off, rnd() % 50 ? 0 : VIMG_REQ_FUA))
                fail_msg("pwrite: %s", vimg_get_error());
            memcpy(shadow + off, buf, len);
        } else if (op < 6) {
            unsigned fl = rnd() % 2 ? VIMG_REQ_MAY_UNMAP : 0;
            if (vimg_pwrite_zeroes(n, off, len, fl) == -1)
                fail_msg("zeroes: %s", vimg_get_error());
            memset(shadow + off, 0, len);
        } else if (op < 7) {
            if (vimg_discard(n, off, len, 0) == -1)
                fail_msg("discard: %s", vimg_get_error());
            apply_discard(shadow, cs, off, len);
        } else {
            compare(n, shadow, off, len);
        }
        if (i % 2500 == 2499) {
            assert_int_equal(vimg_close(n), 0);
            n = must_open(top, VIMG_OPEN_RDWR);
        }
    }
    for (uint64_t off = 0; off < VSIZE; off += 4u << 20)
        compare(n, shadow, off, 4u << 20);
    assert_int_equal(vimg_close(n), 0);
    qemu_check(top);
    if (with_backing)
        qemu_check(base);
    unlink(top);
    unlink(base);
    free(shadow);
    free(buf);
}

static void
test_shadow_512(void **state)
{
    (void)state;
    run_shadow(512, false, 1);
}

static void
test_shadow_512_backing(void **state)
{
    (void)state;
    run_shadow(512, true, 2);
}

static void
test_shadow_64k(void **state)
{
    (void)state;
    run_shadow(65536, false, 3);
}

static void
test_shadow_64k_backing(void **state)
{
    (void)state;
    run_shadow(65536, true, 4);
}

static void
test_shadow_2m(void **state)
{
    (void)state;
    run_shadow(2u << 20, false, 5);
}

static void
test_shadow_2m_backing(void **state)
{
    (void)state;
    run_shadow(2u << 20, true, 6);
}

/* Every refcount width: create, write enough to grow the refcount
 * table (512-byte clusters), reopen, read back. */
static void
test_refcount_widths(void **state)
{
    (void)state;
    for (unsigned w = 1; w <= 64; w *= 2) {
        char file[512], opts[256];
        uint8_t *buf = malloc(4u << 20), *rd = malloc(4u << 20);
        vimg_node *n;

        assert_non_null(buf);
        assert_non_null(rd);
        for (size_t i = 0; i < (4u << 20); i++)
            buf[i] = (uint8_t)(i * 7 + w + i / 4096);
        path(file, sizeof file, "rc.qcow2");
        snprintf(opts, sizeof opts,
                 "size=16M,cluster_size=512,refcount_bits=%u", w);
        must_create(file, opts);
        n = must_open(file, VIMG_OPEN_RDWR);
        assert_int_equal(vimg_pwrite(n, buf, 4u << 20, 3u << 20, 0), 0);
        assert_int_equal(vimg_pwrite_zeroes(n, 4u << 20, 65536, 0), 0);
        memset(buf + (1u << 20), 0, 65536);
        assert_int_equal(vimg_close(n), 0);
        n = must_open(file, 0);
        assert_int_equal(vimg_pread(n, rd, 4u << 20, 3u << 20, 0), 0);
        assert_memory_equal(rd, buf, 4u << 20);
        assert_int_equal(vimg_close(n), 0);
        qemu_check(file);
        unlink(file);
        free(buf);
        free(rd);
    }
}

/* Refcount entries of every width round-trip without disturbing their
 * neighbours. */
static void
test_refblock_entries(void **state)
{
    (void)state;
    for (unsigned w = 1; w <= 64; w *= 2) {
        struct qcow2_state s = { .refcount_bits = w };
        uint8_t rb[512];
        uint64_t n = sizeof rb * 8 / w;
        uint64_t max = w == 64 ? UINT64_MAX : (1ull << w) - 1;

        memset(rb, 0, sizeof rb);
        for (uint64_t i = 0; i < n; i++)
            qcow2_rb_set(&s, rb, i, (i * 2654435761u) & max);
        for (uint64_t i = 0; i < n; i++)
            assert_int_equal(qcow2_rb_get(&s, rb, i),
                             (i * 2654435761u) & max);
        qcow2_rb_set(&s, rb, 1, max);
        assert_int_equal(qcow2_rb_get(&s, rb, 1), max);
        assert_int_equal(qcow2_rb_get(&s, rb, 0), 0);
        assert_int_equal(qcow2_rb_get(&s, rb, 2), ((uint64_t)2 * 2654435761u) & max);
    }
    /* Sub-byte widths are LSB first within a byte. */
    {
        struct qcow2_state s = { .refcount_bits = 1 };
        uint8_t rb[1] = { 0 };
        qcow2_rb_set(&s, rb, 0, 1);
        assert_int_equal(rb[0], 0x01);
        qcow2_rb_set(&s, rb, 7, 1);
        assert_int_equal(rb[0], 0x81);
    }
}

/* Open-time validation: a damaged header gives a clean error. */
static void
test_bad_headers(void **state)
{
    static const struct {
        size_t off;
        uint8_t bytes[8];
        size_t len;
    } cases[] = {
        { 0, { 'X' }, 1 },                 /* magic */
        { 4, { 0, 0, 0, 4 }, 4 },          /* version */
        { 20, { 0, 0, 0, 22 }, 4 },        /* cluster_bits */
        { 36, { 0x10, 0, 0, 0 }, 4 },      /* l1_size */
        { 40, { 0, 0, 0, 0, 0, 0, 0x30, 1 }, 8 }, /* l1 unaligned */
        { 48, { 0, 0, 0, 1, 0, 0, 0, 0 }, 8 },    /* reftable past EOF */
        { 72, { 0, 0, 0, 0, 0, 0, 0, 0x20 }, 8 }, /* unknown incompat */
        { 96, { 0, 0, 0, 7 }, 4 },                /* refcount_order */
        { 100, { 0, 0, 0, 50 }, 4 },              /* header_length */
        { 36, { 0, 0, 0, 0 }, 4 },                /* l1 too small */
    };
    char file[512];

    (void)state;
    path(file, sizeof file, "bad.qcow2");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f;
        vimg_node *n;

        must_create(file, "size=64M");
        f = fopen(file, "r+");
        assert_non_null(f);
        fseek(f, cases[i].off, SEEK_SET);
        fwrite(cases[i].bytes, 1, cases[i].len, f);
        fclose(f);
        n = vimg_open(file, "qcow2", 0);
        if (n)
            fail_msg("case %zu: damaged header opened", i);
        assert_non_null(vimg_get_error());
        assert_true(strlen(vimg_get_error()) > 0);
    }
    unlink(file);
}

/* A header rewrite keeps extensions it does not know, in order. */
static void
test_header_rewrite_keeps_unknown_ext(void **state)
{
    static const uint8_t ext[16] = { 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 5,
                                     'h', 'e', 'l', 'l', 'o', 0, 0, 0 };
    char file[512];
    struct qcow2_state *s;
    vimg_node *n;
    FILE *f;
    bool found = false;

    (void)state;
    path(file, sizeof file, "ext.qcow2");
    must_create(file, "size=64M");
    /* Our layout: feature table (392 bytes), then the end marker. */
    f = fopen(file, "r+");
    assert_non_null(f);
    fseek(f, 112 + 392, SEEK_SET);
    fwrite(ext, 1, sizeof ext, f);
    fclose(f);
    n = vimg_open(file, "qcow2", VIMG_OPEN_RDWR | VIMG_OPEN_NO_BACKING);
    if (!n)
        fail_msg("open: %s", vimg_get_error());
    s = node_of(n)->state;
    pthread_mutex_lock(&s->lock);
    assert_int_equal(qcow2_header_write_locked(s, "other.qcow2", "raw"), 0);
    pthread_mutex_unlock(&s->lock);
    assert_int_equal(vimg_close(n), 0);
    n = vimg_open(file, "qcow2", VIMG_OPEN_NO_BACKING);
    if (!n)
        fail_msg("reopen: %s", vimg_get_error());
    s = node_of(n)->state;
    assert_string_equal(node_of(n)->backing_name, "other.qcow2");
    assert_string_equal(node_of(n)->backing_fmt, "raw");
    for (size_t i = 0; i < s->exts.len; i++)
        if (s->exts.ptr[i].type == 0x12345678) {
            assert_int_equal(s->exts.ptr[i].len, 5);
            assert_memory_equal(s->exts.ptr[i].data, "hello", 5);
            found = true;
        }
    assert_true(found);
    assert_int_equal(vimg_close(n), 0);
    unlink(file);
}

static int
setup(void **state)
{
    (void)state;
    if (!mkdtemp(tmpdir))
        return -1;
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    rmdir(tmpdir);
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refblock_entries),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_header_rewrite_keeps_unknown_ext),
        cmocka_unit_test(test_refcount_widths),
        cmocka_unit_test(test_shadow_512),
        cmocka_unit_test(test_shadow_512_backing),
        cmocka_unit_test(test_shadow_64k),
        cmocka_unit_test(test_shadow_64k_backing),
        cmocka_unit_test(test_shadow_2m),
        cmocka_unit_test(test_shadow_2m_backing),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
