/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for lib/io.c, the request path, against a shadow model.
 *
 * A fake format driver ("fake") keeps its layer in memory with a
 * per-unit allocation map and checks the driver contract of node.h:
 * a write that touches an unallocated unit must cover it whole (io.c
 * widened it and filled it from the backing chain).  Random writes,
 * zero writes and reads over a raw backing file are compared byte for
 * byte with a flat shadow buffer.
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
#include <unistd.h>

#include <cmocka.h>

#include "io.h"
#include "node.h"
#include "options.h"

#define UNIT 4096u
#define SIZE (1u << 20)
#define BACKING_SIZE (SIZE - 3 * UNIT - 100) /* shorter than the top */

struct fake {
    uint8_t data[SIZE];
    bool alloc[SIZE / UNIT + 1];
    bool zero[SIZE / UNIT + 1];
    unsigned contract_violations;
    int busy[SIZE / UNIT + 1];  /* writers inside each unit (atomic) */
    int overlap_violations;     /* atomic */
    bool slow;                  /* sleep inside pwrite */
};

static int
fake_block_status(struct node *n, bool want_zero, uint64_t off,
                  uint64_t count, struct extent *e)
{
    struct fake *f = n->state;
    uint64_t u = off / UNIT, end = off + count, len;
    bool a = f->alloc[u], z = f->zero[u];

    (void)want_zero;
    len = (u + 1) * UNIT - off;
    while (off + len < end && f->alloc[(off + len) / UNIT] == a &&
           f->zero[(off + len) / UNIT] == z)
        len += UNIT;
    e->length = len < count ? len : count;
    e->flags = a ? (EXT_ALLOCATED | (z ? EXT_ZERO : EXT_DATA | EXT_WRITABLE))
                 : 0;
    return 0;
}

static int
fake_pread(struct node *n, void *buf, uint64_t count, uint64_t off)
{
    struct fake *f = n->state;

    memcpy(buf, f->data + off, count);
    return 0;
}

static int
fake_pwrite(struct node *n, const void *buf, uint64_t count, uint64_t off,
            unsigned flags)
{
    struct fake *f = n->state;
    uint64_t end = off + count;

    (void)flags;
    for (uint64_t u = off / UNIT; u * UNIT < end; u++)
        if (__atomic_add_fetch(&f->busy[u], 1, __ATOMIC_SEQ_CST) > 1)
            __atomic_add_fetch(&f->overlap_violations, 1, __ATOMIC_SEQ_CST);
    if (f->slow)
        usleep(50);
    for (uint64_t u = off / UNIT; u * UNIT < end; u++) {
        uint64_t ustart = u * UNIT, uend = ustart + UNIT;

        if (uend > n->size)
            uend = n->size;
        if ((!f->alloc[u] || f->zero[u]) && (off > ustart || end < uend))
            f->contract_violations++;
        f->alloc[u] = true;
        f->zero[u] = false;
    }
    memcpy(f->data + off, buf, count);
    for (uint64_t u = off / UNIT; u * UNIT < end; u++)
        __atomic_sub_fetch(&f->busy[u], 1, __ATOMIC_SEQ_CST);
    return 0;
}

static int
fake_pwrite_zeroes(struct node *n, uint64_t off, uint64_t count,
                   unsigned flags)
{
    struct fake *f = n->state;

    (void)flags;
    if (off % UNIT || (count % UNIT && off + count != n->size))
        f->contract_violations++;
    for (uint64_t u = off / UNIT; u * UNIT < off + count; u++)
        f->alloc[u] = f->zero[u] = true;
    memset(f->data + off, 0, count);
    return 0;
}

static const struct driver fake_format = {
    .name = "fake",
    .kind = DRV_FORMAT,
    .state_size = sizeof(struct fake),
    .block_status = fake_block_status,
    .pread = fake_pread,
    .pwrite = fake_pwrite,
    .pwrite_zeroes = fake_pwrite_zeroes,
};

struct fixture {
    char path[64];
    struct node *top;
    uint8_t *shadow;
};

