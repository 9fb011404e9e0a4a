/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the "inject" filter (lib/filter/inject.c): each
 * fail-op fails at its Nth request with the configured errno, once=off
 * keeps failing, a short write stores half of its bytes, a failed flush
 * is sticky (writes and flushes refused, reads work), the write log has
 * one line per request, and bad options are refused at open.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "io.h"
#include "node.h"
#include "options.h"

#define SIZE (1u << 20)

static char tmpdir[] = "/tmp/vimg-test-inject.XXXXXX";
static char file[sizeof tmpdir + 16];
static char logpath[sizeof tmpdir + 16];

static int
setup(void **state)
{
    (void)state;
    int fd;

    snprintf(file, sizeof file, "%s/disk", tmpdir);
    snprintf(logpath, sizeof logpath, "%s/log", tmpdir);
    unlink(logpath);
    fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, SIZE), 0);
    close(fd);
    return 0;
}

/* An inject node over the test file with the dotted options EXTRA. */
static struct node *
open_inject(const char *extra)
{
    char buf[512];
    json_t *o;
    struct node *n;

    snprintf(buf, sizeof buf, "driver=inject,file.driver=file,"
             "file.filename=%s%s%s", file, *extra ? "," : "", extra);
    o = opts_parse_dotted(buf, NULL);
    assert_non_null(o);
    n = node_open(o, NODE_RDWR);
    json_decref(o);
    return n;
}

/* One request of each kind, as the fail-op names them. */
enum op { READ, WRITE, FLUSH, DISCARD, ZERO, TRUNCATE };
static const char *const op_opt[] = { "read", "write", "flush", "discard",
                                      "zero", "truncate" };

static int
do_op(struct node *n, enum op op)
{
    char buf[4096];

    memset(buf, 0x5a, sizeof buf);
    switch (op) {
    case READ:
        return node_pread(n, buf, sizeof buf, 8192);
    case WRITE:
        return node_pwrite(n, buf, sizeof buf, 8192, 0);
    case FLUSH:
        return node_flush(n);
    case DISCARD:
        return node_discard(n, 65536, 65536);
    case ZERO:
        return node_pwrite_zeroes(n, 65536, 65536, 0);
    case TRUNCATE:
        return node_truncate(n, SIZE, PREALLOC_OFF);
    }
    return -1;
}

static void
test_inject_passthrough(void **state)
{
    (void)state;
    struct node *n = open_inject("");
    char w[1000], r[1000];

    assert_non_null(n);
    assert_int_equal(n->size, SIZE);
    memset(w, 7, sizeof w);
    assert_int_equal(node_pwrite(n, w, sizeof w, 12345, 0), 0);
    assert_int_equal(node_pread(n, r, sizeof r, 12345), 0);
    assert_memory_equal(w, r, sizeof w);
    /* Grows like a protocol node (formats append to their file). */
    assert_int_equal(node_pwrite(n, w, sizeof w, SIZE, 0), 0);
    assert_int_equal(n->size, SIZE + sizeof w);
    assert_int_equal(n->file->size, SIZE + sizeof w);
    assert_int_equal(node_flush(n), 0);
    assert_int_equal(node_unref(n), 0);
}

/* Every fail-op: the first request of its kind works, the second fails
 * with EIO, the third works again (once=on), other kinds never fail. */
static void
test_inject_each_op_fails_at_nth(void **state)
{
    (void)state;

    for (enum op op = READ; op <= TRUNCATE; op++) {
        char opts[64];
        struct node *n;

        setup(NULL);
        snprintf(opts, sizeof opts, "fail-op=%s,fail-nth=2", op_opt[op]);
        n = open_inject(opts);
        assert_non_null(n);
        for (enum op o = READ; o <= TRUNCATE; o++)
            if (o != op && o != FLUSH)
                assert_int_equal(do_op(n, o), 0);
        assert_int_equal(do_op(n, op), 0);
        assert_int_equal(do_op(n, op), -1);
        assert_int_equal(vimg_get_errno(), EIO);
        assert_non_null(strstr(vimg_get_error(), "injected"));
        if (op != FLUSH) /* a failed flush is sticky */
            assert_int_equal(do_op(n, op), 0);
        node_unref(n);
    }
}

