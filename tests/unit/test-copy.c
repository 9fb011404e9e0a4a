/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for lib/copy.c, the copy engine, with in-memory nodes.
 *
 * A "mem" protocol driver keeps an image in memory with a per-unit
 * hole map (holes read as zero and are reported by block_status), logs
 * the offsets of the writes it receives and counts reads that touch a
 * hole.  A "memfmt" format driver over a mem node adds a backing chain
 * (allocated units only), so the depth filter and DIFF_AGAINST can be
 * checked against a flattened shadow buffer.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cleanup.h"
#include "copy.h"
#include "io.h"
#include "node.h"

#define UNIT 65536u
#define SIZE (64u * UNIT) /* 4 MiB */
#define NU (SIZE / UNIT)

struct mem {
    uint8_t data[SIZE];
    bool alloc[NU];       /* unit holds data (else a hole / unallocated) */
    pthread_mutex_t lock; /* protects the log */
    uint64_t log[4 * NU + 64];
    unsigned nlog;
    unsigned hole_reads;
};

static int
mem_block_status(struct node *n, bool want_zero, uint64_t off,
                 uint64_t count, struct extent *e)
{
    struct mem *m = n->state;
    uint64_t u = off / UNIT, len = (u + 1) * UNIT - off;
    bool a = m->alloc[u];

    (void)want_zero;
    while (off + len < off + count && (off + len) / UNIT < NU &&
           m->alloc[(off + len) / UNIT] == a)
        len += UNIT;
    e->length = len < count ? len : count;
    if (n->drv->kind == DRV_PROTOCOL)
        e->flags = EXT_ALLOCATED | EXT_WRITABLE | (a ? EXT_DATA : EXT_ZERO);
    else
        e->flags = a ? EXT_ALLOCATED | EXT_DATA | EXT_WRITABLE : 0;
    return 0;
}

static int
mem_pread(struct node *n, void *buf, uint64_t count, uint64_t off)
{
    struct mem *m = n->state;

    for (uint64_t u = off / UNIT; u * UNIT < off + count; u++)
        if (!m->alloc[u])
            __atomic_add_fetch(&m->hole_reads, 1, __ATOMIC_RELAXED);
    memcpy(buf, m->data + off, count);
    return 0;
}

static void
mark(struct mem *m, uint64_t off, uint64_t count, bool a)
{
    for (uint64_t u = off / UNIT; u * UNIT < off + count; u++)
        m->alloc[u] = a;
}

