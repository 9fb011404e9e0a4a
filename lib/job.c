/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The job state machine (see job.h): QMP's statuses, transitions, verbs
 * and events, transactions, pausing, cancelling and the speed limit.
 * Transitions follow QEMU's qapi/job.json; an impossible transition is a
 * bug and aborts.  Everything here runs under reg->lock except the
 * driver callbacks; a transaction being finalized or aborted is marked
 * so that no second thread starts the same work while the lock is
 * dropped around them.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "error.h"
#include "job.h"
#include "job-internal.h"
#include "vimg.h"

struct job_txn {
    unsigned refcnt; /* creator + one per job; by reg->lock */
    bool aborting;   /* a job failed or was cancelled */
    bool ending;     /* finalize or abort is in progress or done */
};

const char *const job_status_names[JOB_STATUS__MAX] = {
    "undefined", "created", "running",  "paused",    "ready", "standby",
    "waiting",   "pending", "aborting", "concluded", "null",
};

static const char *const verb_names[JOB_VERB__MAX] = {
    "cancel", "pause",    "resume",   "set-speed",
    "change", "complete", "finalize", "dismiss",
};

#define S(x) (1u << JOB_STATUS_##x)
/* Allowed next statuses of each status. */
static const unsigned transitions[JOB_STATUS__MAX] = {
    [JOB_STATUS_UNDEFINED] = S(CREATED),
    [JOB_STATUS_CREATED] = S(RUNNING) | S(ABORTING) | S(NULL),
    [JOB_STATUS_RUNNING] = S(PAUSED) | S(READY) | S(WAITING) | S(ABORTING),
    [JOB_STATUS_PAUSED] = S(RUNNING),
    [JOB_STATUS_READY] = S(STANDBY) | S(WAITING) | S(ABORTING),
    [JOB_STATUS_STANDBY] = S(READY),
    [JOB_STATUS_WAITING] = S(PENDING) | S(ABORTING),
    [JOB_STATUS_PENDING] = S(ABORTING) | S(CONCLUDED),
    [JOB_STATUS_ABORTING] = S(ABORTING) | S(CONCLUDED),
    [JOB_STATUS_CONCLUDED] = S(NULL),
};

/* Statuses in which each verb is accepted. */
static const unsigned verbs[JOB_VERB__MAX] = {
    [JOB_VERB_CANCEL] = S(CREATED) | S(RUNNING) | S(PAUSED) | S(READY) |
                        S(STANDBY) | S(WAITING) | S(PENDING),
    [JOB_VERB_PAUSE] =
        S(CREATED) | S(RUNNING) | S(PAUSED) | S(READY) | S(STANDBY),
    [JOB_VERB_RESUME] =
        S(CREATED) | S(RUNNING) | S(PAUSED) | S(READY) | S(STANDBY),
    [JOB_VERB_SET_SPEED] =
        S(CREATED) | S(RUNNING) | S(PAUSED) | S(READY) | S(STANDBY),
    [JOB_VERB_CHANGE] =
        S(CREATED) | S(RUNNING) | S(PAUSED) | S(READY) | S(STANDBY),
    [JOB_VERB_COMPLETE] = S(READY) | S(STANDBY),
    [JOB_VERB_FINALIZE] = S(PENDING),
    [JOB_VERB_DISMISS] = S(CONCLUDED),
};
#undef S

const char *
job_status_name(enum job_status s)
{
    return s < JOB_STATUS__MAX ? job_status_names[s] : "undefined";
}

void
job_emit_locked(struct job_registry *reg, const char *name, json_t *data)
{
    if (reg->event && data)
        reg->event(reg->opaque, name, data);
    json_decref(data);
}

void
job_set_status_locked(struct job *j, enum job_status s)
{
    if (j->status != s && !(transitions[j->status] & (1u << s)))
        abort(); /* a bug in this file */
    if (j->status == s)
        return;
    j->status = s;
    job_emit_locked(j->reg, "JOB_STATUS_CHANGE",
                json_pack("{s:s,s:s}", "status", job_status_names[s], "id", j->id));
    pthread_cond_broadcast(&j->reg->cond);
}

json_t *
job_block_event_data(const struct job *j)
{
    return json_pack("{s:s,s:I,s:I,s:I,s:s}", "device", j->id, "len",
                     (json_int_t)j->total, "offset", (json_int_t)j->progress,
                     "speed", (json_int_t)j->speed, "type", j->drv->type);
}

