/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP job commands: blockdev-backup, drive-backup, the job verbs
 * (job-* and the older block-job-*), query-jobs, query-block-jobs.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitmap.h"
#include "error.h"
#include "node-bitmaps.h"
#include "jobs.h"
#include "qmp.h"
#include "qmp-internal.h"
#include "vimg.h"

static int
parse_on_error(json_t *args, const char *key, enum job_on_error *out)
{
    const char *v = qmp_str(args, key);

    *out = ON_ERROR_REPORT;
    if (!v || !strcmp(v, "report") || !strcmp(v, "auto") ||
        !strcmp(v, "enospc"))
        return 0;
    if (!strcmp(v, "ignore")) {
        *out = ON_ERROR_IGNORE;
        return 0;
    }
    if (!strcmp(v, "stop")) {
        *out = ON_ERROR_STOP;
        return 0;
    }
    vimg_error(EINVAL, "Parameter '%s' does not accept value '%s'", key, v);
    return -1;
}

/* sync, bitmap and bitmap-mode of a backup command into P. */
static int
parse_sync(json_t *args, struct backup_params *p)
{
    const char *sync = qmp_str(args, "sync");
    const char *mode = qmp_str(args, "bitmap-mode");

    p->bitmap = qmp_str(args, "bitmap");
    if (!strcmp(sync, "full"))
        p->sync = BACKUP_SYNC_FULL;
    else if (!strcmp(sync, "top"))
        p->sync = BACKUP_SYNC_TOP;
    else if (!strcmp(sync, "none"))
        p->sync = BACKUP_SYNC_NONE;
    else if (!strcmp(sync, "incremental") || !strcmp(sync, "bitmap"))
        p->sync = BACKUP_SYNC_BITMAP;
    else {
        vimg_error(EINVAL, "Parameter 'sync' does not accept value '%s'",
                   sync);
        return -1;
    }
    if (!strcmp(sync, "incremental")) {
        if (mode && strcmp(mode, "on-success")) {
            vimg_error(EINVAL, "Bitmap sync mode must be 'on-success' when "
                               "using sync mode 'incremental'");
            return -1;
        }
        mode = "on-success";
    }
    if (p->bitmap && !mode) {
        vimg_error(EINVAL, "Bitmap sync mode must be given when providing "
                           "a bitmap");
        return -1;
    }
    if (!p->bitmap && mode) {
        vimg_error(EINVAL, "Cannot specify bitmap sync mode without a "
                           "bitmap");
        return -1;
    }
    if (!mode || !strcmp(mode, "on-success"))
        p->bitmap_mode = BITMAP_MODE_ON_SUCCESS;
    else if (!strcmp(mode, "always"))
        p->bitmap_mode = BITMAP_MODE_ALWAYS;
    else if (!strcmp(mode, "never"))
        p->bitmap_mode = BITMAP_MODE_NEVER;
    else {
        vimg_error(EINVAL, "Parameter 'bitmap-mode' does not accept value "
                           "'%s'", mode);
        return -1;
    }
    p->compress = qmp_bool(args, "compress", false);
    if (parse_on_error(args, "on-source-error", &p->on_source_error) == -1 ||
        parse_on_error(args, "on-target-error", &p->on_target_error) == -1)
        return -1;
    return 0;
}

#define BACKUP_COMMON                                                        \
    "?job-id:s", "device:s", "sync:s", "?speed:i", "?bitmap:s",              \
        "?bitmap-mode:s", "?compress:b", "?on-source-error:s",               \
        "?on-target-error:s", "?auto-finalize:b", "?auto-dismiss:b",         \
        "?filter-node-name:s", "?x-perf:o"

/* Create (not start) a backup job from ARGS with target node DST. */
static struct job *
make_backup(struct server *srv, json_t *args, struct node *src,
            struct node *dst, struct job_txn *txn)
{
    struct backup_params p = { .src = src, .dst = dst };
    const char *id = qmp_str(args, "job-id");