static int
mem_pwrite(struct node *n, const void *buf, uint64_t count, uint64_t off,
           unsigned flags)
{
    struct mem *m = n->state;

    (void)flags;
    memcpy(m->data + off, buf, count);
    mark(m, off, count, true);
    pthread_mutex_lock(&m->lock);
    m->log[m->nlog++] = off;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int
mem_pwrite_zeroes(struct node *n, uint64_t off, uint64_t count,
                  unsigned flags)
{
    struct mem *m = n->state;

    (void)flags;
    memset(m->data + off, 0, count);
    /* A format layer keeps zeroes allocated (they hide the backing). */
    mark(m, off, count, n->drv->kind != DRV_PROTOCOL);
    pthread_mutex_lock(&m->lock);
    m->log[m->nlog++] = off;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int
mem_open(struct node *n, json_t *opts)
{
    (void)n;
    (void)opts;
    return 0;
}

static const struct driver mem_drv = {
    .name = "mem", .kind = DRV_PROTOCOL, .state_size = sizeof(struct mem),
    .open = mem_open, .pread = mem_pread, .pwrite = mem_pwrite,
    .pwrite_zeroes = mem_pwrite_zeroes, .block_status = mem_block_status,
};
static const struct driver memfmt_drv = {
    .name = "memfmt", .kind = DRV_FORMAT, .state_size = sizeof(struct mem),
    .open = mem_open, .pread = mem_pread, .pwrite = mem_pwrite,
    .pwrite_zeroes = mem_pwrite_zeroes, .block_status = mem_block_status,
};

static struct node *
mem_new(const struct driver *drv, unsigned seed, unsigned every)
{
    struct node *n = node_new(drv, NODE_RDWR);
    struct mem *m = n->state;

    n->size = SIZE;
    n->cow_align = n->serialise_align = drv->kind == DRV_FORMAT ? UNIT : 1;
    pthread_mutex_init(&m->lock, NULL);
    for (unsigned u = 0; seed && u < NU; u++) {
        if ((u * 7 + seed) % every)
            continue;
        for (unsigned i = 0; i < UNIT; i++)
            m->data[u * UNIT + i] = (uint8_t)(seed + u + i / 512);
        m->alloc[u] = true;
    }
    return n;
}

static struct mem *
mem_of(struct node *n)
{
    return n->state;
}

/* What N reads through its chain. */
static void
flatten(struct node *n, uint8_t *out)
{
    assert_int_equal(node_pread(n, out, SIZE, 0), 0);
}

static struct copy_params
params(struct node *src, struct node *dst)
{
    struct copy_params p = { .src = src, .dst = dst, .length = SIZE,
                             .max_depth = 1 << 30, .sparse_size = 4096,
                             .workers = 8 };
    return p;
}

static void
test_copy_never_reads_holes(void **state)
{
    struct node *src = mem_new(&mem_drv, 3, 3);
    struct node *dst = mem_new(&mem_drv, 0, 1);
    struct copy_params p = params(src, dst);

    (void)state;
    p.target_is_zero = true;
    assert_int_equal(copy_run(&p), 0);
    assert_int_equal(mem_of(src)->hole_reads, 0);
    assert_memory_equal(mem_of(src)->data, mem_of(dst)->data, SIZE);
    /* Holes stay holes in the target. */
    for (unsigned u = 0; u < NU; u++)
        assert_int_equal(mem_of(dst)->alloc[u], mem_of(src)->alloc[u]);
    node_unref(src);
    node_unref(dst);
}

static void
test_copy_zeroes_a_dirty_target(void **state)
{
    struct node *src = mem_new(&mem_drv, 5, 2);
    struct node *dst = mem_new(&mem_drv, 0, 1);

    (void)state;
    memset(mem_of(dst)->data, 0xff, SIZE);
    /* Zeroes inside data: a 4k run and a whole unit. */
    memset(mem_of(src)->data + 4 * UNIT + 8192, 0, 4096);
    memset(mem_of(src)->data + 6 * UNIT, 0, UNIT);
    for (unsigned w = 1; w <= 16; w *= 4) {
        struct copy_params p = params(src, dst);

        p.workers = w;
        memset(mem_of(dst)->data, 0xff, SIZE);
        assert_int_equal(copy_run(&p), 0);
        assert_memory_equal(mem_of(src)->data, mem_of(dst)->data, SIZE);
    }
    node_unref(src);
    node_unref(dst);
}

static void
test_copy_ordered_writes(void **state)
{
    struct node *src = mem_new(&mem_drv, 1, 2); /* data, hole, data... */
    struct node *dst = mem_new(&mem_drv, 0, 1);
    struct copy_params p = params(src, dst);
    struct mem *m = mem_of(dst);

    (void)state;
    p.sparse_size = 0;
    p.workers = 16;
    assert_int_equal(copy_run(&p), 0);
    assert_true(m->nlog >= NU / 2);
    for (unsigned i = 1; i < m->nlog; i++)
        assert_true(m->log[i] > m->log[i - 1]);
    assert_memory_equal(mem_of(src)->data, m->data, SIZE);
    node_unref(src);
    node_unref(dst);
}

/* top (memfmt) over base (memfmt): depth 0 = top, 1 = base, 2 = none. */
static struct node *
chain_new(void)
{
    struct node *top = mem_new(&memfmt_drv, 9, 4);
    struct node *base = mem_new(&memfmt_drv, 4, 2);

    top->backing = base;
    return top;
}

static void
test_copy_depth_filter(void **state)
{
    struct node *top = chain_new();
    struct node *dst = mem_new(&mem_drv, 0, 1);
    struct copy_params p = params(top, dst);
    struct mem *t = mem_of(top), *b = mem_of(top->backing);
    CLEANUP_FREE uint8_t *flat = malloc(SIZE);

    (void)state;
    p.target_is_zero = true;
    p.min_depth = 1; /* only what the base layer provides */
    p.max_depth = 2;
    assert_int_equal(copy_run(&p), 0);
    flatten(top, flat);
    for (unsigned u = 0; u < NU; u++) {
        const uint8_t *d = mem_of(dst)->data + u * UNIT;

        if (!t->alloc[u] && b->alloc[u])
            assert_memory_equal(d, flat + u * UNIT, UNIT);
        else
            assert_false(mem_of(dst)->alloc[u]);
    }
    node_unref(top);
    node_unref(dst);
}

static void
test_copy_diff_against(void **state)
{
    struct node *src = chain_new();
    struct node *dst = mem_new(&memfmt_drv, 0, 1);
    struct node *nb = mem_new(&memfmt_drv, 4, 2); /* = src's base */
    struct copy_params p = params(src, dst);
    CLEANUP_FREE uint8_t *want = malloc(SIZE), *got = malloc(SIZE);

    (void)state;
    /* The new backing differs from src's base in unit 2 and unit 5. */
    memset(mem_of(nb)->data + 2 * UNIT, 0x5a, UNIT);
    mem_of(nb)->alloc[2] = true;
    memset(mem_of(nb)->data + 5 * UNIT + 100, 0x77, 10);
    mem_of(nb)->alloc[5] = true;
    dst->backing = nb;
    p.diff_against = nb;
    assert_int_equal(copy_run(&p), 0);
    flatten(src, want);
    flatten(dst, got);
    assert_memory_equal(want, got, SIZE);
    /* DST's own layer holds only the units that differ. */
    for (unsigned u = 0; u < NU; u++) {
        bool differs = memcmp(want + u * UNIT, mem_of(nb)->data + u * UNIT,
                              UNIT) != 0;
        assert_int_equal(mem_of(dst)->alloc[u], differs);
    }
    node_unref(src);
    node_unref(dst);
}

static void
on_progress(void *opaque, uint64_t done, uint64_t total)
{
    uint64_t *max = opaque;

    assert_true(done <= total);
    uint64_t cur = __atomic_load_n(max, __ATOMIC_RELAXED);

    while (done > cur && !__atomic_compare_exchange_n(max, &cur, done, false,
                                                      __ATOMIC_RELAXED,
                                                      __ATOMIC_RELAXED))
        ;
}

static void
test_copy_offsets_and_progress_cb(void **state)
{
    struct node *src = mem_new(&mem_drv, 2, 1);
    struct node *dst = mem_new(&mem_drv, 0, 1);
    struct copy_params p = params(src, dst);
    uint64_t max = 0;

    (void)state;
    p.src_off = UNIT + 512;
    p.dst_off = 3 * UNIT;
    p.length = 10 * UNIT + 1000;
    p.out_of_order = true;
    p.progress = on_progress;
    p.opaque = &max;
    assert_int_equal(copy_run(&p), 0);
    assert_memory_equal(mem_of(src)->data + p.src_off,
                        mem_of(dst)->data + p.dst_off, p.length);
    assert_int_equal(max, p.length);
    for (unsigned i = 0; i < p.dst_off; i++)
        assert_int_equal(mem_of(dst)->data[i], 0);
    /* Past the end of an image: EINVAL, nothing written. */
    p.length = SIZE;
    assert_int_equal(copy_run(&p), -1);
    assert_int_equal(errno, EINVAL);
    node_unref(src);
    node_unref(dst);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_never_reads_holes),
        cmocka_unit_test(test_copy_zeroes_a_dirty_target),
        cmocka_unit_test(test_copy_ordered_writes),
        cmocka_unit_test(test_copy_depth_filter),
        cmocka_unit_test(test_copy_diff_against),
        cmocka_unit_test(test_copy_offsets_and_progress_cb),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