void
job_registry_init(struct job_registry *reg,
                  void (*event)(void *, const char *, json_t *), void *opaque)
{
    pthread_mutex_init(&reg->lock, NULL);
    pthread_cond_init(&reg->cond, NULL);
    reg->jobs = NULL;
    reg->nthreads = 0;
    reg->event = event;
    reg->opaque = opaque;
}

struct job *
job_find_locked(struct job_registry *reg, const char *id)
{
    for (struct job *j = reg->jobs; j; j = j->next)
        if (!strcmp(j->id, id))
            return j;
    return NULL;
}

static bool
valid_id(const char *id)
{
    if (!((*id >= 'a' && *id <= 'z') || (*id >= 'A' && *id <= 'Z')))
        return false;
    for (const char *p = id; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    "0123456789-._",
                    *p))
            return false;
    return strlen(id) < 128;
}

struct job_txn *
job_txn_new(void)
{
    struct job_txn *t = calloc(1, sizeof *t);

    if (!t) {
        vimg_error(ENOMEM, "out of memory");
        return NULL;
    }
    t->refcnt = 1;
    return t;
}

static void
txn_unref_locked(struct job_txn *t)
{
    if (t && --t->refcnt == 0)
        free(t);
}

void
job_txn_unref(struct job_registry *reg, struct job_txn *t)
{
    LOCK_GUARD(&reg->lock);
    txn_unref_locked(t);
}

struct job *
job_create(struct job_registry *reg, const char *id,
           const struct job_driver *drv, void *opaque, bool auto_finalize,
           bool auto_dismiss, uint64_t speed, struct job_txn *txn)
{
    struct job *j;

    if (!valid_id(id)) {
        vimg_error(EINVAL, "Invalid job ID '%s'", id);
        return NULL;
    }
    LOCK_GUARD(&reg->lock);
    if (job_find_locked(reg, id)) {
        vimg_error(EEXIST, "Job ID '%s' already in use", id);
        return NULL;
    }
    j = calloc(1, sizeof *j);
    if (!j || !(j->id = strdup(id))) {
        free(j);
        vimg_error(ENOMEM, "out of memory");
        return NULL;
    }
    if (txn) {
        txn->refcnt++;
    } else if (!(txn = job_txn_new())) { /* the job's own reference */
        free(j->id);
        free(j);
        return NULL;
    }
    j->txn = txn;
    j->reg = reg;
    j->drv = drv;
    j->opaque = opaque;
    j->auto_finalize = auto_finalize;
    j->auto_dismiss = auto_dismiss;
    j->speed = speed;
    j->refcnt = 1;
    j->next = reg->jobs;
    reg->jobs = j;
    job_set_status_locked(j, JOB_STATUS_CREATED);
    return j;
}

static void
job_unref_locked(struct job *j)
{
    if (--j->refcnt)
        return;
    txn_unref_locked(j->txn);
    free(j->error);
    free(j->id);
    free(j);
}

