/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Write tracking in persistent qcow2 bitmaps, through the library API.
 *
 * Shadow model: each bitmap has a bool per granule.  Random writes, zero
 * writes and discards at unaligned offsets mark the granules they touch
 * in every enabled bitmap's model (discards the whole request, as QEMU
 * does); the content the driver's bitmap_get returns must equal the
 * model, while live, after bitmap_op actions taken mid-stream (add,
 * disable, enable, clear, merge), and after a close and reopen, which
 * must also leave no bitmap in_use.  A threaded test has writers race a
 * thread that clears, enables and disables a bitmap: every write that
 * started after an enable returned and ended before the next disable
 * began must be dirty, and a disabled bitmap must not change.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "vimg.h"
#include "bitmap.h"
#include "node.h"
#include "qcow2/qcow2.h"

/* Not a multiple of any granularity used. */
#define VSIZE ((8ull << 20) + 1536)
#define MAXLEN (200u << 10)
#define NOPS 1500

static char tmpdir[] = "/tmp/test-qcow2-bitmaps.XXXXXX";
static char img[sizeof tmpdir + 16];
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

/* ---- Models ---- */

struct model {
    const char *name;
    uint32_t gran;
    bool enabled;
    bool *bit; /* one per granule */
};

static size_t
ngran(const struct model *m)
{
    return (size_t)((VSIZE + m->gran - 1) / m->gran);
}

static void
model_init(struct model *m, const char *name, uint32_t gran, bool enabled)
{
    m->name = name;
    m->gran = gran;
    m->enabled = enabled;
    m->bit = calloc(ngran(m), 1);
    assert_non_null(m->bit);
}

static void
model_mark(struct model *m, uint64_t off, uint64_t len)
{
    if (!m->enabled || !len)
        return;
    for (uint64_t g = off / m->gran; g <= (off + len - 1) / m->gran; g++)
        m->bit[g] = true;
}

/* ---- The image ---- */

static vimg_node *
must_open(void)
{
    vimg_node *n = vimg_open(img, "qcow2", VIMG_OPEN_RDWR);
    if (!n)
        fail_msg("open %s: %s", img, vimg_get_error());
    return n;
}

static void
make_image(const char *opts)
{
    char o[128];

    snprintf(o, sizeof o, "size=%llu,%s", (unsigned long long)VSIZE, opts);
    unlink(img);
    if (vimg_create("qcow2", img, o, 0) == -1)
        fail_msg("create: %s", vimg_get_error());
}

static void
op(vimg_node *h, enum bitmap_op_kind kind, const char *name, uint32_t gran,
   bool disabled, const char *src)
{
    struct bitmap_action a = {.op = kind,
                              .name = name,
                              .granularity = gran,
                              .disabled = disabled,
                              .src_name = src};
    struct node *n = node_of(h);

    if (n->drv->bitmap_op(n, &a) == -1)
        fail_msg("bitmap op %d on %s: %s", kind, name, vimg_get_error());
}

/* BITMAP's content equals model M. */
static void
check_model(vimg_node *h, const struct model *m)
{
    struct node *n = node_of(h);
    struct bitmap *bm = n->drv->bitmap_get(n, m->name);

    if (!bm)
        fail_msg("bitmap_get %s: %s", m->name, vimg_get_error());
    assert_int_equal(bitmap_size(bm), VSIZE);
    assert_int_equal(bitmap_granularity(bm), m->gran);
    for (size_t g = 0; g < ngran(m); g++)
        if (bitmap_get(bm, (uint64_t)g * m->gran) != m->bit[g])
            fail_msg("bitmap %s granule %zu: %d, model %d (seed %llx)", m->name,
                     g, !m->bit[g], m->bit[g], (unsigned long long)rng_state);
    bitmap_free(bm);
}

static void
check_all(vimg_node *h, struct model *ms, size_t nm)
{
    for (size_t i = 0; i < nm; i++)
        check_model(h, &ms[i]);
}

/* qemu-img check finds nothing wrong (when installed). */
static void
qemu_check(void)
{
    char cmd[256];

    if (system("command -v qemu-img >/dev/null 2>&1") != 0)
        return;
    snprintf(cmd, sizeof cmd, "qemu-img check -q '%s'", img);
    if (system(cmd) != 0)
        fail_msg("qemu-img check %s failed", img);
}