    if (parse_sync(args, &p) == -1)
        return NULL;
    if (qmp_int(args, "speed", 0) < 0) {
        vimg_error(EINVAL, "Parameter 'speed' expects a non negative "
                           "value");
        return NULL;
    }
    return backup_create(&srv->jobs, id ? id : qmp_str(args, "device"), &p,
                         qmp_bool(args, "auto-finalize", true),
                         qmp_bool(args, "auto-dismiss", true),
                         (uint64_t)qmp_int(args, "speed", 0), txn);
}

/* The checks a backup command's arguments can fail without a target. */
static int
backup_args_ok(json_t *args, struct node *src)
{
    struct backup_params p = { .src = src };
    struct bitmap *bm;

    if (parse_sync(args, &p) == -1)
        return -1;
    if (!p.bitmap)
        return 0;
    bm = node_bitmap_copy(src, p.bitmap);
    if (!bm && errno == ENOENT) {
        vimg_error(ENOENT, "Dirty bitmap '%s' not found", p.bitmap);
        return -1;
    }
    bitmap_free(bm);
    return 0;
}

struct job *
qmp_blockdev_backup(struct server *srv, json_t *args, struct job_txn *txn)
{
    static const char *const spec[] = { BACKUP_COMMON, "target:s", NULL };
    struct node *src, *dst;
    struct job *j;

    if (qmp_check_args(args, spec) == -1 ||
        !(src = qmp_node(qmp_str(args, "device"))))
        return NULL;
    dst = qmp_node(qmp_str(args, "target"));
    j = dst ? make_backup(srv, args, src, dst, txn) : NULL;
    node_unref(src);
    node_unref(dst);
    return j;
}

struct job *
qmp_drive_backup(struct server *srv, json_t *args, struct job_txn *txn)
{
    static const char *const spec[] = { BACKUP_COMMON, "target:s",
                                        "?format:s", "?mode:s", NULL };
    const char *target = NULL, *fmt, *mode;
    struct node *src, *dst = NULL;
    struct job *j = NULL;
    bool created;
    char opts[64];
    vimg_node *h;

    if (qmp_check_args(args, spec) == -1 ||
        !(src = qmp_node(qmp_str(args, "device"))))
        return NULL;
    target = qmp_str(args, "target");
    fmt = qmp_str(args, "format") ? qmp_str(args, "format") : src->drv->name;
    mode = qmp_str(args, "mode");
    if (mode && strcmp(mode, "existing") && strcmp(mode, "absolute-paths")) {
        vimg_error(EINVAL, "Parameter 'mode' does not accept value '%s'",
                   mode);
        goto out;
    }
    /* Refuse bad arguments before creating anything. */
    if (backup_args_ok(args, src) == -1)
        goto out;
    created = !mode || strcmp(mode, "existing");
    if (created) {
        snprintf(opts, sizeof opts, "size=%llu",
                 (unsigned long long)src->size);
        if (vimg_create(fmt, target, opts, 0) == -1)
            goto out;
    }
    h = vimg_open(target, fmt, VIMG_OPEN_RDWR);
    if (h) {
        dst = node_of(h);
        j = make_backup(srv, args, src, dst, txn);
    }
    if (!j && created) {
        char *msg = strdup(vimg_get_error());

        node_unref(dst);
        dst = NULL;
        unlink(target);
        vimg_error(EINVAL, "%s", msg ? msg : "drive-backup failed");
        free(msg);
    }
out:
    node_unref(src);
    node_unref(dst); /* the job holds its own reference */
    return j;
}

/* Like QEMU, which runs these commands as one-action transactions: the
 * job starts inside the drained section (running, paused, running). */
static int
start_new(struct job *j, json_t **ret)
{
    (void)ret;
    if (!j || job_start_paused(j) == -1)
        return -1;
    job_resume_internal(j);
    return 0;
}

static int
cmd_blockdev_backup(struct server *srv, json_t *args, json_t **ret)
{
    return start_new(qmp_blockdev_backup(srv, args, NULL), ret);
}

static int
cmd_drive_backup(struct server *srv, json_t *args, json_t **ret)
{
    return start_new(qmp_drive_backup(srv, args, NULL), ret);
}

/* --- mirror ----------------------------------------------------------- */

