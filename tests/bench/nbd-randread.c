/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * nbd-randread: random aligned reads against an NBD export at a fixed
 * queue depth, for tests/bench/nbd.sh.  One connection, one thread,
 * libnbd's asynchronous API (1.14): DEPTH reads of BS bytes are kept in
 * flight, each at a random BS-aligned offset over the whole export, for
 * SECONDS; completed reads are counted.
 *
 * Usage: nbd-randread URI [-d DEPTH=16] [-b BS=4096] [-t SECONDS=5] [-s SEED]
 * Prints a human line, then the IOPS alone on the last line.
 * Build: cc -O2 nbd-randread.c $(pkg-config --cflags --libs libnbd)
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

struct slot {
    struct slot *next; /* free list */
    void *buf;
};

static struct slot *free_slots;
static uint64_t completed, failed;

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* xorshift64* */
static uint64_t rng_state;

static uint64_t
rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static int
on_done(void *user_data, int *error)
{
    struct slot *s = user_data;

    if (*error)
        failed++;
    else
        completed++;
    s->next = free_slots;
    free_slots = s;
    return 1; /* retire the command */
}

static void
die(const char *what)
{
    fprintf(stderr, "nbd-randread: %s: %s\n", what, nbd_get_error());
    exit(1);
}

static void
usage(void)
{
    fprintf(stderr, "usage: nbd-randread URI [-d DEPTH] [-b BS] "
                    "[-t SECONDS] [-s SEED]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    unsigned depth = 16;
    uint64_t bs = 4096, seed = 1;
    double secs = 5, t0, t1, deadline;
    const char *uri;
    struct nbd_handle *h;
    struct slot *slots;
    int64_t size;
    uint64_t nblocks, counted;
    int opt;

    while ((opt = getopt(argc, argv, "d:b:t:s:h")) != -1) {
        switch (opt) {
        case 'd': depth = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'b': bs = strtoull(optarg, NULL, 0); break;
        case 't': secs = strtod(optarg, NULL); break;
        case 's': seed = strtoull(optarg, NULL, 0); break;
        default: usage();
        }
    }
    if (optind != argc - 1 || depth == 0 || bs == 0 || secs <= 0)
        usage();
    uri = argv[optind];
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;

    h = nbd_create();
    if (!h)
        die("nbd_create");
    if (nbd_connect_uri(h, uri) == -1)
        die("connect");
    size = nbd_get_size(h);
    if (size == -1)
        die("get_size");
    nblocks = (uint64_t)size / bs;
    if (nblocks == 0) {
        fprintf(stderr, "nbd-randread: export smaller than one block\n");
        return 1;
    }

    slots = calloc(depth, sizeof *slots);
    if (!slots)
        return 1;
    for (unsigned i = 0; i < depth; i++) {
        if (posix_memalign(&slots[i].buf, 4096, bs) != 0)
            return 1;
        memset(slots[i].buf, 0, bs);
        slots[i].next = free_slots;
        free_slots = &slots[i];
    }

    t0 = now();
    deadline = t0 + secs;
    for (;;) {
        /* Refill the queue, then wait for at least one completion. */
        while (free_slots) {
            struct slot *s = free_slots;
            uint64_t off = (rng() % nblocks) * bs;
            nbd_completion_callback cb = { .callback = on_done,
                                           .user_data = s };

            free_slots = s->next;
            if (nbd_aio_pread(h, s->buf, bs, off, cb, 0) == -1)
                die("aio_pread");
        }
        if (nbd_poll(h, -1) == -1)
            die("poll");
        if (now() >= deadline)
            break;
    }
    t1 = now();
    counted = completed;
    /* Drain what is still in flight (not counted). */
    while (nbd_aio_in_flight(h) > 0)
        if (nbd_poll(h, -1) == -1)
            die("poll");
    if (failed) {
        fprintf(stderr, "nbd-randread: %" PRIu64 " reads failed\n", failed);
        return 1;
    }
    nbd_shutdown(h, 0);
    nbd_close(h);

    printf("%" PRIu64 " reads of %" PRIu64 " B at depth %u in %.3f s: "
           "%.0f IOPS, %.1f MiB/s\n",
           counted, bs, depth, t1 - t0,
           counted / (t1 - t0),
           counted * (double)bs / (t1 - t0) / 1048576);
    printf("%.0f\n", counted / (t1 - t0));
    for (unsigned i = 0; i < depth; i++)
        free(slots[i].buf);
    free(slots);
    return 0;
}