/* No bitmap of H is in_use (as loaded from disk at open). */
static void
check_not_in_use(vimg_node *h)
{
    struct qcow2_state *s = node_of(h)->state;

    for (uint32_t i = 0; i < s->nb_bitmaps; i++)
        if (s->bitmaps[i].flags & QCOW2_BME_IN_USE)
            fail_msg("bitmap %s is in use", s->bitmaps[i].name);
}

/* One random write, zero write or discard; marks the models. */
static void
random_request(vimg_node *h, struct model *ms, size_t nm)
{
    static uint8_t buf[MAXLEN];
    uint64_t len = 1 + rnd() % MAXLEN, off;
    unsigned kind = rnd() % 4;
    int r;

    if (rnd() % 8 == 0)
        len = 1 + rnd() % 600; /* small, often inside one granule */
    off = rnd() % (VSIZE - len + 1);
    if (rnd() % 16 == 0)
        off = VSIZE - len; /* up to the last byte */
    if (kind <= 1) {
        memset(buf, (int)(rnd() | 1), len);
        r = vimg_pwrite(h, buf, len, off, 0);
    } else if (kind == 2) {
        r = vimg_pwrite_zeroes(h, off, len, rnd() % 2 ? VIMG_REQ_MAY_UNMAP : 0);
    } else {
        r = vimg_discard(h, off, len, 0);
    }
    if (r == -1)
        fail_msg("request %u %llu+%llu: %s", kind, (unsigned long long)off,
                 (unsigned long long)len, vimg_get_error());
    for (size_t i = 0; i < nm; i++)
        model_mark(&ms[i], off, len);
}

static void
model_free(struct model *ms, size_t nm)
{
    for (size_t i = 0; i < nm; i++)
        free(ms[i].bit);
}

/* The first change makes the bitmaps live.  Make it a discard of less
 * than a cluster: it reaches no driver callback but prepare_write, and
 * must still be marked (as QEMU does). */
static void
first_write(vimg_node *h, struct model *ms, size_t nm)
{
    assert_int_equal(vimg_discard(h, 70 * 1024, 8 * 1024, 0), 0);
    for (size_t i = 0; i < nm; i++)
        model_mark(&ms[i], 70 * 1024, 8 * 1024);
}

/* ---- Tests ---- */

static void
test_tracking_matches_model(void **state)
{
    struct model ms[4];
    vimg_node *h;

    (void)state;
    rng_state = 0x9e3779b97f4a7c15ull;
    make_image("cluster_size=65536");
    h = must_open();
    op(h, BITMAP_OP_ADD, "g512", 512, false, NULL);
    op(h, BITMAP_OP_ADD, "g4k", 4096, false, NULL);
    op(h, BITMAP_OP_ADD, "g1m", 1 << 20, false, NULL);
    op(h, BITMAP_OP_ADD, "off", 65536, true, NULL);
    model_init(&ms[0], "g512", 512, true);
    model_init(&ms[1], "g4k", 4096, true);
    model_init(&ms[2], "g1m", 1 << 20, true);
    model_init(&ms[3], "off", 65536, false);
    first_write(h, ms, 4);
    for (int i = 0; i < NOPS; i++) {
        random_request(h, ms, 4);
        if (i % 300 == 0)
            check_all(h, ms, 4);
    }
    check_all(h, ms, 4);
    assert_int_equal(vimg_close(h), 0);
    h = must_open();
    check_not_in_use(h);
    check_all(h, ms, 4);
    assert_int_equal(vimg_close(h), 0);
    qemu_check();
    model_free(ms, 4);
}

