/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Compressed qcow2 writes (VIMG_REQ_COMPRESSED) against a shadow model.
 * Several threads write through one handle; thread i owns the stripes
 * of STRIPE clusters whose index is i modulo THREADS, so requests never
 * overlap but share L2 tables, refcount blocks and the host cluster the
 * compressed data is packed into.  Each thread mixes compressed writes
 * of compressible, incompressible and zero data, overwrites of
 * compressed clusters, partial normal writes into them (copy on write),
 * zero writes and verified reads, and keeps its part of an in-memory
 * shadow.  Afterwards the image must read exactly as the shadow and
 * pass `qemu-img check` (when qemu-img is installed).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "vimg.h"

#define THREADS 4
#define STRIPE 4 /* clusters per stripe */
#define OPS 300

struct ctx {
    vimg_node *img;
    uint64_t cs, size;
    uint8_t *shadow; /* size bytes */
};

struct worker {
    struct ctx *c;
    unsigned id, seed;
    uint64_t compressed_writes;
    int failed;
};

/* Fill BUF with data of the given kind: 0 compressible text-like bytes,
 * 1 random (incompressible), 2 all one byte, 3 zeroes. */
static void
fill(uint8_t *buf, uint64_t len, unsigned kind, unsigned *seed)
{
    unsigned v = rand_r(seed);

    for (uint64_t i = 0; i < len; i++) {
        switch (kind) {
        case 0:
            buf[i] = "vimg compresses "[(i + v) % 16] ^ (i / 997 & 3);
            break;
        case 1: buf[i] = rand_r(seed); break;
        case 2: buf[i] = v; break;
        default: buf[i] = 0; break;
        }
    }
}

static void
op(struct worker *w, uint8_t *buf)
{
    struct ctx *c = w->c;
    uint64_t nstripes = c->size / c->cs / STRIPE;
    uint64_t s = (rand_r(&w->seed) % (nstripes / THREADS)) * THREADS + w->id;
    uint64_t first = s * STRIPE + rand_r(&w->seed) % STRIPE;
    uint64_t n = 1 + rand_r(&w->seed) % (s * STRIPE + STRIPE - first);
    uint64_t off = first * c->cs, len = n * c->cs;
    unsigned kind = rand_r(&w->seed) % 4, what = rand_r(&w->seed) % 10;

    if (what < 6) {
        fill(buf, len, kind, &w->seed);
        if (vimg_pwrite(c->img, buf, len, off, VIMG_REQ_COMPRESSED))
            w->failed = 1;
        memcpy(c->shadow + off, buf, len);
        w->compressed_writes++;
    } else if (what < 8) {
        /* A partial normal write: copy on write of a compressed cluster. */
        uint64_t in = rand_r(&w->seed) % len, l = 1 + rand_r(&w->seed) % 5000;

        l = l > len - in ? len - in : l;
        fill(buf, l, kind, &w->seed);
        if (vimg_pwrite(c->img, buf, l, off + in, 0))
            w->failed = 1;
        memcpy(c->shadow + off + in, buf, l);
    } else if (what < 9) {
        if (vimg_pwrite_zeroes(c->img, off, len, VIMG_REQ_MAY_UNMAP))
            w->failed = 1;
        memset(c->shadow + off, 0, len);
    } else {
        if (vimg_pread(c->img, buf, len, off, 0))
            w->failed = 1;
        else if (memcmp(buf, c->shadow + off, len))
            w->failed = 2;
    }
}

static void *
work(void *arg)
{
    struct worker *w = arg;
    uint8_t *buf = malloc(STRIPE * w->c->cs);

    if (!buf) {
        w->failed = 3;
        return NULL;
    }
    for (int i = 0; i < OPS && !w->failed; i++)
        op(w, buf);
    free(buf);
    return NULL;
}

static void
compare_shadow(const char *path, struct ctx *c)
{
    vimg_node *img = vimg_open(path, "qcow2", 0);
    uint8_t *buf = malloc(c->cs);

    assert_non_null(img);
    assert_non_null(buf);
    for (uint64_t off = 0; off < c->size; off += c->cs) {
        assert_int_equal(vimg_pread(img, buf, c->cs, off, 0), 0);
        if (memcmp(buf, c->shadow + off, c->cs))
            fail_msg("cluster at %llu differs from the shadow",
                     (unsigned long long)off);
    }
    free(buf);
    assert_int_equal(vimg_close(img), 0);
}

static void
qemu_check(const char *path)
{
    char cmd[256];

    if (system("command -v qemu-img >/dev/null") != 0)
        return;
    snprintf(cmd, sizeof cmd, "qemu-img check -q %s", path);
    assert_int_equal(system(cmd), 0);
}

