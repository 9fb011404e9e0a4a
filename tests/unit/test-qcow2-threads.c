/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The qcow2 driver under concurrent callers.  Several threads write
 * interleaved blocks (thread i owns block b when b % THREADS == i), so
 * they share clusters, L2 tables and refcount blocks and race on every
 * allocation, with zero writes and discards mixed in.  Afterwards every
 * block must hold what its owner wrote last, and the image must pass
 * `qemu-img check` (when qemu-img is installed) after a clean close.
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
#define BLOCK 4096u
#define NBLOCKS 2048u /* 8 MiB of guest space */
#define OPS 1500

struct worker {
    vimg_node *img;
    unsigned id;
    unsigned seed;
    uint8_t last[NBLOCKS]; /* pattern per owned block; 0 = zeroes */
    int failed;
};

static void *
work(void *arg)
{
    struct worker *w = arg;
    uint8_t buf[BLOCK];

    for (int i = 0; i < OPS && !w->failed; i++) {
        unsigned b = (rand_r(&w->seed) % (NBLOCKS / THREADS)) * THREADS +
                     w->id;
        unsigned op = rand_r(&w->seed) % 10;
        uint8_t pat = (uint8_t)(1 + rand_r(&w->seed) % 255);

        if (op < 7) {
            memset(buf, pat, BLOCK);
            if (vimg_pwrite(w->img, buf, BLOCK, (uint64_t)b * BLOCK, 0))
                w->failed = 1;
            w->last[b] = pat;
        } else if (op < 9) {
            if (vimg_pwrite_zeroes(w->img, (uint64_t)b * BLOCK, BLOCK,
                                   VIMG_REQ_MAY_UNMAP))
                w->failed = 1;
            w->last[b] = 0;
        } else {
            if (vimg_pread(w->img, buf, BLOCK, (uint64_t)b * BLOCK, 0))
                w->failed = 1;
            for (unsigned k = 0; k < BLOCK; k++)
                if (buf[k] != w->last[b])
                    w->failed = 2;
        }
    }
    return NULL;
}

static void
run_threads(const char *opts)
{
    char path[] = "/tmp/vimg-test-threads-XXXXXX";
    struct worker *w = calloc(THREADS, sizeof *w);
    pthread_t t[THREADS];
    uint8_t buf[BLOCK];
    vimg_node *img;
    char cmd[256];
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(vimg_create("qcow2", path, opts, 0), 0);
    img = vimg_open(path, "qcow2", VIMG_OPEN_RDWR);
    assert_non_null(img);
    for (unsigned i = 0; i < THREADS; i++) {
        w[i].img = img;
        w[i].id = i;
        w[i].seed = 77 + i;
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failed, 0);
    }
    assert_int_equal(vimg_close(img), 0);

    img = vimg_open(path, "qcow2", 0);
    assert_non_null(img);
    for (unsigned b = 0; b < NBLOCKS; b++) {
        uint8_t want = w[b % THREADS].last[b];

        assert_int_equal(vimg_pread(img, buf, BLOCK, (uint64_t)b * BLOCK, 0),
                         0);
        for (unsigned k = 0; k < BLOCK; k++)
            if (buf[k] != want)
                fail_msg("block %u byte %u: %u, want %u", b, k, buf[k], want);
    }
    assert_int_equal(vimg_close(img), 0);
    if (system("command -v qemu-img >/dev/null") == 0) {
        snprintf(cmd, sizeof cmd, "qemu-img check -q %s", path);
        assert_int_equal(system(cmd), 0);
    }
    unlink(path);
    free(w);
}

static void
test_threads_64k_clusters(void **state)
{
    (void)state;
    run_threads("size=8M");
}

static void
test_threads_small_clusters_narrow_refcounts(void **state)
{
    /* 512 B clusters, 1-bit refcounts: refblocks and L2 tables galore. */
    (void)state;
    run_threads("size=8M,cluster_size=512,refcount_bits=1");
}

static void
test_threads_extended_l2(void **state)
{
    (void)state;
    run_threads("size=8M,cluster_size=128k,extended_l2=on");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_64k_clusters),
        cmocka_unit_test(test_threads_small_clusters_narrow_refcounts),
        cmocka_unit_test(test_threads_extended_l2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