/* The mirror's switch_over: exports of SRC follow to DST. */
static int
switch_exports(void *opaque, struct node *src, struct node *dst,
               bool do_switch, int (*final)(void *), void *final_opaque)
{
    return export_pivot(opaque, src, do_switch ? dst : NULL, final,
                        final_opaque);
}

#define MIRROR_COMMON                                                        \
    "?job-id:s", "device:s", "target:s", "sync:s", "?replaces:s",          \
        "?speed:i", "?granularity:i", "?buf-size:i", "?on-source-error:s",  \
        "?on-target-error:s", "?filter-node-name:s", "?copy-mode:s",        \
        "?auto-finalize:b", "?auto-dismiss:b"

static int
start_mirror(struct server *srv, json_t *args, struct node *src,
             struct node *dst)
{
    struct mirror_params p = { .src = src, .dst = dst,
                               .switch_over = switch_exports,
                               .opaque = srv };
    const char *sync = qmp_str(args, "sync");
    const char *id = qmp_str(args, "job-id");
    struct job *j;

    if (!strcmp(sync, "full"))
        p.sync = MIRROR_SYNC_FULL;
    else if (!strcmp(sync, "top"))
        p.sync = MIRROR_SYNC_TOP;
    else if (!strcmp(sync, "none"))
        p.sync = MIRROR_SYNC_NONE;
    else {
        vimg_error(EINVAL, "Parameter 'sync' does not accept value '%s'",
                   sync);
        return -1;
    }
    if (qmp_int(args, "speed", 0) < 0 ||
        qmp_int(args, "granularity", 0) < 0) {
        vimg_error(EINVAL, "Parameter 'speed' expects a non negative "
                           "value");
        return -1;
    }
    p.granularity = (uint32_t)qmp_int(args, "granularity", 0);
    if (parse_on_error(args, "on-source-error", &p.on_source_error) == -1 ||
        parse_on_error(args, "on-target-error", &p.on_target_error) == -1)
        return -1;
    j = mirror_create(&srv->jobs, id ? id : qmp_str(args, "device"), &p,
                      qmp_bool(args, "auto-finalize", true),
                      qmp_bool(args, "auto-dismiss", true),
                      (uint64_t)qmp_int(args, "speed", 0));
    return j ? job_start(j) : -1;
}

static int
cmd_blockdev_mirror(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { MIRROR_COMMON, NULL };
    struct node *src, *dst;
    int r = -1;

    (void)ret;
    if (qmp_check_args(args, spec) == -1 ||
        !(src = qmp_node(qmp_str(args, "device"))))
        return -1;
    dst = qmp_node(qmp_str(args, "target"));
    if (dst)
        r = start_mirror(srv, args, src, dst);
    node_unref(src);
    node_unref(dst);
    return r;
}

/* drive-mirror's target: created (mode absolute-paths, the default) as
 * a FMT image of SRC's size, backed by SRC's backing file unless
 * sync=full, or opened as it is (mode existing, e.g. an NBD URI). */
static struct node *
open_mirror_target(json_t *args, struct node *src)
{
    const char *target = qmp_str(args, "target");
    const char *fmt = qmp_str(args, "format");
    const char *mode = qmp_str(args, "mode");
    const char *nn = qmp_str(args, "node-name");
    bool full = !strcmp(qmp_str(args, "sync"), "full");
    struct node *n;
    vimg_node *h;

    if (!fmt)
        fmt = src->drv->name;
    if (mode && strcmp(mode, "existing") && strcmp(mode, "absolute-paths")) {
        vimg_error(EINVAL, "Parameter 'mode' does not accept value '%s'",
                   mode);
        return NULL;
    }
    if (!mode || strcmp(mode, "existing")) {
        char opts[4200];

        if (!full && src->backing && src->backing_full)
            snprintf(opts, sizeof opts,
                     "size=%llu,backing_file=%s,backing_fmt=%s",
                     (unsigned long long)src->size, src->backing_full,
                     src->backing->drv->name);
        else
            snprintf(opts, sizeof opts, "size=%llu",
                     (unsigned long long)src->size);
        if (vimg_create(fmt, target, opts, 0) == -1)
            return NULL;
    }
    h = vimg_open(target, fmt, VIMG_OPEN_RDWR);
    if (!h)
        return NULL;
    n = node_of(h);
    if (nn) {
        free(n->node_name);
        n->node_name = strdup(nn);
    }
    return n;
}

