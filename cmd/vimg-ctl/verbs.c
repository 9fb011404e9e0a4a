/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The verbs for scripts and cron: backup (drive-backup), mirror
 * (drive-mirror), jobs (query-jobs as a table), wait (until a job
 * ends) and events (events as JSON lines).
 *
 * Waiting is driven by events, which the connection receives from the
 * moment it negotiated: a job is followed from before it is started (or
 * looked up), so no end is missed.  A job succeeded when
 * BLOCK_JOB_COMPLETED came without "error"; it failed on
 * BLOCK_JOB_COMPLETED with "error", BLOCK_JOB_CANCELLED, a
 * BLOCK_JOB_ERROR whose action is "stop" (the job then stays paused),
 * or the loss of the connection.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "ctl.h"
#include "error.h"
#include "vimg.h"

#define PROGRESS_MS 1000

static long long
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *
data_str(json_t *ev, const char *key)
{
    return json_string_value(json_object_get(json_object_get(ev, "data"),
                                             key));
}

/* What event EV says about job ID: -1 nothing final, else an exit code
 * (with the error printed).  With READY, BLOCK_JOB_READY is success. */
static int
judge(json_t *ev, const char *id, bool ready)
{
    const char *name = json_string_value(json_object_get(ev, "event"));
    const char *dev = data_str(ev, "device");
    const char *err = data_str(ev, "error");

    if (!name)
        return -1;
    if (!strcmp(name, "JOB_STATUS_CHANGE")) {
        const char *st = data_str(ev, "status");

        if (data_str(ev, "id") && !strcmp(data_str(ev, "id"), id) && st &&
            !strcmp(st, "null")) {
            fprintf(stderr, "vimg-ctl: job %s: ended without a result\n",
                    id);
            return CTL_FAIL;
        }
        return -1;
    }
    if (!dev || strcmp(dev, id))
        return -1;
    if (!strcmp(name, "BLOCK_JOB_COMPLETED")) {
        if (err) {
            fprintf(stderr, "vimg-ctl: job %s: %s\n", id, err);
            return CTL_FAIL;
        }
        if (ready) {
            fprintf(stderr, "vimg-ctl: job %s: completed before it was "
                            "ready\n", id);
            return CTL_FAIL;
        }
        return CTL_OK;
    }
    if (!strcmp(name, "BLOCK_JOB_CANCELLED")) {
        fprintf(stderr, "vimg-ctl: job %s: cancelled\n", id);
        return CTL_FAIL;
    }
    if (!strcmp(name, "BLOCK_JOB_READY") && ready)
        return CTL_OK;
    if (!strcmp(name, "BLOCK_JOB_ERROR") && data_str(ev, "action") &&
        !strcmp(data_str(ev, "action"), "stop")) {
        fprintf(stderr, "vimg-ctl: job %s: %s error, job stopped (paused)\n",
                id, data_str(ev, "operation") ?: "I/O");
        return CTL_FAIL;
    }
    return -1;
}

/* The entry of job ID in query-jobs' list A (borrowed), or NULL. */
static json_t *
find_job(json_t *a, const char *id)
{
    size_t i;
    json_t *j;

    json_array_foreach(a, i, j) {
        const char *jid = json_string_value(json_object_get(j, "id"));

        if (jid && !strcmp(jid, id))
            return j;
    }
    return NULL;
}

static int
percent(json_t *j)
{
    json_int_t cur = json_integer_value(json_object_get(j, "current-progress"));
    json_int_t tot = json_integer_value(json_object_get(j, "total-progress"));

    if (tot <= 0 || cur < 0)
        return -1;
    return cur >= tot ? 100 : (int)(cur * 100 / tot);
}

/* Print job ID's percentage on stderr if it changed from *LAST. */
static int
show_progress(struct qmp_conn *c, const char *id, int *last)
{
    json_t *a = NULL;
    int p;

    if (qmp_conn_execute(c, "query-jobs", NULL, &a) == -1)
        return ctl_fail("query-jobs");
    p = percent(find_job(a, id));
    json_decref(a);
    if (p >= 0 && p != *last) {
        fprintf(stderr, "%s: %d%%\n", id, p);
        *last = p;
    }
    return CTL_OK;
}