static void
test_ops_while_live(void **state)
{
    struct model ms[4];
    vimg_node *h;

    (void)state;
    rng_state = 0x1234567887654321ull;
    make_image("cluster_size=4096");
    h = must_open();
    op(h, BITMAP_OP_ADD, "a", 4096, false, NULL);
    model_init(&ms[0], "a", 4096, true);
    first_write(h, ms, 1);
    for (int i = 0; i < 200; i++)
        random_request(h, ms, 1);
    check_model(h, &ms[0]);

    /* Added mid-stream: clean, then tracking. */
    op(h, BITMAP_OP_ADD, "late", 65536, false, NULL);
    model_init(&ms[1], "late", 65536, true);
    check_model(h, &ms[1]);
    for (int i = 0; i < 200; i++)
        random_request(h, ms, 2);
    check_all(h, ms, 2);

    /* Disabled: unchanged; enabled again: tracking. */
    op(h, BITMAP_OP_DISABLE, "a", 0, false, NULL);
    ms[0].enabled = false;
    for (int i = 0; i < 100; i++)
        random_request(h, ms, 2);
    check_all(h, ms, 2);
    op(h, BITMAP_OP_ENABLE, "a", 0, false, NULL);
    ms[0].enabled = true;
    for (int i = 0; i < 100; i++)
        random_request(h, ms, 2);
    check_all(h, ms, 2);

    /* Cleared: only later writes. */
    op(h, BITMAP_OP_CLEAR, "late", 0, false, NULL);
    memset(ms[1].bit, 0, ngran(&ms[1]));
    for (int i = 0; i < 50; i++)
        random_request(h, ms, 2);
    check_all(h, ms, 2);

    /* Merge into a disabled bitmap (same and other granularity): it
     * gets the union and stays frozen; the enabled target keeps
     * tracking after the merge replaced its content. */
    op(h, BITMAP_OP_ADD, "m", 4096, true, NULL);
    op(h, BITMAP_OP_MERGE, "m", 0, false, "a");
    model_init(&ms[2], "m", 4096, false);
    memcpy(ms[2].bit, ms[0].bit, ngran(&ms[0]));
    op(h, BITMAP_OP_ADD, "big", 1 << 20, false, NULL);
    op(h, BITMAP_OP_MERGE, "big", 0, false, "late");
    model_init(&ms[3], "big", 1 << 20, true);
    for (size_t g = 0; g < ngran(&ms[1]); g++)
        if (ms[1].bit[g])
            model_mark(&ms[3], (uint64_t)g * 65536, 65536);
    check_all(h, ms, 4);
    for (int i = 0; i < 200; i++)
        random_request(h, ms, 4);
    check_all(h, ms, 4);

    /* Removed while live: no longer there, the others unaffected. */
    op(h, BITMAP_OP_REMOVE, "late", 0, false, NULL);
    for (int i = 0; i < 50; i++)
        random_request(h, ms, 4);
    {
        struct node *n = node_of(h);
        assert_null(n->drv->bitmap_get(n, "late"));
        assert_int_equal(n->dirty.len, 2); /* a and big */
    }
    free(ms[1].bit);
    ms[1] = ms[3];
    check_all(h, ms, 3);
    assert_int_equal(vimg_close(h), 0);

    h = must_open();
    check_not_in_use(h);
    check_all(h, ms, 3);
    assert_int_equal(vimg_close(h), 0);
    model_free(ms, 3);
}

/* ---- Concurrency ---- */

#define WRITERS 4
#define ROUNDS 40
#define BLK 4096u

struct rec {
    uint64_t off;
    unsigned gen;
};

static struct {
    vimg_node *h;
    unsigned state; /* gen << 1 | enabled; atomic */
    bool stop;      /* atomic */
    pthread_mutex_t log_lock;
    struct rec *log; /* writes inside an enabled window */
    size_t nlog, cap;
    bool failed;
} cc;

static void *
writer(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    uint8_t buf[BLK];

    memset(buf, (int)seed, sizeof buf);
    while (!__atomic_load_n(&cc.stop, __ATOMIC_SEQ_CST)) {
        uint64_t off = (uint64_t)(rand_r(&seed) % (VSIZE / BLK)) * BLK;
        unsigned s1 = __atomic_load_n(&cc.state, __ATOMIC_SEQ_CST), s2;
        int r = rand_r(&seed) % 4 == 0
                    ? vimg_pwrite_zeroes(cc.h, off, BLK, VIMG_REQ_MAY_UNMAP)
                    : vimg_pwrite(cc.h, buf, BLK, off, 0);

        if (r == -1)
            __atomic_store_n(&cc.failed, true, __ATOMIC_SEQ_CST);
        pthread_mutex_lock(&cc.log_lock);
        s2 = __atomic_load_n(&cc.state, __ATOMIC_SEQ_CST);
        if (s1 == s2 && (s1 & 1)) {
            if (cc.nlog == cc.cap) {
                cc.cap = cc.cap ? 2 * cc.cap : 1024;
                cc.log = realloc(cc.log, cc.cap * sizeof *cc.log);
                if (!cc.log)
                    abort();
            }
            cc.log[cc.nlog++] = (struct rec){off, s1 >> 1};
        }
        pthread_mutex_unlock(&cc.log_lock);
    }
    return NULL;
}