static void
remove_locked(struct job *j)
{
    for (struct job **pp = &j->reg->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    pthread_cond_broadcast(&j->reg->cond);
    job_unref_locked(j);
}

/* concluded, and gone at once with auto-dismiss. */
static void
conclude_locked(struct job *j)
{
    job_set_status_locked(j, JOB_STATUS_CONCLUDED);
    if (j->auto_dismiss) {
        job_set_status_locked(j, JOB_STATUS_NULL);
        remove_locked(j);
    }
}

/* Every job of T (that is still listed) into V; references taken. */
static size_t
txn_jobs_locked(struct job_registry *reg, struct job_txn *t, struct job **v,
                size_t max)
{
    size_t n = 0;

    for (struct job *j = reg->jobs; j && n < max; j = j->next)
        if (j->txn == t) {
            j->refcnt++;
            v[n++] = j;
        }
    return n;
}

#define TXN_MAX 64

/* The transaction failed: abort every job, then report and conclude. */
static void
txn_abort_locked(struct job_registry *reg, struct job_txn *t)
{
    struct job *v[TXN_MAX];
    size_t n;

    if (t->ending)
        return;
    t->ending = true;
    n = txn_jobs_locked(reg, t, v, TXN_MAX);
    for (size_t i = 0; i < n; i++)
        job_set_status_locked(v[i], JOB_STATUS_ABORTING);
    for (size_t i = 0; i < n; i++) {
        struct job *j = v[i];

        pthread_mutex_unlock(&reg->lock);
        if (j->drv->abort)
            j->drv->abort(j);
        if (j->drv->clean)
            j->drv->clean(j);
        pthread_mutex_lock(&reg->lock);
        if (j->error) {
            json_t *d = job_block_event_data(j);

            json_object_set_new(d, "error", json_string(j->error));
            job_emit_locked(reg, "BLOCK_JOB_COMPLETED", d);
        } else {
            job_emit_locked(reg, "BLOCK_JOB_CANCELLED", job_block_event_data(j));
        }
        conclude_locked(j);
        job_unref_locked(j);
    }
}

/* Every job of the transaction is pending and may be finalized. */
static void
txn_finalize_locked(struct job_registry *reg, struct job_txn *t)
{
    struct job *v[TXN_MAX];
    size_t n;

    if (t->ending)
        return;
    t->ending = true;
    n = txn_jobs_locked(reg, t, v, TXN_MAX);
    for (size_t i = 0; i < n; i++) {
        struct job *j = v[i];
        int r = 0;

        pthread_mutex_unlock(&reg->lock);
        if (j->drv->commit)
            r = j->drv->commit(j);
        if (r == -1 && !j->error)
            j->error = strdup(vimg_get_error());
        if (j->drv->clean)
            j->drv->clean(j);
        pthread_mutex_lock(&reg->lock);
        {
            json_t *d = job_block_event_data(j);

            if (j->error)
                json_object_set_new(d, "error", json_string(j->error));
            job_emit_locked(reg, "BLOCK_JOB_COMPLETED", d);
        }
        conclude_locked(j);
        job_unref_locked(j);
    }
}

/* All jobs of T have finished their run successfully: pending, then
 * finalize unless one of them waits for job-finalize. */
static void
txn_success_locked(struct job_registry *reg, struct job_txn *t)
{
    bool manual = false;

    for (struct job *j = reg->jobs; j; j = j->next)
        if (j->txn == t) {
            job_set_status_locked(j, JOB_STATUS_PENDING);
            if (!j->auto_finalize) {
                manual = true;
                job_emit_locked(
                    reg, "BLOCK_JOB_PENDING",
                    json_pack("{s:s,s:s}", "type", j->drv->type, "id", j->id));
            }
        }
    if (!manual)
        txn_finalize_locked(reg, t);
}

static bool
txn_all_finished_locked(struct job_registry *reg, struct job_txn *t)
{
    for (struct job *j = reg->jobs; j; j = j->next)
        if (j->txn == t && !j->finished_run)
            return false;
    return true;
}

/* Cancel the other jobs of T; they come back through job_finished. */
static void
txn_cancel_others_locked(struct job_registry *reg, struct job_txn *t)
{
    t->aborting = true;
    for (struct job *j = reg->jobs; j; j = j->next)
        if (j->txn == t && !j->finished_run) {
            j->cancelled = true;
            j->pause_count = 0;
            j->user_paused = false;
        }
    pthread_cond_broadcast(&reg->cond);
}

/* J's run returned R. */
static void
job_finished_locked(struct job *j)
{
    struct job_registry *reg = j->reg;
    struct job_txn *t = j->txn;
    bool failed = j->ret < 0 || (j->cancelled && !j->soft_cancel);

    j->finished_run = true;
    j->busy = false;
    if (failed) {
        job_set_status_locked(j, JOB_STATUS_ABORTING);
        txn_cancel_others_locked(reg, t);
    } else if (!t->aborting) {
        job_set_status_locked(j, JOB_STATUS_WAITING);
    }
    if (!txn_all_finished_locked(reg, t))
        return;
    if (t->aborting)
        txn_abort_locked(reg, t);
    else
        txn_success_locked(reg, t);
}

static void *
job_thread(void *arg)
{
    struct job *j = arg;
    struct job_registry *reg = j->reg;
    int r = j->drv->run(j);
    CLEANUP_FREE char *msg = r < 0 ? strdup(vimg_get_error()) : NULL;

    pthread_mutex_lock(&reg->lock);
    j->ret = r;
    if (r < 0 && !j->error) {
        j->error = msg;
        msg = NULL;
    }
    job_finished_locked(j);
    job_unref_locked(j);
    reg->nthreads--;
    pthread_cond_broadcast(&reg->cond);
    pthread_mutex_unlock(&reg->lock);
    return NULL;
}

int
job_start(struct job *j)
{
    pthread_attr_t attr;
    int e;

    LOCK_GUARD(&j->reg->lock);
    j->refcnt++;
    j->busy = true;
    j->reg->nthreads++;
    job_set_status_locked(j, JOB_STATUS_RUNNING);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    e = pthread_create(&j->thread, &attr, job_thread, j);
    pthread_attr_destroy(&attr);
    if (e) {
        j->refcnt--;
        j->reg->nthreads--;
        j->ret = -1;
        j->error = strdup("cannot start the job's thread");
        job_finished_locked(j);
        vimg_error(e, "cannot start job '%s': %m", j->id);
        return -1;
    }
    return 0;
}

int
job_start_paused(struct job *j)
{
    struct job_registry *reg = j->reg;

    pthread_mutex_lock(&reg->lock);
    j->pause_count++;
    pthread_mutex_unlock(&reg->lock);
    if (job_start(j) == -1)
        return -1;
    pthread_mutex_lock(&reg->lock);
    if (j->status == JOB_STATUS_RUNNING)
        job_set_status_locked(j, JOB_STATUS_PAUSED);
    pthread_mutex_unlock(&reg->lock);
    return 0;
}

void
job_resume_internal(struct job *j)
{
    struct job_registry *reg = j->reg;

    LOCK_GUARD(&reg->lock);
    if (j->pause_count)
        j->pause_count--;
    if (!j->pause_count && j->status == JOB_STATUS_PAUSED)
        job_set_status_locked(j, JOB_STATUS_RUNNING);
    pthread_cond_broadcast(&reg->cond);
}

void
job_discard(struct job *j)
{
    struct job_registry *reg = j->reg;

    pthread_mutex_lock(&reg->lock);
    job_set_status_locked(j, JOB_STATUS_NULL);
    pthread_mutex_unlock(&reg->lock);
    if (j->drv->abort)
        j->drv->abort(j);
    if (j->drv->clean)
        j->drv->clean(j);
    pthread_mutex_lock(&reg->lock);
    remove_locked(j);
    pthread_mutex_unlock(&reg->lock);
}

/* --- verbs ------------------------------------------------------------ */

/* The job ID, if it accepts VERB now; else NULL + vimg_error. */
static struct job *
verb_job_locked(struct job_registry *reg, const char *id, enum job_verb verb)
{
    struct job *j = job_find_locked(reg, id);

    if (!j) {
        vimg_error(ENOENT, "Job not found"); /* QEMU's words */
        return NULL;
    }
    if (!(verbs[verb] & (1u << j->status))) {
        vimg_error(EBUSY,
                   "Job '%s' in state '%s' cannot accept command "
                   "verb '%s'",
                   id, job_status_names[j->status], verb_names[verb]);
        return NULL;
    }
    return j;
}

int
job_user_cancel(struct job_registry *reg, const char *id, bool force)
{
    struct job *j;

    LOCK_GUARD(&reg->lock);
    j = verb_job_locked(reg, id, JOB_VERB_CANCEL);
    if (!j)
        return -1;
    if (j->finished_run) {
        /* waiting or pending: the whole transaction is aborted */
        j->cancelled = true;
        txn_cancel_others_locked(reg, j->txn);
        if (j->status == JOB_STATUS_WAITING || j->status == JOB_STATUS_PENDING)
            job_set_status_locked(j, JOB_STATUS_ABORTING);
        if (txn_all_finished_locked(reg, j->txn))
            txn_abort_locked(reg, j->txn);
        return 0;
    }
    if (!force &&
        (j->status == JOB_STATUS_READY || j->status == JOB_STATUS_STANDBY))
        j->soft_cancel = true;
    else
        j->cancelled = true;
    /* A cancelled job does not stay paused. */
    j->pause_count = 0;
    j->user_paused = false;
    pthread_cond_broadcast(&reg->cond);
    return 0;
}

int
job_user_pause(struct job_registry *reg, const char *id)
{
    struct job *j;

    LOCK_GUARD(&reg->lock);
    j = verb_job_locked(reg, id, JOB_VERB_PAUSE);
    if (!j)
        return -1;
    if (j->user_paused) {
        vimg_error(EBUSY, "Job is already paused");
        return -1;
    }
    j->user_paused = true;
    j->pause_count++;
    pthread_cond_broadcast(&reg->cond);
    return 0;
}

int
job_user_resume(struct job_registry *reg, const char *id)
{
    struct job *j;

    LOCK_GUARD(&reg->lock);
    j = verb_job_locked(reg, id, JOB_VERB_RESUME);
    if (!j)
        return -1;
    if (!j->user_paused) {
        vimg_error(EINVAL, "Can't resume a job that was not paused");
        return -1;
    }
    j->user_paused = false;
    j->pause_count--;
    j->io_status = NULL; /* a stopped job retries */
    pthread_cond_broadcast(&reg->cond);
    return 0;
}

int
job_user_complete(struct job_registry *reg, const char *id)
{
    struct job *j;

    LOCK_GUARD(&reg->lock);
    j = verb_job_locked(reg, id, JOB_VERB_COMPLETE);
    if (!j)
        return -1;
    if (j->cancelled || j->soft_cancel) {
        vimg_error(EINVAL, "Job '%s' has been cancelled", id);
        return -1;
    }
    j->complete_requested = true;
    pthread_cond_broadcast(&reg->cond);
    return 0;
}

int
job_user_finalize(struct job_registry *reg, const char *id)
{
    struct job *j;

    LOCK_GUARD(&reg->lock);
    j = verb_job_locked(reg, id, JOB_VERB_FINALIZE);
    if (!j)
        return -1;
    txn_finalize_locked(reg, j->txn);
    return 0;
}

int
job_user_dismiss(struct job_registry *reg, const char *id)
{
    struct job *j;

    LOCK_GUARD(&reg->lock);
    j = verb_job_locked(reg, id, JOB_VERB_DISMISS);
    if (!j)
        return -1;
    job_set_status_locked(j, JOB_STATUS_NULL);
    remove_locked(j);
    return 0;
}

int
job_user_set_speed(struct job_registry *reg, const char *id, uint64_t speed)
{
    struct job *j;

    LOCK_GUARD(&reg->lock);
    j = verb_job_locked(reg, id, JOB_VERB_SET_SPEED);
    if (!j)
        return -1;
    j->speed = speed;
    j->rate_bytes = 0;
    j->rate_start_ns = 0;
    pthread_cond_broadcast(&reg->cond);
    return 0;
}

void
job_cancel_all_sync(struct job_registry *reg)
{
    LOCK_GUARD(&reg->lock);
    for (;;) {
        struct job *j = reg->jobs;
        bool waiting = false;

        for (; j; j = j->next) {
            if (j->status == JOB_STATUS_CONCLUDED) {
                job_set_status_locked(j, JOB_STATUS_NULL);
                remove_locked(j);
                waiting = true; /* the list changed: rescan */
                break;
            }
            if (!j->finished_run) {
                j->cancelled = true;
                j->pause_count = 0;
                j->user_paused = false;
            } else if (j->status == JOB_STATUS_PENDING ||
                       j->status == JOB_STATUS_WAITING) {
                j->cancelled = true;
                txn_cancel_others_locked(reg, j->txn);
                job_set_status_locked(j, JOB_STATUS_ABORTING);
                if (txn_all_finished_locked(reg, j->txn)) {
                    txn_abort_locked(reg, j->txn);
                    waiting = true;
                    break;
                }
            }
        }
        if (waiting)
            continue;
        if (!reg->jobs && reg->nthreads == 0)
            return;
        pthread_cond_broadcast(&reg->cond);
        pthread_cond_wait(&reg->cond, &reg->lock);
    }
}

int
job_wait_concluded(struct job_registry *reg, const char *id)
{
    LOCK_GUARD(&reg->lock);
    for (;;) {
        struct job *j = job_find_locked(reg, id);

        if (!j)
            return 0;
        if (j->status == JOB_STATUS_CONCLUDED ||
            j->status == JOB_STATUS_PENDING)
            return 0;
        pthread_cond_wait(&reg->cond, &reg->lock);
    }
}
