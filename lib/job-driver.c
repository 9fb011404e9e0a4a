/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The job calls drivers make from their run() (pause points, the speed
 * limit, progress, ready, I/O errors) and the queries (query-jobs,
 * query-block-jobs).  The state machine itself is lib/job.c; locking as
 * there: everything under reg->lock.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "job.h"
#include "job-internal.h"

/* --- queries ---------------------------------------------------------- */

json_t *
job_query_jobs(struct job_registry *reg)
{
    json_t *a = json_array();

    LOCK_GUARD(&reg->lock);
    for (struct job *j = reg->jobs; j && a; j = j->next) {
        json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I}", "id", j->id, "type",
                              j->drv->type, "status", job_status_names[j->status],
                              "current-progress", (json_int_t)j->progress,
                              "total-progress", (json_int_t)j->total);

        if (o && j->error)
            json_object_set_new(o, "error", json_string(j->error));
        json_array_append_new(a, o);
    }
    return a;
}

json_t *
job_query_block_jobs(struct job_registry *reg)
{
    json_t *a = json_array();

    LOCK_GUARD(&reg->lock);
    for (struct job *j = reg->jobs; j && a; j = j->next) {
        bool paused =
            j->status == JOB_STATUS_PAUSED || j->status == JOB_STATUS_STANDBY;
        bool ready =
            j->status == JOB_STATUS_READY || j->status == JOB_STATUS_STANDBY;
        json_t *o = json_pack(
            "{s:b,s:s,s:s,s:b,s:b,s:I,s:I,s:s,s:b,s:I,s:b,s:s}",
            "auto-finalize", j->auto_finalize, "io-status",
            j->io_status ? j->io_status : "ok", "device",
            j->id, "auto-dismiss", j->auto_dismiss, "busy", j->busy, "len",
            (json_int_t)j->total, "offset", (json_int_t)j->progress, "status",
            job_status_names[j->status], "paused", paused, "speed",
            (json_int_t)j->speed, "ready", ready, "type", j->drv->type);

        if (o && j->error)
            json_object_set_new(o, "error", json_string(j->error));
        json_array_append_new(a, o);
    }
    return a;
}

/* --- for drivers ------------------------------------------------------- */

bool
job_is_cancelled(struct job *j)
{
    LOCK_GUARD(&j->reg->lock);
    return j->cancelled || j->soft_cancel;
}

bool
job_pause_point(struct job *j)
{
    struct job_registry *reg = j->reg;

    LOCK_GUARD(&reg->lock);
    if (j->pause_count && !j->cancelled && !j->soft_cancel) {
        if (j->status == JOB_STATUS_RUNNING)
            job_set_status_locked(j, JOB_STATUS_PAUSED);
        else if (j->status == JOB_STATUS_READY)
            job_set_status_locked(j, JOB_STATUS_STANDBY);
        j->busy = false;
        while (j->pause_count && !j->cancelled && !j->soft_cancel)
            pthread_cond_wait(&reg->cond, &reg->lock);
        j->busy = true;
    }
    /* Whoever ended the pause may have set the status already. */
    if (j->status == JOB_STATUS_PAUSED)
        job_set_status_locked(j, JOB_STATUS_RUNNING);
    else if (j->status == JOB_STATUS_STANDBY)
        job_set_status_locked(j, JOB_STATUS_READY);
    return j->cancelled || j->soft_cancel;
}

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
job_rate_limit(struct job *j, uint64_t bytes)
{
    struct job_registry *reg = j->reg;

    LOCK_GUARD(&reg->lock);
    for (;;) {
        uint64_t now = now_ns(), due;
        struct timespec ts;

        if (j->speed == 0 || j->cancelled || j->soft_cancel || j->pause_count)
            return;
        if (j->rate_start_ns == 0 || now - j->rate_start_ns > 1000000000u) {
            j->rate_start_ns = now;
            j->rate_bytes = 0;
        }
        if (bytes) {
            j->rate_bytes += bytes;
            bytes = 0;
        }
        due = j->rate_start_ns +
              (uint64_t)((double)j->rate_bytes * 1e9 / (double)j->speed);
        if (due <= now)
            return;
        /* Sleep on the realtime clock the condition variable uses. */
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)((due - now) / 1000000000u);
        ts.tv_nsec += (long)((due - now) % 1000000000u);
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        j->busy = false;
        pthread_cond_timedwait(&reg->cond, &reg->lock, &ts);
        j->busy = true;
        if (j->rate_start_ns == 0) /* the speed changed: new window */
            return;
    }
}

void
job_set_progress(struct job *j, uint64_t done, uint64_t total)
{
    LOCK_GUARD(&j->reg->lock);
    j->progress = done;
    j->total = total;
}

void
job_set_ready(struct job *j)
{
    LOCK_GUARD(&j->reg->lock);
    if (j->status != JOB_STATUS_RUNNING)
        return;
    job_set_status_locked(j, JOB_STATUS_READY);
    job_emit_locked(j->reg, "BLOCK_JOB_READY", job_block_event_data(j));
}

bool
job_cancel_is_soft(struct job *j)
{
    LOCK_GUARD(&j->reg->lock);
    return j->soft_cancel && !j->cancelled;
}

bool
job_should_complete(struct job *j)
{
    LOCK_GUARD(&j->reg->lock);
    return j->complete_requested;
}

void
job_io_error(struct job *j, bool is_read, const char *action, int err)
{
    LOCK_GUARD(&j->reg->lock);
    job_emit_locked(j->reg, "BLOCK_JOB_ERROR",
                json_pack("{s:s,s:s,s:s}", "device", j->id, "operation",
                          is_read ? "read" : "write", "action", action));
    if (!strcmp(action, "stop") && !j->user_paused) {
        j->user_paused = true;
        j->pause_count++;
        j->io_status = err == ENOSPC ? "nospace" : "failed";
    }
}
