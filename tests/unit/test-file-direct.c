/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for O_DIRECT on the file protocol (cache.direct=on) and the
 * alignment path of lib/io.c, against a shadow buffer.
 *
 * A file of odd size gets random unaligned reads, writes (from
 * unaligned buffers, some past the end of the file) and zero writes;
 * the node and the file must read back as the shadow, and the file's
 * length must follow the real end of the data, never a padded block.
 * Threads writing neighbouring bytes of the same blocks, and appending
 * past the end at once, check the read-modify-write serialisation.
 * The files live under /var/tmp (tmpfs may refuse O_DIRECT); the tests
 * skip when that file system refuses it too.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "checked.h"
#include "io.h"
#include "node.h"
#include "options.h"

#define MAXSIZE (1u << 20)
#define INITIAL_SIZE 300001u
#define NOPS 3000
#define MAXLEN (40u << 10)

static char tmpdir[] = "/var/tmp/vimg-test-direct.XXXXXX";
static char file[sizeof tmpdir + 16];
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

/* A file node over PATH with cache.direct=on; NULL when refused. */
static struct node *
open_direct(const char *path, unsigned flags)
{
    json_t *o = json_pack("{s:s,s:s,s:{s:b}}", "driver", "file", "filename",
                          path, "cache", "direct", 1);
    struct node *n = node_open(o, flags);

    json_decref(o);
    return n;
}