static int
cmd_drive_mirror(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { MIRROR_COMMON, "?format:s",
                                        "?node-name:s", "?mode:s",
                                        "?unmap:b", NULL };
    struct node *src, *dst;
    int r = -1;

    (void)ret;
    if (qmp_check_args(args, spec) == -1 ||
        !(src = qmp_node(qmp_str(args, "device"))))
        return -1;
    dst = open_mirror_target(args, src);
    if (dst)
        r = start_mirror(srv, args, src, dst);
    node_unref(src);
    node_unref(dst);
    return r;
}

/* --- stream ----------------------------------------------------------- */

/* A node of N's backing chain by node-name or by filename; NULL +
 * vimg_error if it is not there. */
static struct node *
chain_node(struct node *n, const char *nodename, const char *filename)
{
    for (struct node *b = n->backing; b; b = b->backing)
        if ((nodename && !strcmp(b->node_name, nodename)) ||
            (filename && b->filename && !strcmp(b->filename, filename))) {
            node_ref(b);
            return b;
        }
    vimg_error(ENOENT, "Base '%s' not found in the backing chain of '%s'",
               nodename ? nodename : filename, n->node_name);
    return NULL;
}

static int
cmd_block_stream(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = {
        "?job-id:s", "device:s", "?base:s", "?base-node:s", "?bottom:s",
        "?backing-file:s", "?speed:i", "?on-error:s", "?filter-node-name:s",
        "?auto-finalize:b", "?auto-dismiss:b", NULL
    };
    struct stream_params p = { 0 };
    const char *id = qmp_str(args, "job-id");
    struct job *j = NULL;

    (void)ret;
    if (qmp_check_args(args, spec) == -1 ||
        parse_on_error(args, "on-error", &p.on_error) == -1)
        return -1;
    if (qmp_str(args, "bottom")) {
        vimg_error(ENOTSUP, "Parameter 'bottom' is not supported; use "
                            "'base-node'");
        return -1;
    }
    if (qmp_int(args, "speed", 0) < 0) {
        vimg_error(EINVAL, "Parameter 'speed' expects a non negative "
                           "value");
        return -1;
    }
    if (!(p.top = qmp_node(qmp_str(args, "device"))))
        return -1;
    if ((qmp_str(args, "base-node") || qmp_str(args, "base")) &&
        !(p.base = chain_node(p.top, qmp_str(args, "base-node"),
                              qmp_str(args, "base"))))
        goto out;
    p.backing_file = qmp_str(args, "backing-file");
    j = stream_create(&srv->jobs, id ? id : qmp_str(args, "device"), &p,
                      qmp_bool(args, "auto-finalize", true),
                      qmp_bool(args, "auto-dismiss", true),
                      (uint64_t)qmp_int(args, "speed", 0));
out:
    node_unref(p.top);
    node_unref(p.base);
    return j ? job_start(j) : -1;
}

/* --- commit ----------------------------------------------------------- */

/* Active commit: a mirror of DEV into BASE, exports following. */
static struct job *
active_commit(struct server *srv, json_t *args, const char *id,
              struct node *dev, struct node *base, enum job_on_error err)
{
    struct mirror_params p = { .src = dev, .dst = base,
                               .sync = MIRROR_SYNC_TOP, .commit = true,
                               .on_source_error = err,
                               .on_target_error = err,
                               .switch_over = switch_exports,
                               .opaque = srv };

    for (struct node *b = dev; b != base; b = b->backing)
        p.top_depth++;
    if (node_reopen_rw(base) == -1)
        return NULL;
    return mirror_create(&srv->jobs, id, &p,
                         qmp_bool(args, "auto-finalize", true),
                         qmp_bool(args, "auto-dismiss", true),
                         (uint64_t)qmp_int(args, "speed", 0));
}