static int
setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    uint8_t *pat = malloc(BACKING_SIZE);
    json_t *opts;
    int fd;

    strcpy(fx->path, "/tmp/vimg-test-io-XXXXXX");
    fd = mkstemp(fx->path);
    assert_true(fd >= 0);
    for (size_t i = 0; i < BACKING_SIZE; i++)
        pat[i] = (uint8_t)(i * 7 + i / 4096);
    assert_int_equal(write(fd, pat, BACKING_SIZE), BACKING_SIZE);
    close(fd);

    fx->shadow = calloc(1, SIZE);
    memcpy(fx->shadow, pat, BACKING_SIZE);
    free(pat);

    fx->top = node_new(&fake_format, NODE_RDWR);
    fx->top->size = SIZE - 100; /* a short last unit */
    fx->top->cow_align = fx->top->serialise_align = UNIT;
    opts = opts_from_filename(fx->path, "raw");
    fx->top->backing = node_open(opts, 0);
    json_decref(opts);
    assert_non_null(fx->top->backing);
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;

    node_unref(fx->top);
    unlink(fx->path);
    free(fx->shadow);
    free(fx);
    return 0;
}

static void
assert_matches_shadow(struct fixture *fx)
{
    uint8_t *buf = malloc(fx->top->size);

    assert_int_equal(node_pread(fx->top, buf, fx->top->size, 0), 0);
    assert_memory_equal(buf, fx->shadow, fx->top->size);
    free(buf);
}

static void
test_read_through_backing(void **state)
{
    struct fixture *fx = *state;

    assert_matches_shadow(fx);
}

static void
test_partial_write_copies_from_backing(void **state)
{
    struct fixture *fx = *state;
    struct fake *f = fx->top->state;
    uint8_t buf[100];

    memset(buf, 0xab, sizeof buf);
    assert_int_equal(node_pwrite(fx->top, buf, sizeof buf, 5000, 0), 0);
    memcpy(fx->shadow + 5000, buf, sizeof buf);
    assert_int_equal(f->contract_violations, 0);
    assert_true(f->alloc[1]);
    assert_matches_shadow(fx);
}

static void
test_random_ops_match_shadow(void **state)
{
    struct fixture *fx = *state;
    struct fake *f = fx->top->state;
    uint8_t *buf = malloc(64 * 1024);
    uint64_t size = fx->top->size;

    srandom(42);
    for (int i = 0; i < 3000; i++) {
        uint64_t off = random() % size;
        uint64_t len = 1 + random() % (64 * 1024);

        if (off + len > size)
            len = size - off;
        switch (random() % 3) {
        case 0:
            memset(buf, (int)(random() & 0xff), len);
            assert_int_equal(node_pwrite(fx->top, buf, len, off, 0), 0);
            memcpy(fx->shadow + off, buf, len);
            break;
        case 1:
            assert_int_equal(node_pwrite_zeroes(fx->top, off, len, 0), 0);
            memset(fx->shadow + off, 0, len);
            break;
        default:
            assert_int_equal(node_pread(fx->top, buf, len, off), 0);
            assert_memory_equal(buf, fx->shadow + off, len);
        }
    }
    assert_int_equal(f->contract_violations, 0);
    assert_matches_shadow(fx);
    free(buf);
}

static void
test_block_status_depth(void **state)
{
    struct fixture *fx = *state;
    struct vimg_extent e;
    uint8_t buf[UNIT] = { 1 };

    assert_int_equal(node_pwrite(fx->top, buf, UNIT, 0, 0), 0);
    assert_int_equal(node_block_status(fx->top, true, 0, SIZE - 100, &e), 0);
    assert_int_equal(e.depth, 0);
    assert_int_equal(e.length, UNIT);
    assert_int_equal(node_block_status(fx->top, true, UNIT, UNIT, &e), 0);
    assert_int_equal(e.depth, 1);
    assert_true(e.flags & VIMG_EXT_ALLOCATED);
    /* Past the end of the backing file: unallocated zeroes. */
    assert_int_equal(node_block_status(fx->top, true, SIZE - 200, 50, &e), 0);
    assert_false(e.flags & VIMG_EXT_ALLOCATED);
    assert_true(e.flags & VIMG_EXT_ZERO);
}