static void
write_file(const char *path, const uint8_t *buf, size_t len)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static uint64_t
file_length(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

static int
setup(void **state)
{
    struct node *n;

    (void)state;
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(file, sizeof file, "%s/d.raw", tmpdir);
    write_file(file, (const uint8_t *)"", 0);
    n = open_direct(file, NODE_RDWR);
    if (!n) {
        fprintf(stderr, "# %s\n", vimg_get_error());
        return 0; /* the tests skip */
    }
    node_unref(n);
    return 0;
}

static int
teardown(void **state)
{
    char cmd[sizeof tmpdir + 16];

    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Open FILE with O_DIRECT or skip the test. */
static struct node *
must_open_direct(unsigned flags)
{
    struct node *n = open_direct(file, flags);

    if (!n && strstr(vimg_get_error(), "does not support O_DIRECT"))
        skip();
    if (!n)
        fail_msg("open %s: %s", file, vimg_get_error());
    return n;
}

static void
test_alignment_is_probed(void **state)
{
    struct node *n;

    (void)state;
    write_file(file, (const uint8_t *)"", 0);
    n = must_open_direct(NODE_RDWR);
    assert_true(n->request_align >= 512 && n->request_align <= 65536);
    assert_int_equal(n->request_align & (n->request_align - 1), 0);
    assert_int_equal(n->serialise_align, n->request_align);
    node_unref(n);
}

/* Check the node and the file on disk against SHADOW[0, SIZE). */
static void
check_against_shadow(struct node *n, const uint8_t *shadow, uint64_t size)
{
    uint8_t *buf = malloc(size + 7);

    assert_non_null(buf);
    assert_int_equal(n->size, size);
    assert_int_equal(file_length(file), size);
    assert_int_equal(node_pread(n, buf + 3, size, 0), 0);
    assert_memory_equal(buf + 3, shadow, size);
    free(buf);
}

static void
random_op(struct node *n, uint8_t *shadow, uint64_t *size, uint8_t *buf)
{
    uint64_t len = 1 + rnd() % MAXLEN, off;
    unsigned mis = rnd() % 8; /* buffer misalignment */
    unsigned kind = rnd() % 8;

    /* Mostly inside the file, sometimes up to MAXLEN past its end. */
    off = rnd() % MIN(*size + MAXLEN / 2, MAXSIZE - 1);
    if (rnd() % 4 == 0)
        off = off / 512 * 512, len = (len + 511) / 512 * 512, mis = 0;
    if (off + len > MAXSIZE)
        len = MAXSIZE - off;
    if (kind < 3) { /* read, also past the end */
        assert_int_equal(node_pread(n, buf + mis, len, off), 0);
        for (uint64_t i = 0; i < len; i++)
            if (buf[mis + i] != (off + i < *size ? shadow[off + i] : 0))
                fail_msg("byte %" PRIu64 " differs", off + i);
    } else if (kind < 6) {
        for (uint64_t i = 0; i < len; i++)
            buf[mis + i] = (uint8_t)rnd();
        assert_int_equal(node_pwrite(n, buf + mis, len, off, 0), 0);
        memcpy(shadow + off, buf + mis, len);
    } else {
        unsigned fl = kind == 7 ? REQ_MAY_UNMAP : 0;

        assert_int_equal(node_pwrite_zeroes(n, off, len, fl), 0);
        memset(shadow + off, 0, len);
    }
    if (kind >= 3 && off + len > *size)
        *size = off + len;
}

static void
test_random_unaligned_ops_match_shadow(void **state)
{
    uint8_t *shadow = calloc(1, MAXSIZE), *buf = malloc(MAXLEN + 8);
    uint64_t size = INITIAL_SIZE, seed = (uint64_t)time(NULL);
    struct node *n;

    (void)state;
    assert_non_null(shadow);
    assert_non_null(buf);
    rng_state = seed | 1;
    print_message("seed %" PRIu64 "\n", seed | 1);
    for (uint64_t i = 0; i < size; i++)
        shadow[i] = (uint8_t)rnd();
    write_file(file, shadow, size);
    n = must_open_direct(NODE_RDWR);
    for (int i = 0; i < NOPS; i++) {
        random_op(n, shadow, &size, buf);
        if (i % 100 == 0)
            check_against_shadow(n, shadow, size);
    }
    check_against_shadow(n, shadow, size);
    assert_int_equal(node_flush(n), 0);
    node_unref(n);

    /* Read back without O_DIRECT. */
    {
        FILE *f = fopen(file, "r");
        uint8_t *disk = malloc(size);

        assert_non_null(f);
        assert_non_null(disk);
        assert_int_equal(fread(disk, 1, size, f), size);
        fclose(f);
        assert_memory_equal(disk, shadow, size);
        free(disk);
    }
    free(shadow);
    free(buf);
}

/* ---- concurrency ---------------------------------------------------- */

#define NTHREADS 8
#define STRIPE 64u  /* each thread owns 8 bytes of every stripe */
#define SPAN (64u << 10)

struct worker {
    struct node *n;
    unsigned id;
    uint64_t base; /* where the appends start */
    int failed;
};

static uint8_t
pattern(unsigned id, uint64_t off)
{
    return (uint8_t)(id * 31 + off * 7 + 1);
}

/* Thread ID writes its 8 bytes of every stripe of [0, SPAN), then
 * appends its 8 bytes of each stripe past BASE, in increasing order. */
static void *
worker_run(void *opaque)
{
    struct worker *w = opaque;
    uint8_t b[8];

    for (uint64_t s = 0; s < 2 * SPAN; s += STRIPE) {
        uint64_t off = (s < SPAN ? s : w->base + s - SPAN) + w->id * 8;

        for (unsigned i = 0; i < 8; i++)
            b[i] = pattern(w->id, off + i);
        if (node_pwrite(w->n, b, 8, off, 0) == -1) {
            w->failed = 1;
            break;
        }
    }
    return NULL;
}

static void
test_concurrent_sub_block_writes(void **state)
{
    uint64_t base = SPAN + 1000 + 3; /* the file's odd end */
    uint8_t *zero = calloc(1, base), *buf = malloc(base + SPAN);
    struct worker w[NTHREADS];
    pthread_t t[NTHREADS];
    struct node *n;

    (void)state;
    assert_non_null(zero);
    assert_non_null(buf);
    write_file(file, zero, base);
    n = must_open_direct(NODE_RDWR);
    for (unsigned i = 0; i < NTHREADS; i++) {
        w[i] = (struct worker){ .n = n, .id = i, .base = base };
        assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
    }
    for (unsigned i = 0; i < NTHREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failed, 0);
    }
    assert_int_equal(n->size, base + SPAN);
    assert_int_equal(file_length(file), base + SPAN);
    assert_int_equal(node_pread(n, buf, base + SPAN, 0), 0);
    for (uint64_t off = 0; off < base + SPAN; off++) {
        uint64_t rel = off < SPAN ? off : off >= base ? off - base : 0;
        uint8_t want = (off < SPAN || off >= base)
                           ? pattern((rel % STRIPE) / 8, off)
                           : 0;

        if (buf[off] != want)
            fail_msg("byte %" PRIu64 ": %u, want %u", off, buf[off], want);
    }
    node_unref(n);
    free(zero);
    free(buf);
}

/* ---- opening -------------------------------------------------------- */

static void
test_cache_direct_is_inherited(void **state)
{
    json_t *o;
    struct node *n;

    (void)state;
    write_file(file, (const uint8_t *)"x", 1);
    o = json_pack("{s:s,s:{s:s},s:{s:s}}", "driver", "raw", "file",
                  "filename", file, "cache", "direct", "on");
    n = node_open(o, 0);
    json_decref(o);
    if (!n && strstr(vimg_get_error(), "does not support O_DIRECT"))
        skip();
    assert_non_null(n);
    assert_true(n->file->request_align > 1);
    assert_int_equal(n->request_align, 1);
    node_unref(n);

    /* cache.direct=off on the child wins. */
    o = json_pack("{s:s,s:{s:s,s:{s:b}},s:{s:b}}", "driver", "raw", "file",
                  "filename", file, "cache", "direct", 0, "cache", "direct",
                  1);
    n = node_open(o, 0);
    json_decref(o);
    assert_non_null(n);
    assert_int_equal(n->file->request_align, 1);
    node_unref(n);
}

static void
test_bad_cache_option(void **state)
{
    json_t *o = json_pack("{s:s,s:s,s:{s:s}}", "driver", "file", "filename",
                          file, "cache", "direct", "maybe");

    (void)state;
    write_file(file, (const uint8_t *)"", 0);
    assert_null(node_open(o, 0));
    assert_non_null(strstr(vimg_get_error(), "'direct'"));
    json_decref(o);
}

static void
test_refused_o_direct_names_the_file(void **state)
{
    struct node *n;
    int fd;

    (void)state;
    /* procfs refuses O_DIRECT; skip where it does not. */
    fd = open("/proc/version", O_RDONLY | O_DIRECT);
    if (fd != -1 || errno != EINVAL) {
        if (fd != -1)
            close(fd);
        skip();
    }
    n = open_direct("/proc/version", 0);
    assert_null(n);
    assert_string_equal(vimg_get_error(),
                        "Could not open '/proc/version': filesystem does "
                        "not support O_DIRECT");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alignment_is_probed),
        cmocka_unit_test(test_random_unaligned_ops_match_shadow),
        cmocka_unit_test(test_concurrent_sub_block_writes),
        cmocka_unit_test(test_cache_direct_is_inherited),
        cmocka_unit_test(test_bad_cache_option),
        cmocka_unit_test(test_refused_o_direct_names_the_file),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
