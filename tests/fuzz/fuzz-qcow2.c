/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target: the qcow2 open path, reads, a write, block status
 * and check, on image bytes held in a memfd and opened through the file
 * protocol as /proc/self/fd/N.  No file on disk is touched: backing
 * files are not opened (VIMG_OPEN_NO_BACKING) and an external data file
 * is redirected to a second, empty memfd through the "data-file" option.
 *
 * Each input runs two passes:
 *  1. open read-write; read the head, the middle and the tail, walk
 *     block status, write 4 KiB somewhere (and read it back), check
 *     without repair; close.
 *  2. open for repair (VIMG_OPEN_CHECK), check with FIX_LEAKS|FIX_ERRORS
 *     and check again; close.
 * With VIMG_FUZZ_ORACLE=1 in the environment a repair that reports
 * success but leaves corruptions behind aborts (an oracle, off by
 * default so that it does not hide crashes).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "node.h"
#include "vimg.h"

#define MAX_EXTENTS 64
#define IO_LEN 4096

static int img_fd = -1, data_fd = -1;
static bool oracle;
static char open_json[256];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    img_fd = memfd_create("fuzz-qcow2", 0);
    data_fd = memfd_create("fuzz-qcow2-data", 0);
    if (img_fd == -1 || data_fd == -1) {
        perror("memfd_create");
        abort();
    }
    snprintf(open_json, sizeof open_json,
             "{\"driver\": \"qcow2\", \"file\": {\"driver\": \"file\", "
             "\"filename\": \"/proc/self/fd/%d\"}, \"data-file\": "
             "{\"driver\": \"file\", \"filename\": \"/proc/self/fd/%d\"}}",
             img_fd, data_fd);
    oracle = getenv("VIMG_FUZZ_ORACLE") != NULL;
    return 0;
}

static int
load(const uint8_t *data, size_t size)
{
    size_t off = 0;

    if (ftruncate(img_fd, 0) == -1 || ftruncate(data_fd, 0) == -1)
        return -1;
    while (off < size) {
        ssize_t w = pwrite(img_fd, data + off, size - off, (off_t)off);

        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    return 0;
}

static void
ignore_report(void *opaque, const char *msg)
{
    (void)opaque;
    (void)msg;
}

static int
run_check(struct node *n, unsigned fix, struct check_result *r)
{
    memset(r, 0, sizeof *r);
    r->report = ignore_report;
    return n->drv->check ? n->drv->check(n, r, fix) : -1;
}

static void
walk_status(vimg_node *h, uint64_t size)
{
    uint64_t off = 0;

    for (int i = 0; i < MAX_EXTENTS && off < size; i++) {
        struct vimg_extent ext;

        if (vimg_block_status(h, off, size - off, &ext) == -1 ||
            ext.length == 0)
            break;
        off += ext.length;
    }
}

/* Pass 1: ordinary use. */
static void
use_image(const uint8_t *data, size_t size)
{
    static uint8_t buf[IO_LEN], wbuf[IO_LEN];
    struct check_result r;
    vimg_node *h = vimg_open_json(open_json,
                                  VIMG_OPEN_RDWR | VIMG_OPEN_NO_BACKING);
    uint64_t vsize, woff = 0;
    int64_t s;

    if (!h)
        return;
    s = vimg_get_size(h);
    vsize = s > 0 ? (uint64_t)s : 0;
    if (vsize > 0) {
        size_t len = vsize < IO_LEN ? (size_t)vsize : IO_LEN;

        vimg_pread(h, buf, len, 0, 0);
        vimg_pread(h, buf, len, (vsize - len) / 2, 0);
        vimg_pread(h, buf, len, vsize - len, 0);
        walk_status(h, vsize);
        /* Where to write: from the last 8 input bytes. */
        for (size_t i = size > 8 ? size - 8 : 0; i < size; i++)
            woff = woff << 8 | data[i];
        woff = (woff % vsize) & ~(uint64_t)511;
        len = vsize - woff < IO_LEN ? (size_t)(vsize - woff) : IO_LEN;
        memset(wbuf, 0xa5, len);
        if (vimg_pwrite(h, wbuf, len, woff, 0) == 0 &&
            vimg_pread(h, buf, len, woff, 0) == 0 &&
            memcmp(buf, wbuf, len) != 0 && oracle) {
            fprintf(stderr, "fuzz-qcow2: read back differs from the "
                            "write at %llu\n", (unsigned long long)woff);
            abort();
        }
        vimg_pwrite_zeroes(h, woff, len, VIMG_REQ_MAY_UNMAP);
        vimg_flush(h);
    }
    run_check(node_of(h), 0, &r);
    vimg_close(h);
}

/* Pass 2: repair, then check again. */
static void
repair_image(void)
{
    struct check_result r;
    vimg_node *h = vimg_open_json(open_json, VIMG_OPEN_RDWR |
                                  VIMG_OPEN_CHECK | VIMG_OPEN_NO_BACKING);

    if (!h)
        return;
    if (run_check(node_of(h), CHECK_FIX_LEAKS | CHECK_FIX_ERRORS, &r) == 0 &&
        (r.corruptions_fixed || r.leaks_fixed) &&
        run_check(node_of(h), 0, &r) == 0 && r.corruptions && oracle) {
        fprintf(stderr, "fuzz-qcow2: repair reported success but %llu "
                        "corruptions remain\n",
                (unsigned long long)r.corruptions);
        abort();
    }
    vimg_close(h);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (4u << 20) || load(data, size) == -1)
        return 0;
    use_image(data, size);
    repair_image();
    return 0;
}
