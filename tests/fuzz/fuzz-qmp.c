/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target: vimg-nbd's QMP input (message framing, JSON parsing,
 * argument checking and command dispatch) through qmp_fuzz_input(), the
 * VIMG_FUZZING hook of cmd/vimg-nbd/qmp.c.
 *
 * Each run starts from the same server: no exports, no jobs, one root
 * node "disk0" (a fresh 1 MiB qcow2 image in a memfd), so the block,
 * bitmap, export, snapshot and job commands have something to work on.
 * Afterwards jobs are cancelled (by the hook), exports and roots are
 * closed and files the commands created are removed.
 *
 * Commands run in a scratch directory under /tmp (the target changes
 * into it for each input and back), and the target skips inputs that could
 * reach outside it or outside the process: any '/' or '\' (paths, JSON
 * escapes that could spell one), the "nbd" block driver (network) and
 * nbd-server-start (listening sockets; there is no accept loop here).
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "options.h"
#include "qmp.h"
#include "server.h"

int qmp_fuzz_input(struct server *srv, const char *buf, size_t len);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct server srv;
static int disk_fd = -1;
static char *disk_bytes;
static size_t disk_len;
static char disk_json[256];
static bool verbose;
static char scratch[] = "/tmp/fuzz-qmp.XXXXXX";
static int home_fd = -1; /* the directory libFuzzer was started in */

void
server_log(const char *fmt, ...)
{
    va_list ap;

    if (!verbose)
        return;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int64_t
now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static void
die(const char *what)
{
    fprintf(stderr, "fuzz-qmp: %s: %s\n", what, vimg_get_error());
    abort();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char path[64];
    ssize_t r;

    (void)argc;
    (void)argv;
    verbose = getenv("VIMG_FUZZ_VERBOSE") != NULL;
    home_fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (home_fd == -1 || !mkdtemp(scratch))
        abort();
    pthread_mutex_init(&srv.lock, NULL);
    pthread_mutex_init(&srv.cmd_lock, NULL);
    pthread_rwlock_init(&srv.exports_lock, NULL);
    pthread_cond_init(&srv.cond, NULL);
    job_registry_init(&srv.jobs, qmp_job_event, &srv);
    srv.event = qmp_event;
    srv.wake_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    srv.persistent = true;
    srv.workers = 1;
    srv.max_connections = 100;

    disk_fd = memfd_create("fuzz-qmp-disk0", 0);
    if (disk_fd == -1)
        abort();
    snprintf(path, sizeof path, "/proc/self/fd/%d", disk_fd);
    if (vimg_create("qcow2", path, "size=1M", 0) == -1)
        die("create disk0");
    disk_len = (size_t)lseek(disk_fd, 0, SEEK_END);
    disk_bytes = malloc(disk_len);
    r = pread(disk_fd, disk_bytes, disk_len, 0);
    if (!disk_bytes || r != (ssize_t)disk_len)
        abort();
    snprintf(disk_json, sizeof disk_json,
             "{\"driver\": \"qcow2\", \"node-name\": \"disk0\", \"file\": "
             "{\"driver\": \"file\", \"filename\": \"%s\"}}", path);
    return 0;
}

static void
add_disk0(void)
{
    json_t *opts;
    struct node *n;

    if (ftruncate(disk_fd, 0) == -1 ||
        pwrite(disk_fd, disk_bytes, disk_len, 0) != (ssize_t)disk_len)
        abort();
    opts = opts_parse_json(disk_json);
    if (!opts)
        die("disk0 options");
    n = node_open(opts, NODE_RDWR);
    json_decref(opts);
    if (!n)
        die("open disk0");
    if (server_add_root(&srv, n) == -1)
        die("add disk0");
}

static void
reset(void)
{
    DIR *d;
    struct dirent *de;

    export_close_all(&srv);
    while (srv.nroots)
        node_unref(srv.roots[--srv.nroots]);
    free(srv.roots);
    srv.roots = NULL;
    atomic_store(&srv.stopping, false);
    srv.max_connections = 100;
    d = opendir(".");
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.' || (de->d_name[1] && de->d_name[1] != '.'))
            unlink(de->d_name);
    if (d)
        closedir(d);
}

static bool
allowed(const char *s, size_t len)
{
    if (memchr(s, '/', len) || memchr(s, '\\', len))
        return false;
    return !memmem(s, len, "\"nbd\"", 5) &&
           !memmem(s, len, "nbd-server-start", 16);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;

    if (size > 65536 || !allowed(s, size))
        return 0;
    if (chdir(scratch) == -1)
        abort();
    add_disk0();
    qmp_fuzz_input(&srv, s, size);
    reset();
    if (fchdir(home_fd) == -1)
        abort();
    return 0;
}