/* Wait for the end (or, with READY, the readiness) of job ID. */
static int
wait_job(struct qmp_conn *c, const char *id, bool progress, bool ready)
{
    long long next = now_ms();
    int last = -1, r;

    for (;;) {
        long long left = next - now_ms();
        int err;
        json_t *ev;

        if (progress && left <= 0) {
            if (show_progress(c, id, &last) != CTL_OK)
                return CTL_FAIL;
            next = now_ms() + PROGRESS_MS;
            continue;
        }
        ev = qmp_conn_event(c, progress ? (int)left : -1, &err);
        if (!ev && err) {
            char what[160];

            snprintf(what, sizeof what, "job %s", id);
            return ctl_fail(what);
        }
        r = ev ? judge(ev, id, ready) : -1;
        json_decref(ev);
        if (r >= 0) {
            if (r == CTL_OK && progress && !ready && last != 100)
                fprintf(stderr, "%s: 100%%\n", id);
            return r;
        }
    }
}

/* Shared option parsing for backup and mirror. */
struct copy_opts {
    const char *sync, *bitmap, *format, *job_id;
    bool wait, progress, wait_ready, complete;
};

static int
usage_error(const char *verb, const char *msg, const char *arg)
{
    fprintf(stderr, "vimg-ctl: %s: %s%s%s\n", verb, msg, arg ? " " : "",
            arg ? arg : "");
    return CTL_FAIL;
}

/* Parse ARGV's options into O; the positional NODE TARGET are left at
 * ARGV[optind..].  CTL_OK or an exit code (error printed). */
static int
copy_options(int argc, char **argv, struct copy_opts *o, bool mirror)
{
    enum { O_SYNC = 256, O_BITMAP, O_FORMAT, O_JOB_ID, O_WAIT, O_PROGRESS,
           O_WAIT_READY, O_COMPLETE };
    static const struct option backup_opts[] = {
        { "sync", required_argument, NULL, O_SYNC },
        { "bitmap", required_argument, NULL, O_BITMAP },
        { "format", required_argument, NULL, O_FORMAT },
        { "job-id", required_argument, NULL, O_JOB_ID },
        { "wait", no_argument, NULL, O_WAIT },
        { "progress", no_argument, NULL, O_PROGRESS },
        { NULL, 0, NULL, 0 },
    };
    static const struct option mirror_opts[] = {
        { "sync", required_argument, NULL, O_SYNC },
        { "format", required_argument, NULL, O_FORMAT },
        { "job-id", required_argument, NULL, O_JOB_ID },
        { "wait-ready", no_argument, NULL, O_WAIT_READY },
        { "complete", no_argument, NULL, O_COMPLETE },
        { "progress", no_argument, NULL, O_PROGRESS },
        { NULL, 0, NULL, 0 },
    };
    int ch;

    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":", mirror ? mirror_opts
                                                     : backup_opts,
                             NULL)) != -1) {
        switch (ch) {
        case O_SYNC: o->sync = optarg; break;
        case O_BITMAP: o->bitmap = optarg; break;
        case O_FORMAT: o->format = optarg; break;
        case O_JOB_ID: o->job_id = optarg; break;
        case O_WAIT: o->wait = true; break;
        case O_PROGRESS: o->progress = true; break;
        case O_WAIT_READY: o->wait_ready = true; break;
        case O_COMPLETE: o->complete = true; break;
        case ':':
            return usage_error(argv[0], "missing value for",
                               argv[optind - 1]);
        default:
            return usage_error(argv[0], "unknown option",
                               argv[optind - 1]);
        }
    }
    if (argc - optind != 2)
        return usage_error(argv[0], "expected NODE and TARGET", NULL);
    return CTL_OK;
}

static bool
one_of(const char *v, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(v, *list))
            return true;
    return false;
}