static struct bitmap *
must_get(const char *name)
{
    struct node *n = node_of(cc.h);
    struct bitmap *bm = n->drv->bitmap_get(n, name);

    if (!bm)
        fail_msg("bitmap_get %s: %s", name, vimg_get_error());
    return bm;
}

/* One round: clear+enable, let writers run, disable, verify. */
static void
control_round(unsigned gen)
{
    struct bitmap_action en = {.op = BITMAP_OP_ENABLE, .name = "t"};
    struct bitmap_action cl = {.op = BITMAP_OP_CLEAR, .name = "t", .next = &en};
    struct node *n = node_of(cc.h);
    struct bitmap *b1, *b2;

    assert_int_equal(n->drv->bitmap_op(n, &cl), 0);
    __atomic_store_n(&cc.state, gen << 1 | 1, __ATOMIC_SEQ_CST);
    usleep(2000 + gen * 50);
    __atomic_store_n(&cc.state, gen << 1, __ATOMIC_SEQ_CST);
    op(cc.h, BITMAP_OP_DISABLE, "t", 0, false, NULL);
    b1 = must_get("t");
    pthread_mutex_lock(&cc.log_lock);
    for (size_t i = 0; i < cc.nlog; i++)
        if (cc.log[i].gen == gen && !bitmap_get(b1, cc.log[i].off))
            fail_msg("round %u: write at %llu lost", gen,
                     (unsigned long long)cc.log[i].off);
    pthread_mutex_unlock(&cc.log_lock);
    /* Disabled: writes keep coming, the bitmap does not change. */
    usleep(1000);
    b2 = must_get("t");
    assert_int_equal(bitmap_count(b1), bitmap_count(b2));
    for (uint64_t off = 0; off < VSIZE; off += BLK)
        assert_int_equal(bitmap_get(b1, off), bitmap_get(b2, off));
    bitmap_free(b1);
    bitmap_free(b2);
}

static void
test_concurrent_writers_and_ops(void **state)
{
    pthread_t t[WRITERS];
    struct bitmap *all;
    size_t nall = 0;

    (void)state;
    make_image("cluster_size=65536");
    memset(&cc, 0, sizeof cc);
    pthread_mutex_init(&cc.log_lock, NULL);
    cc.h = must_open();
    op(cc.h, BITMAP_OP_ADD, "t", BLK, true, NULL);
    op(cc.h, BITMAP_OP_ADD, "all", 65536, false, NULL);
    for (uintptr_t i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, writer, (void *)(i + 1)),
                         0);
    for (unsigned g = 1; g <= ROUNDS; g++)
        control_round(g);
    __atomic_store_n(&cc.stop, true, __ATOMIC_SEQ_CST);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(t[i], NULL);
    assert_false(cc.failed);
    assert_true(cc.nlog > 0);
    /* "all" was never disabled: every logged write is in it. */
    all = must_get("all");
    for (size_t i = 0; i < cc.nlog; i++)
        nall += bitmap_get(all, cc.log[i].off);
    assert_int_equal(nall, cc.nlog);
    bitmap_free(all);
    assert_int_equal(vimg_close(cc.h), 0);
    cc.h = must_open();
    check_not_in_use(cc.h);
    assert_int_equal(vimg_close(cc.h), 0);
    qemu_check();
    free(cc.log);
    pthread_mutex_destroy(&cc.log_lock);
}

static int
setup_dir(void **state)
{
    (void)state;
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(img, sizeof img, "%s/t.qcow2", tmpdir);
    return 0;
}

static int
teardown_dir(void **state)
{
    (void)state;
    unlink(img);
    return rmdir(tmpdir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tracking_matches_model),
        cmocka_unit_test(test_ops_while_live),
        cmocka_unit_test(test_concurrent_writers_and_ops),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