static void
test_inject_once_off_keeps_failing(void **state)
{
    (void)state;
    struct node *n = open_inject("fail-op=write,fail-nth=3,once=off");

    assert_non_null(n);
    assert_int_equal(do_op(n, WRITE), 0);
    assert_int_equal(do_op(n, WRITE), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(do_op(n, WRITE), -1);
    assert_int_equal(do_op(n, READ), 0);
    assert_int_equal(node_unref(n), 0);
}

static void
test_inject_once_on_fails_only_nth(void **state)
{
    (void)state;
    struct node *n = open_inject("fail-op=write,fail-nth=3,once=on");

    assert_non_null(n);
    for (int i = 1; i <= 6; i++)
        assert_int_equal(do_op(n, WRITE), i == 3 ? -1 : 0);
    assert_int_equal(node_unref(n), 0);
}

static void
test_inject_errno_enospc(void **state)
{
    (void)state;
    struct node *n = open_inject("fail-op=write,errno=ENOSPC");

    assert_non_null(n);
    assert_int_equal(do_op(n, WRITE), -1);
    assert_int_equal(vimg_get_errno(), ENOSPC);
    assert_int_equal(node_unref(n), 0);
}

static void
test_inject_short_write_stores_half(void **state)
{
    (void)state;
    struct node *n = open_inject("fail-op=write,short-write=on");
    char w[4096], r[4096], z[2048] = { 0 };

    assert_non_null(n);
    memset(w, 0xab, sizeof w);
    assert_int_equal(node_pwrite(n, w, sizeof w, 4096, 0), -1);
    assert_int_equal(vimg_get_errno(), EIO);
    assert_int_equal(node_pread(n->file, r, sizeof r, 4096), 0);
    assert_memory_equal(r, w, 2048);
    assert_memory_equal(r + 2048, z, 2048);
    assert_int_equal(node_unref(n), 0);
}

static void
test_inject_failed_flush_is_sticky(void **state)
{
    (void)state;
    struct node *n = open_inject("fail-op=flush");
    char buf[512];

    assert_non_null(n);
    assert_int_equal(do_op(n, WRITE), 0);
    assert_int_equal(node_flush(n), -1);
    for (enum op o = WRITE; o <= TRUNCATE; o++) {
        assert_int_equal(do_op(n, o), -1);
        assert_int_equal(vimg_get_errno(), EIO);
        assert_non_null(strstr(vimg_get_error(), "earlier flush failed"));
    }
    assert_int_equal(node_pread(n, buf, sizeof buf, 8192), 0);
    assert_int_equal((unsigned char)buf[0], 0x5a);
    node_unref(n);
}

/* FNV-1a 64, as the log writes it. */
static uint64_t
fnv1a(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void
test_inject_log_lines(void **state)
{
    (void)state;
    char opts[128], expect[512], got[512] = { 0 }, w[4096];
    struct node *n;
    FILE *f;
    size_t len;

    snprintf(opts, sizeof opts, "log=%s", logpath);
    n = open_inject(opts);
    assert_non_null(n);
    assert_int_equal(do_op(n, WRITE), 0);
    assert_int_equal(do_op(n, ZERO), 0);
    assert_int_equal(do_op(n, DISCARD), 0);
    assert_int_equal(do_op(n, FLUSH), 0);
    assert_int_equal(do_op(n, READ), 0);
    assert_int_equal(node_truncate(n, 2 * SIZE, PREALLOC_OFF), 0);
    assert_int_equal(node_unref(n), 0);

    memset(w, 0x5a, sizeof w);
    snprintf(expect, sizeof expect,
             "W 8192 4096 %016" PRIx64 "\nZ 65536 65536\nD 65536 65536\n"
             "F\nT %u\n", fnv1a(w, sizeof w), 2 * SIZE);
    f = fopen(logpath, "r");
    assert_non_null(f);
    len = fread(got, 1, sizeof got - 1, f);
    fclose(f);
    assert_true(len > 0);
    assert_string_equal(got, expect);
}

static void
test_inject_log_short_write_logs_half(void **state)
{
    (void)state;
    char opts[128], expect[128], got[128] = { 0 }, w[4096];
    struct node *n;
    FILE *f;

    snprintf(opts, sizeof opts, "fail-op=write,short-write=on,log=%s",
             logpath);
    n = open_inject(opts);
    assert_non_null(n);
    assert_int_equal(do_op(n, WRITE), -1);
    node_unref(n);
    memset(w, 0x5a, sizeof w);
    snprintf(expect, sizeof expect, "W 8192 2048 %016" PRIx64 "\n",
             fnv1a(w, 2048));
    f = fopen(logpath, "r");
    assert_non_null(f);
    assert_true(fread(got, 1, sizeof got - 1, f) > 0);
    fclose(f);
    assert_string_equal(got, expect);
}

static void
test_inject_bad_options_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "fail-op=bogus", "errno=EPERM", "fail-nth=0", "fail-nth=x",
        "once=maybe", "short-write=on", "short-write=on,fail-op=flush",
        "colour=red", "log=/nonexistent/dir/log",
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_null(open_inject(bad[i]));
        assert_non_null(vimg_get_error());
        assert_null(strchr(vimg_get_error(), '\n'));
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_inject_passthrough, setup),
        cmocka_unit_test_setup(test_inject_each_op_fails_at_nth, setup),
        cmocka_unit_test_setup(test_inject_once_off_keeps_failing, setup),
        cmocka_unit_test_setup(test_inject_once_on_fails_only_nth, setup),
        cmocka_unit_test_setup(test_inject_errno_enospc, setup),
        cmocka_unit_test_setup(test_inject_short_write_stores_half, setup),
        cmocka_unit_test_setup(test_inject_failed_flush_is_sticky, setup),
        cmocka_unit_test_setup(test_inject_log_lines, setup),
        cmocka_unit_test_setup(test_inject_log_short_write_logs_half,
                               setup),
        cmocka_unit_test_setup(test_inject_bad_options_refused, setup),
    };
    char cmd[sizeof tmpdir + 16];
    int r;

    if (!mkdtemp(tmpdir))
        return 1;
    r = cmocka_run_group_tests(tests, NULL, NULL);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        return 1;
    return r;
}
