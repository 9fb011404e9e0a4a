/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the backup job (lib/jobs/backup.c): while a writer keeps
 * changing the source, the target ends up equal to the source as it was
 * when the job was created (a shadow copy taken then); an incremental
 * backup copies exactly the bitmap's clusters and leaves the bitmap
 * with only the writes made since; a failing target ends the job with
 * an error and gives the bitmap its bits back.
 */
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

#include "bitmap.h"
#include "checked.h"
#include "io.h"
#include "jobs.h"
#include "node.h"
#include "vimg.h"

#define UNUSED __attribute__((unused))
#define SIZE (16u << 20)
#define CL (64u * 1024)

static char dir[] = "/tmp/test-backup.XXXXXX";
static char path_src[64], path_dst[64];
static uint64_t rng = 0x2545f4914f6cdd1dull;
static struct job_registry reg;
static char last_event_error[256];

static uint64_t
rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void
on_event(void *opaque UNUSED, const char *name, json_t *data)
{
    const char *e = json_string_value(json_object_get(data, "error"));

    if (!strcmp(name, "BLOCK_JOB_COMPLETED") && e)
        snprintf(last_event_error, sizeof last_event_error, "%s", e);
}

static int
setup(void **state UNUSED)
{
    strcpy(dir, "/tmp/test-backup.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path_src, sizeof path_src, "%s/src.qcow2", dir);
    snprintf(path_dst, sizeof path_dst, "%s/dst.qcow2", dir);
    job_registry_init(&reg, on_event, NULL);
    return 0;
}

static int
teardown(void **state UNUSED)
{
    char cmd[128];

    job_cancel_all_sync(&reg);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static struct node *
make(const char *path, const char *opts)
{
    vimg_node *h;

    unlink(path);
    assert_int_equal(vimg_create("qcow2", path, opts, 0), 0);
    h = vimg_open(path, "qcow2", VIMG_OPEN_RDWR);
    assert_non_null(h);
    return node_of(h);
}

static void
fill_random(struct node *n, uint64_t off, uint64_t len, char *shadow)
{
    char *buf = malloc(len);

    for (uint64_t i = 0; i < len; i++)
        buf[i] = (char)rnd();
    assert_int_equal(node_pwrite(n, buf, len, off, 0), 0);
    if (shadow)
        memcpy(shadow + off, buf, len);
    free(buf);
}

static void
wait_gone(const char *id)
{
    for (;;) {
        struct job *j;

        pthread_mutex_lock(&reg.lock);
        j = job_find_locked(&reg, id);
        pthread_mutex_unlock(&reg.lock);
        if (!j)
            return;
        usleep(2000);
    }
}

static bool
job_alive(const char *id)
{
    bool alive;

    pthread_mutex_lock(&reg.lock);
    alive = job_find_locked(&reg, id) != NULL;
    pthread_mutex_unlock(&reg.lock);
    return alive;
}

static void
assert_node_equals(struct node *n, const char *expect)
{
    char *buf = malloc(SIZE);

    assert_int_equal(node_pread(n, buf, SIZE, 0), 0);
    for (uint64_t off = 0; off < SIZE; off += CL)
        if (memcmp(buf + off, expect + off, CL))
            fail_msg("cluster at %llu differs", (unsigned long long)off);
    free(buf);
}

static void
test_backup_full_is_point_in_time_under_writes(void **state UNUSED)
{
    struct node *src = make(path_src, "size=16M");
    struct node *dst = make(path_dst, "size=16M");
    char *t0 = calloc(1, SIZE), *now = calloc(1, SIZE);
    struct backup_params p = { .src = src, .dst = dst,
                               .sync = BACKUP_SYNC_FULL };
    struct job *j;
    int writes = 0;

    /* Half the clusters hold data, the rest reads as zeroes. */
    for (uint64_t off = 0; off < SIZE; off += 2 * CL)
        fill_random(src, off, CL, t0);
    memcpy(now, t0, SIZE);
    j = backup_create(&reg, "b0", &p, true, true, 8u << 20, NULL);
    assert_non_null(j);
    assert_int_equal(job_start(j), 0);
    while (job_alive("b0")) {
        uint64_t off = (rnd() % (SIZE / 512)) * 512;
        uint64_t len = MIN(SIZE - off, 512 * (1 + rnd() % 200));

        fill_random(src, off, len, now);
        writes++;
        usleep(500);
    }
    assert_true(writes > 20);
    assert_node_equals(dst, t0);
    assert_node_equals(src, now);
    assert_int_equal(node_unref(src), 0);
    assert_int_equal(node_unref(dst), 0);
    free(t0);
    free(now);
}

struct bm_probe {
    uint64_t count;
    struct bitmap *copy;
};

static int
probe(struct bitmap *bm, void *opaque)
{
    struct bm_probe *pr = opaque;

    pr->count = bitmap_count(bm);
    pr->copy = bitmap_copy(bm);
    return 0;
}

static int
add_bitmap(struct node *n, const char *name)
{
    struct bitmap_action a = { .op = BITMAP_OP_ADD, .name = name };

    return n->drv->bitmap_op(n, &a);
}

static void
test_backup_incremental_copies_dirty_clusters(void **state UNUSED)
{
    struct node *src = make(path_src, "size=16M");
    struct node *dst = make(path_dst, "size=16M");
    char *t0 = calloc(1, SIZE);
    struct backup_params p = { .src = src, .dst = dst,
                               .sync = BACKUP_SYNC_BITMAP, .bitmap = "b0",
                               .bitmap_mode = BITMAP_MODE_ON_SUCCESS };
    struct bm_probe pr = { 0 };
    struct job *j;

    fill_random(src, 0, SIZE, t0);
    assert_int_equal(add_bitmap(src, "b0"), 0);
    fill_random(src, 3 * CL, CL, t0);
    fill_random(src, 10 * CL + 100, 5000, t0);
    j = backup_create(&reg, "i0", &p, true, true, 0, NULL);
    assert_non_null(j);
    /* The bitmap restarted from clean when the job was created. */
    assert_int_equal(src->drv->bitmap_live(src, "b0", probe, &pr), 0);
    assert_int_equal(pr.count, 0);
    bitmap_free(pr.copy);
    assert_int_equal(job_start(j), 0);
    wait_gone("i0");
    /* The target holds exactly the two dirty clusters, as at T0. */
    for (uint64_t off = 0; off < SIZE; off += CL) {
        struct vimg_extent e;
        bool dirty = off == 3 * CL || off == 10 * CL;
        char buf[CL];

        assert_int_equal(node_block_status(dst, false, off, CL, &e), 0);
        assert_int_equal(!!(e.flags & VIMG_EXT_DATA), dirty);
        if (dirty) {
            assert_int_equal(node_pread(dst, buf, CL, off), 0);
            assert_memory_equal(buf, t0 + off, CL);
        }
    }
    /* A write after the job is recorded again. */
    fill_random(src, 7 * CL, 512, NULL);
    assert_int_equal(src->drv->bitmap_live(src, "b0", probe, &pr), 0);
    assert_int_equal(pr.count, CL);
    bitmap_free(pr.copy);
    assert_int_equal(node_unref(src), 0);
    assert_int_equal(node_unref(dst), 0);
    free(t0);
}

static void
test_backup_failure_gives_the_bitmap_back(void **state UNUSED)
{
    struct node *src = make(path_src, "size=16M");
    struct node *dst = make(path_dst, "size=16M");
    struct backup_params p = { .src = src, .dst = dst,
                               .sync = BACKUP_SYNC_BITMAP, .bitmap = "b0",
                               .bitmap_mode = BITMAP_MODE_ON_SUCCESS };
    struct bm_probe pr = { 0 };
    struct job *j;

    assert_int_equal(add_bitmap(src, "b0"), 0);
    fill_random(src, 0, 4 * CL, NULL);
    j = backup_create(&reg, "f0", &p, true, true, 0, NULL);
    assert_non_null(j);
    /* Make the target fail: it becomes read-only under the job. */
    dst->flags &= ~NODE_RDWR;
    last_event_error[0] = '\0';
    assert_int_equal(job_start(j), 0);
    wait_gone("f0");
    dst->flags |= NODE_RDWR;
    assert_true(last_event_error[0] != '\0');
    assert_int_equal(src->drv->bitmap_live(src, "b0", probe, &pr), 0);
    assert_int_equal(pr.count, 4 * CL);
    bitmap_free(pr.copy);
    assert_int_equal(node_unref(src), 0);
    assert_int_equal(node_unref(dst), 0);
}

static void
test_backup_refuses_bad_parameters(void **state UNUSED)
{
    struct node *src = make(path_src, "size=16M");
    struct node *dst = make(path_dst, "size=8M");
    struct backup_params p = { .src = src, .dst = dst,
                               .sync = BACKUP_SYNC_FULL };

    assert_null(backup_create(&reg, "x", &p, true, true, 0, NULL));
    assert_string_equal(vimg_get_error(),
                        "Source and target image have different sizes");
    p.dst = src;
    p.sync = BACKUP_SYNC_BITMAP;
    assert_null(backup_create(&reg, "x", &p, true, true, 0, NULL));
    p.bitmap = "nope";
    assert_null(backup_create(&reg, "x", &p, true, true, 0, NULL));
    assert_string_equal(vimg_get_error(), "Dirty bitmap 'nope' not found");
    assert_null(reg.jobs);
    assert_int_equal(node_unref(src), 0);
    assert_int_equal(node_unref(dst), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_backup_full_is_point_in_time_under_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_backup_incremental_copies_dirty_clusters, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_backup_failure_gives_the_bitmap_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backup_refuses_bad_parameters,
                                        setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