static void
run_threads(const char *opts, uint64_t cs, uint64_t size)
{
    char path[] = "/tmp/vimg-test-compress-XXXXXX";
    struct worker w[THREADS];
    pthread_t t[THREADS];
    struct ctx c = { .cs = cs, .size = size };
    char create[128];
    uint64_t total = 0;
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    close(fd);
    snprintf(create, sizeof create, "size=%llu,%s", (unsigned long long)size,
             opts);
    assert_int_equal(vimg_create("qcow2", path, create, 0), 0);
    c.shadow = calloc(1, size);
    assert_non_null(c.shadow);
    c.img = vimg_open(path, "qcow2", VIMG_OPEN_RDWR);
    assert_non_null(c.img);
    memset(w, 0, sizeof w);
    for (unsigned i = 0; i < THREADS; i++) {
        w[i].c = &c;
        w[i].id = i;
        w[i].seed = 1234 + i;
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failed, 0);
        total += w[i].compressed_writes;
    }
    assert_true(total > 0);
    assert_int_equal(vimg_close(c.img), 0);
    compare_shadow(path, &c);
    qemu_check(path);
    unlink(path);
    free(c.shadow);
}

static void
test_threads_deflate_64k(void **state)
{
    (void)state;
    run_threads("cluster_size=64k", 65536, 16 << 20);
}

static void
test_threads_zstd_4k(void **state)
{
    (void)state;
    run_threads("cluster_size=4k,compression_type=zstd", 4096, 4 << 20);
}

static void
test_threads_extended_l2(void **state)
{
    (void)state;
    run_threads("cluster_size=32k,extended_l2=on", 32768, 8 << 20);
}

static void
test_threads_narrow_refcounts(void **state)
{
    /* 512 B clusters and 1-bit refcounts: every compressed cluster needs
     * a host cluster of its own. */
    (void)state;
    run_threads("cluster_size=512,refcount_bits=1", 512, 1 << 20);
}

/* Block status reports compressed clusters without a host offset, and
 * incompressible data as a normal cluster. */
static void
test_block_status_and_fallback(void **state)
{
    char path[] = "/tmp/vimg-test-compress-XXXXXX";
    unsigned seed = 5;
    uint8_t *buf = malloc(2 * 65536);
    struct vimg_extent e;
    vimg_node *img;
    int fd = mkstemp(path);

    (void)state;
    assert_true(fd >= 0);
    close(fd);
    assert_non_null(buf);
    assert_int_equal(vimg_create("qcow2", path, "size=1M", 0), 0);
    img = vimg_open(path, "qcow2", VIMG_OPEN_RDWR);
    assert_non_null(img);
    fill(buf, 65536, 0, &seed);
    fill(buf + 65536, 65536, 1, &seed);
    assert_int_equal(vimg_pwrite(img, buf, 2 * 65536, 0,
                                 VIMG_REQ_COMPRESSED), 0);
    assert_int_equal(vimg_block_status(img, 0, 65536, &e), 0);
    assert_true(e.flags & VIMG_EXT_COMPRESSED);
    assert_false(e.flags & VIMG_EXT_OFFSET);
    assert_int_equal(vimg_block_status(img, 65536, 65536, &e), 0);
    assert_false(e.flags & VIMG_EXT_COMPRESSED);
    assert_true(e.flags & VIMG_EXT_OFFSET);
    /* Misaligned compressed writes are refused. */
    assert_int_equal(vimg_pwrite(img, buf, 4096, 0, VIMG_REQ_COMPRESSED), -1);
    assert_int_equal(vimg_get_errno(), EINVAL);
    assert_int_equal(vimg_pwrite(img, buf, 65536, 512, VIMG_REQ_COMPRESSED),
                     -1);
    assert_int_equal(vimg_get_errno(), EINVAL);
    assert_int_equal(vimg_close(img), 0);
    qemu_check(path);

    /* Raw images do not compress. */
    assert_int_equal(truncate(path, 1 << 20), 0);
    img = vimg_open(path, "raw", VIMG_OPEN_RDWR);
    assert_non_null(img);
    assert_int_equal(vimg_pwrite(img, buf, 65536, 0, VIMG_REQ_COMPRESSED),
                     -1);
    assert_int_equal(vimg_get_errno(), ENOTSUP);
    assert_int_equal(vimg_close(img), 0);
    unlink(path);
    free(buf);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_deflate_64k),
        cmocka_unit_test(test_threads_zstd_4k),
        cmocka_unit_test(test_threads_extended_l2),
        cmocka_unit_test(test_threads_narrow_refcounts),
        cmocka_unit_test(test_block_status_and_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
