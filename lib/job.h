/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Live jobs (backup, mirror, commit, stream): QMP's job state machine,
 * verbs and events, independent of what a job copies.
 *
 * A job runs its driver's run() on a thread of its own.  run() copies
 * in bounded steps and calls job_pause_point() between them (which
 * blocks while the job is paused and says when it was cancelled) and
 * job_rate_limit() after each step.  A job that mirrors calls
 * job_set_ready() once the copy has caught up and then keeps going
 * until job_should_complete().  When run() returns, the job waits for
 * the other jobs of its transaction; then all of them become pending,
 * are finalized (driver commit(), or abort() if any failed or was
 * cancelled), report BLOCK_JOB_COMPLETED or BLOCK_JOB_CANCELLED, and
 * conclude; auto-finalize and auto-dismiss decide whether a client has
 * to say job-finalize and job-dismiss.
 *
 * Locking: one mutex per registry (reg->lock) protects every job's
 * status, flags and list membership; events are emitted under it, in
 * order.  Drivers' run(), commit() and abort() are called without it.
 */
#ifndef VIMG_JOB_H
#define VIMG_JOB_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

enum job_status {
    JOB_STATUS_UNDEFINED,
    JOB_STATUS_CREATED,
    JOB_STATUS_RUNNING,
    JOB_STATUS_PAUSED,
    JOB_STATUS_READY,
    JOB_STATUS_STANDBY,
    JOB_STATUS_WAITING,
    JOB_STATUS_PENDING,
    JOB_STATUS_ABORTING,
    JOB_STATUS_CONCLUDED,
    JOB_STATUS_NULL,
    JOB_STATUS__MAX
};

enum job_verb {
    JOB_VERB_CANCEL,
    JOB_VERB_PAUSE,
    JOB_VERB_RESUME,
    JOB_VERB_SET_SPEED,
    JOB_VERB_CHANGE,
    JOB_VERB_COMPLETE,
    JOB_VERB_FINALIZE,
    JOB_VERB_DISMISS,
    JOB_VERB__MAX
};

struct job;

struct job_driver {
    const char *type; /* QMP JobType: "backup", "mirror", "commit", ... */
    /* The work; 0, or -1 with vimg_error (the job then fails with that
     * message).  Return promptly (any value) once cancelled. */
    int (*run)(struct job *j);
    /* The transaction succeeded: make the result permanent (a pivot, a
     * bitmap cleared).  A failure here is reported as the job's error. */
    int (*commit)(struct job *j);
    /* The job or its transaction failed or was cancelled: undo. */
    void (*abort)(struct job *j);
    /* Release the driver's state (after commit or abort). */
    void (*clean)(struct job *j);
};

/* Where jobs live and where their events go. */
struct job_registry {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* any job changed */
    struct job *jobs;    /* by lock */
    unsigned nthreads;   /* job threads still running, by lock */
    /* Called under lock for each event, in order; DATA is borrowed. */
    void (*event)(void *opaque, const char *name, json_t *data);
    void *opaque;
};

/* A group of jobs that succeed or fail together (QMP transaction with
 * completion-mode grouped); a job alone has a transaction of one. */
struct job_txn;

struct job {
    struct job_registry *reg;
    const struct job_driver *drv;
    void *opaque; /* the driver's state */
    char *id;
    struct job *next; /* reg->jobs */
    struct job_txn *txn;
    unsigned refcnt; /* registry + thread; by reg->lock */

    /* By reg->lock. */
    enum job_status status;
    bool auto_finalize, auto_dismiss;
    bool cancelled;   /* job-cancel / force block-job-cancel */
    bool soft_cancel; /* block-job-cancel of a ready job: finish
                       * without completing (no pivot) */
    bool complete_requested;
    bool user_paused;
    unsigned pause_count;
    bool finished_run; /* run() returned */
    int ret;           /* run()'s result, then commit's */
    char *error;       /* the failure message, or NULL */
    uint64_t progress, total;
    uint64_t speed;                     /* bytes per second, 0 = unlimited */
    const char *io_status; /* query-block-jobs' io-status; NULL = ok */
    uint64_t rate_start_ns, rate_bytes; /* the current rate window */
    bool busy;

    pthread_t thread;
};

void job_registry_init(struct job_registry *reg,
                       void (*event)(void *, const char *, json_t *),
                       void *opaque);

/* A new job in state created; NULL + vimg_error if ID is taken.  The
 * registry owns it.  TXN: join that transaction (NULL: a new one). */
struct job *job_create(struct job_registry *reg, const char *id,
                       const struct job_driver *drv, void *opaque,
                       bool auto_finalize, bool auto_dismiss, uint64_t speed,
                       struct job_txn *txn);
/* A transaction for grouped jobs: pass it to job_create for each; drop
 * the caller's reference with job_txn_unref once all are created. */
struct job_txn *job_txn_new(void);
void job_txn_unref(struct job_registry *reg, struct job_txn *txn);
/* Start the job's thread: created -> running. */
int job_start(struct job *j);
/* Start J held paused (running, then paused), as QEMU starts the jobs
 * of a transaction inside a drained section; job_resume_internal ends
 * that pause (running again). */
int job_start_paused(struct job *j);
void job_resume_internal(struct job *j);
/* Fail a created job that never started (a transaction rolled back). */
void job_discard(struct job *j);

struct job *job_find_locked(struct job_registry *reg, const char *id);

/* The verbs; 0 or -1 + vimg_error with QEMU's message ("Job 'X' in
 * state 'Y' cannot accept command verb 'Z'").  Take reg->lock. */
int job_user_cancel(struct job_registry *reg, const char *id, bool force);
int job_user_pause(struct job_registry *reg, const char *id);
int job_user_resume(struct job_registry *reg, const char *id);
int job_user_complete(struct job_registry *reg, const char *id);
int job_user_finalize(struct job_registry *reg, const char *id);
int job_user_dismiss(struct job_registry *reg, const char *id);
int job_user_set_speed(struct job_registry *reg, const char *id,
                       uint64_t speed);
/* Cancel every job and wait until none is left and every job thread
 * has ended (server shutdown). */
void job_cancel_all_sync(struct job_registry *reg);
/* Wait until job ID reaches concluded or disappears; -1 if unknown. */
int job_wait_concluded(struct job_registry *reg, const char *id);

/* query-jobs / query-block-jobs entries for every job; new references. */
json_t *job_query_jobs(struct job_registry *reg);
json_t *job_query_block_jobs(struct job_registry *reg);

/* For drivers, on the job's thread. */
/* Block while paused; true if the job was cancelled (hard or soft). */
bool job_pause_point(struct job *j);
bool job_is_cancelled(struct job *j);
/* Account BYTES copied and sleep as the speed limit requires. */
void job_rate_limit(struct job *j, uint64_t bytes);
void job_set_progress(struct job *j, uint64_t done, uint64_t total);
/* running -> ready, with BLOCK_JOB_READY. */
void job_set_ready(struct job *j);
/* The job was cancelled softly (block-job-cancel of a ready job). */
bool job_cancel_is_soft(struct job *j);
/* job-complete was asked for (the job is ready). */
bool job_should_complete(struct job *j);
/* Emit BLOCK_JOB_ERROR for an I/O error (errno ERR) the driver handles
 * by ACTION ("report", "ignore", "stop"); "stop" also pauses the job
 * (io-status nospace or failed until resumed).  With ignore and stop the
 * driver retries the failed range (as QEMU). */
void job_io_error(struct job *j, bool is_read, const char *action,
                  int err);

const char *job_status_name(enum job_status s);

#endif