static void
test_out_of_range_and_readonly(void **state)
{
    struct fixture *fx = *state;
    uint8_t buf[16] = { 0 };

    assert_int_equal(node_pread(fx->top, buf, 16, fx->top->size - 8), -1);
    assert_int_equal(vimg_get_errno(), EINVAL);
    assert_int_equal(node_pwrite(fx->top, buf, 16, UINT64_MAX - 4, 0), -1);
    assert_int_equal(node_pwrite(fx->top->backing, buf, 16, 0, 0), -1);
    assert_int_equal(vimg_get_errno(), EPERM);
}

static void
test_options_dotted(void **state)
{
    json_t *o = opts_parse_dotted("driver=qcow2,file.filename=a,,b,"
                                  "file.driver=file", NULL);

    (void)state;
    assert_non_null(o);
    assert_string_equal(opts_get_str(o, "driver"), "qcow2");
    assert_string_equal(
        opts_get_str(json_object_get(o, "file"), "filename"), "a,b");
    json_decref(o);
    assert_null(opts_parse_dotted("a=1,a=2", NULL));
    assert_null(opts_parse_dotted("novalue", NULL));
    assert_null(opts_parse_dotted("a=1,a.b=2", NULL));
}

static void
test_parse_size(void **state)
{
    uint64_t v;

    (void)state;
    assert_int_equal(vimg_parse_size("512", &v), 0);
    assert_int_equal(v, 512);
    assert_int_equal(vimg_parse_size("64k", &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(vimg_parse_size("1.5G", &v), 0);
    assert_int_equal(v, 1610612736);
    assert_int_equal(vimg_parse_size("2T", &v), 0);
    assert_int_equal(v, 2ull << 40);
    assert_int_equal(vimg_parse_size("1E", &v), 0);
    assert_int_equal(v, 1ull << 60);
    assert_int_equal(vimg_parse_size("16E", &v), -1);
    assert_int_equal(vimg_parse_size("-1", &v), -1);
    assert_int_equal(vimg_parse_size("1Q", &v), -1);
    assert_int_equal(vimg_parse_size("", &v), -1);
}

struct writer {
    struct node *n;
    unsigned seed;
};

static void *
writer_thread(void *arg)
{
    struct writer *w = arg;
    uint8_t *buf = malloc(4 * UNIT);

    for (int i = 0; i < 400; i++) {
        /* Whole units in a small hot region, so writers collide. */
        uint64_t u = rand_r(&w->seed) % 16, nu = 1 + rand_r(&w->seed) % 4;

        memset(buf, (int)(w->seed & 0xff), nu * UNIT);
        if (node_pwrite(w->n, buf, nu * UNIT, u * UNIT, 0) != 0)
            break;
    }
    free(buf);
    return NULL;
}

static void
test_concurrent_writes_serialise_per_unit(void **state)
{
    struct fixture *fx = *state;
    struct fake *f = fx->top->state;
    struct writer w[4];
    pthread_t t[4];

    f->slow = true;
    for (int i = 0; i < 4; i++) {
        w[i] = (struct writer){ fx->top, 1000u + i };
        pthread_create(&t[i], NULL, writer_thread, &w[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(f->overlap_violations, 0);
    assert_int_equal(f->contract_violations, 0);
    /* Every unit holds the bytes of exactly one write. */
    for (int u = 0; u < 20; u++)
        for (int b = 1; b < (int)UNIT; b++)
            assert_int_equal(f->data[u * UNIT + b], f->data[u * UNIT]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read_through_backing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_partial_write_copies_from_backing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_ops_match_shadow, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_block_status_depth, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_out_of_range_and_readonly, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_concurrent_writes_serialise_per_unit, setup, teardown),
        cmocka_unit_test(test_options_dotted),
        cmocka_unit_test(test_parse_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