static int
cmd_block_commit(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = {
        "?job-id:s", "device:s", "?base-node:s", "?base:s", "?top-node:s",
        "?top:s", "?backing-file:s", "?speed:i", "?on-error:s",
        "?filter-node-name:s", "?auto-finalize:b", "?auto-dismiss:b", NULL
    };
    const char *id = qmp_str(args, "job-id");
    const char *tn = qmp_str(args, "top-node"), *tf = qmp_str(args, "top");
    struct commit_params p = { 0 };
    struct node *dev;
    struct job *j = NULL;

    (void)ret;
    if (qmp_check_args(args, spec) == -1 ||
        parse_on_error(args, "on-error", &p.on_error) == -1)
        return -1;
    if (qmp_int(args, "speed", 0) < 0) {
        vimg_error(EINVAL, "Parameter 'speed' expects a non negative "
                           "value");
        return -1;
    }
    if (!(dev = qmp_node(qmp_str(args, "device"))))
        return -1;
    if (!id)
        id = qmp_str(args, "device");
    if (!dev->backing) {
        vimg_error(EINVAL, "Top image file %s has no backing file",
                   dev->node_name);
        goto out;
    }
    if ((tn && strcmp(tn, dev->node_name)) ||
        (tf && dev->filename && strcmp(tf, dev->filename))) {
        if (!(p.top = chain_node(dev, tn, tf)))
            goto out;
    } else {
        p.top = dev;
        node_ref(dev);
    }
    if (qmp_str(args, "base-node") || qmp_str(args, "base")) {
        p.base = chain_node(p.top, qmp_str(args, "base-node"),
                            qmp_str(args, "base"));
    } else if (p.top->backing) {
        for (p.base = p.top->backing; p.base->backing;)
            p.base = p.base->backing;
        node_ref(p.base);
    } else {
        vimg_error(EINVAL, "Top image %s has no backing file",
                   p.top->node_name);
    }
    if (!p.base)
        goto out;
    if (p.top == dev) {
        j = active_commit(srv, args, id, dev, p.base, p.on_error);
    } else {
        for (p.above = dev; p.above->backing != p.top;)
            p.above = p.above->backing;
        p.backing_file = qmp_str(args, "backing-file");
        j = commit_create(&srv->jobs, id, &p,
                          qmp_bool(args, "auto-finalize", true),
                          qmp_bool(args, "auto-dismiss", true),
                          (uint64_t)qmp_int(args, "speed", 0));
    }
out:
    node_unref(p.top);
    node_unref(p.base);
    node_unref(dev);
    return j ? job_start(j) : -1;
}

static int
cmd_query_jobs(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { NULL };

    if (qmp_check_args(args, spec) == -1)
        return -1;
    *ret = job_query_jobs(&srv->jobs);
    return 0;
}

static int
cmd_query_block_jobs(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { NULL };

    if (qmp_check_args(args, spec) == -1)
        return -1;
    *ret = job_query_block_jobs(&srv->jobs);
    return 0;
}

/* The job verbs: job-X {id} and block-job-X {device}. */
enum verb { V_PAUSE, V_RESUME, V_CANCEL, V_COMPLETE, V_FINALIZE,
            V_DISMISS };

static int
run_verb(struct server *srv, enum verb v, const char *id, bool force)
{
    switch (v) {
    case V_PAUSE: return job_user_pause(&srv->jobs, id);
    case V_RESUME: return job_user_resume(&srv->jobs, id);
    case V_CANCEL: return job_user_cancel(&srv->jobs, id, force);
    case V_COMPLETE: return job_user_complete(&srv->jobs, id);
    case V_FINALIZE: return job_user_finalize(&srv->jobs, id);
    case V_DISMISS: return job_user_dismiss(&srv->jobs, id);
    }
    return -1;
}

static int
job_verb(struct server *srv, json_t *args, enum verb v)
{
    static const char *const spec[] = { "id:s", NULL };

    if (qmp_check_args(args, spec) == -1)
        return -1;
    return run_verb(srv, v, qmp_str(args, "id"), true);
}