/* Start CMD with ARGS (stolen); print the job id unless waiting. */
static int
start_job(struct qmp_conn *c, const char *verb, const char *cmd,
          json_t *args, const char *id, bool quiet)
{
    json_t *ret = NULL;
    int r = args ? qmp_conn_execute(c, cmd, args, &ret) : -1;

    json_decref(args);
    json_decref(ret);
    if (r == -1)
        return ctl_fail(verb);
    if (!quiet)
        printf("%s\n", id);
    return CTL_OK;
}

int
ctl_backup(const char *sock, int argc, char **argv)
{
    static const char *const syncs[] = { "full", "top", "none",
                                         "incremental", NULL };
    struct copy_opts o = { .sync = "full", .format = "qcow2" };
    CLEANUP_FREE char *target = NULL;
    const char *node, *id;
    struct qmp_conn *c;
    json_t *args;
    int r = copy_options(argc, argv, &o, false);

    if (r != CTL_OK)
        return r;
    node = argv[optind];
    id = o.job_id ? o.job_id : node;
    if (!one_of(o.sync, syncs))
        return usage_error("backup", "--sync must be full, top, none or "
                                     "incremental, not", o.sync);
    if (!strcmp(o.sync, "incremental") && !o.bitmap)
        return usage_error("backup", "--sync incremental needs --bitmap",
                           NULL);
    if (!(target = ctl_abs_path(argv[optind + 1])))
        return ctl_fail("backup");
    args = json_pack("{s:s,s:s,s:s,s:s,s:s}", "job-id", id, "device", node,
                     "target", target, "sync", o.sync, "format", o.format);
    if (args && o.bitmap) {
        json_object_set_new(args, "bitmap", json_string(o.bitmap));
        if (strcmp(o.sync, "incremental"))
            json_object_set_new(args, "bitmap-mode",
                                json_string("on-success"));
    }
    o.wait |= o.progress;
    if (!args || !(c = ctl_connect(sock))) {
        json_decref(args);
        return CTL_FAIL;
    }
    r = start_job(c, "backup", "drive-backup", args, id, o.wait);
    if (r == CTL_OK && o.wait)
        r = wait_job(c, id, o.progress, false);
    qmp_conn_close(c);
    return r;
}

/* job-complete ID, then wait for the job's end. */
static int
complete(struct qmp_conn *c, const char *id)
{
    json_t *args = json_pack("{s:s}", "id", id), *ret = NULL;
    int r = args ? qmp_conn_execute(c, "job-complete", args, &ret) : -1;

    json_decref(args);
    json_decref(ret);
    if (r == -1)
        return ctl_fail("mirror: job-complete");
    return wait_job(c, id, false, false);
}

int
ctl_mirror(const char *sock, int argc, char **argv)
{
    static const char *const syncs[] = { "full", "top", "none", NULL };
    struct copy_opts o = { .sync = "full", .format = "qcow2" };
    CLEANUP_FREE char *target = NULL;
    const char *node, *id;
    struct qmp_conn *c;
    json_t *args;
    int r = copy_options(argc, argv, &o, true);

    if (r != CTL_OK)
        return r;
    node = argv[optind];
    id = o.job_id ? o.job_id : node;
    if (!one_of(o.sync, syncs))
        return usage_error("mirror", "--sync must be full, top or none, not",
                           o.sync);
    if (!(target = ctl_abs_path(argv[optind + 1])))
        return ctl_fail("mirror");
    args = json_pack("{s:s,s:s,s:s,s:s,s:s}", "job-id", id, "device", node,
                     "target", target, "sync", o.sync, "format", o.format);
    o.wait_ready |= o.complete;
    if (!args || !(c = ctl_connect(sock))) {
        json_decref(args);
        return CTL_FAIL;
    }
    r = start_job(c, "mirror", "drive-mirror", args, id, o.wait_ready);
    if (r == CTL_OK && o.wait_ready)
        r = wait_job(c, id, o.progress, true);
    if (r == CTL_OK && o.complete)
        r = complete(c, id);
    qmp_conn_close(c);
    return r;
}