/* block-job-*: an unknown job is DeviceNotActive, as in QEMU. */
static bool
job_exists(struct server *srv, const char *name)
{
    struct job *j;

    pthread_mutex_lock(&srv->jobs.lock);
    j = job_find_locked(&srv->jobs, name);
    pthread_mutex_unlock(&srv->jobs.lock);
    if (!j) {
        qmp_error_class("DeviceNotActive");
        vimg_error(ENOENT, "Block job '%s' not found", name);
    }
    return j != NULL;
}

static int
block_job_verb(struct server *srv, json_t *args, enum verb v)
{
    static const char *const dev[] = { "device:s", NULL };
    static const char *const cancel[] = { "device:s", "?force:b", NULL };
    static const char *const id[] = { "id:s", NULL };
    const char *name;

    if (qmp_check_args(args, v == V_CANCEL ? cancel
                             : v == V_FINALIZE || v == V_DISMISS ? id
                                                                 : dev) == -1)
        return -1;
    name = qmp_str(args, v == V_FINALIZE || v == V_DISMISS ? "id"
                                                           : "device");
    if (!job_exists(srv, name))
        return -1;
    return run_verb(srv, v, name, qmp_bool(args, "force", false));
}

#define VERB_CMDS(v, jname, bname)                                           \
    static int jname(struct server *srv, json_t *args, json_t **ret)         \
    {                                                                        \
        (void)ret;                                                           \
        return job_verb(srv, args, v);                                       \
    }                                                                        \
    static int bname(struct server *srv, json_t *args, json_t **ret)         \
    {                                                                        \
        (void)ret;                                                           \
        return block_job_verb(srv, args, v);                                 \
    }
VERB_CMDS(V_PAUSE, cmd_job_pause, cmd_block_job_pause)
VERB_CMDS(V_RESUME, cmd_job_resume, cmd_block_job_resume)
VERB_CMDS(V_CANCEL, cmd_job_cancel, cmd_block_job_cancel)
VERB_CMDS(V_COMPLETE, cmd_job_complete, cmd_block_job_complete)
VERB_CMDS(V_FINALIZE, cmd_job_finalize, cmd_block_job_finalize)
VERB_CMDS(V_DISMISS, cmd_job_dismiss, cmd_block_job_dismiss)

static int
cmd_block_job_set_speed(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { "device:s", "speed:i", NULL };

    (void)ret;
    if (qmp_check_args(args, spec) == -1)
        return -1;
    if (qmp_int(args, "speed", 0) < 0) {
        vimg_error(EINVAL, "Parameter 'speed' expects a non negative "
                           "value");
        return -1;
    }
    if (!job_exists(srv, qmp_str(args, "device")))
        return -1;
    return job_user_set_speed(&srv->jobs, qmp_str(args, "device"),
                              (uint64_t)qmp_int(args, "speed", 0));
}

const struct qmp_command qmp_job_commands[] = {
    { "blockdev-backup", cmd_blockdev_backup },
    { "drive-backup", cmd_drive_backup },
    { "blockdev-mirror", cmd_blockdev_mirror },
    { "drive-mirror", cmd_drive_mirror },
    { "block-stream", cmd_block_stream },
    { "block-commit", cmd_block_commit },
    { "query-jobs", cmd_query_jobs },
    { "query-block-jobs", cmd_query_block_jobs },
    { "job-pause", cmd_job_pause },
    { "job-resume", cmd_job_resume },
    { "job-cancel", cmd_job_cancel },
    { "job-complete", cmd_job_complete },
    { "job-finalize", cmd_job_finalize },
    { "job-dismiss", cmd_job_dismiss },
    { "block-job-pause", cmd_block_job_pause },
    { "block-job-resume", cmd_block_job_resume },
    { "block-job-cancel", cmd_block_job_cancel },
    { "block-job-complete", cmd_block_job_complete },
    { "block-job-finalize", cmd_block_job_finalize },
    { "block-job-dismiss", cmd_block_job_dismiss },
    { "block-job-set-speed", cmd_block_job_set_speed },
    { "transaction", qmp_transaction },
    { NULL, NULL },
};