int
ctl_jobs(const char *sock, int argc, char **argv)
{
    json_t *a = NULL, *j;
    struct qmp_conn *c;
    size_t i;
    int r;

    (void)argv;
    if (argc != 1)
        return usage_error("jobs", "takes no arguments", NULL);
    if (!(c = ctl_connect(sock)))
        return CTL_FAIL;
    r = qmp_conn_execute(c, "query-jobs", NULL, &a);
    qmp_conn_close(c);
    if (r == -1)
        return ctl_fail("jobs");
    printf("%-20s %-8s %-10s %8s\n", "ID", "TYPE", "STATUS", "PROGRESS");
    json_array_foreach(a, i, j) {
        const char *err = json_string_value(json_object_get(j, "error"));
        int p = percent(j);
        char pct[16] = "-";

        if (p >= 0)
            snprintf(pct, sizeof pct, "%d%%", p);
        printf("%-20s %-8s %-10s %8s%s%s\n",
               json_string_value(json_object_get(j, "id")) ?: "?",
               json_string_value(json_object_get(j, "type")) ?: "?",
               json_string_value(json_object_get(j, "status")) ?: "?", pct,
               err ? "  " : "", err ? err : "");
    }
    json_decref(a);
    return CTL_OK;
}

int
ctl_wait(const char *sock, int argc, char **argv)
{
    bool progress = argc == 3 && !strcmp(argv[1], "--progress");
    const char *id = argv[argc - 1];
    struct qmp_conn *c;
    json_t *a = NULL, *j;
    int r = -1;

    if (argc != 2 + progress || *id == '-')
        return usage_error("wait", "expected [--progress] JOB", NULL);
    if (!(c = ctl_connect(sock)))
        return CTL_FAIL;
    if (qmp_conn_execute(c, "query-jobs", NULL, &a) == -1) {
        qmp_conn_close(c);
        return ctl_fail("wait");
    }
    j = find_job(a, id);
    if (j && !strcmp(json_string_value(json_object_get(j, "status")) ?: "",
                     "concluded")) {
        const char *err = json_string_value(json_object_get(j, "error"));

        if (err)
            fprintf(stderr, "vimg-ctl: job %s: %s\n", id, err);
        r = err ? CTL_FAIL : CTL_OK;
    } else if (!j) {
        /* It may have ended since we connected: its events are queued. */
        int err;
        json_t *ev;

        while (r < 0 && (ev = qmp_conn_event(c, 0, &err))) {
            r = judge(ev, id, false);
            json_decref(ev);
        }
        if (r < 0) {
            fprintf(stderr, "vimg-ctl: wait: job '%s' not found\n", id);
            r = CTL_NOT_FOUND;
        }
    }
    json_decref(a);
    if (r < 0)
        r = wait_job(c, id, progress, false);
    qmp_conn_close(c);
    return r;
}

int
ctl_events(const char *sock, int argc, char **argv)
{
    long long count = -1, seen = 0;
    struct qmp_conn *c;
    char *end;

    if (argc == 3 && !strcmp(argv[1], "--count")) {
        count = strtoll(argv[2], &end, 10);
        if (*end || !*argv[2] || count < 1)
            return usage_error("events", "--count needs a positive number, "
                                         "not", argv[2]);
    } else if (argc != 1) {
        return usage_error("events", "expected [--count N]", NULL);
    }
    if (!(c = ctl_connect(sock)))
        return CTL_FAIL;
    while (count < 0 || seen < count) {
        int err;
        json_t *ev = qmp_conn_event(c, -1, &err);
        char *s;

        if (!ev) {
            qmp_conn_close(c);
            return count < 0 ? CTL_OK : ctl_fail("events");
        }
        s = json_dumps(ev, JSON_COMPACT);
        json_decref(ev);
        if (s) {
            printf("%s\n", s);
            fflush(stdout);
        }
        free(s);
        seen++;
    }
    qmp_conn_close(c);
    return CTL_OK;
}
