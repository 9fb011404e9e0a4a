/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The live jobs (lib/jobs/): constructors used by the QMP commands.
 * Each creates a job in state created (see lib/job.h) that the caller
 * starts with job_start(), or drops with job_discard() when a
 * transaction rolls back.
 */
#ifndef VIMG_JOBS_H
#define VIMG_JOBS_H

#include <stdbool.h>
#include <stdint.h>

#include "job.h"
#include "node.h"

/* QMP's MirrorSyncMode for backup (incremental = bitmap + on-success). */
enum backup_sync { BACKUP_SYNC_FULL, BACKUP_SYNC_TOP, BACKUP_SYNC_NONE,
                   BACKUP_SYNC_BITMAP };
/* BitmapSyncMode. */
enum bitmap_mode { BITMAP_MODE_ON_SUCCESS, BITMAP_MODE_ALWAYS,
                   BITMAP_MODE_NEVER };
/* BlockdevOnError, as far as jobs use it. */
enum job_on_error { ON_ERROR_REPORT, ON_ERROR_IGNORE, ON_ERROR_STOP };

struct backup_params {
    struct node *src, *dst; /* borrowed; the job takes references */
    enum backup_sync sync;
    const char *bitmap;     /* on SRC, or NULL; required for SYNC_BITMAP */
    enum bitmap_mode bitmap_mode;
    bool compress;
    enum job_on_error on_source_error, on_target_error;
};

/* Create a backup job: from here on, writes to SRC first copy the old
 * data to DST (copy-before-write), so DST ends up holding SRC as it is
 * now.  With a bitmap and a mode other than never, the bitmap restarts
 * from clean now (and gets its bits back if the job fails, with
 * on-success).  NULL + vimg_error on failure. */
struct job *backup_create(struct job_registry *reg, const char *id,
                          const struct backup_params *p, bool auto_finalize,
                          bool auto_dismiss, uint64_t speed,
                          struct job_txn *txn);

/* Copy [OFF, OFF+LEN) of SRC to DST (zeroes as zeroes; whole units of
 * COMPRESS_UNIT bytes compressed, 0 = never).  -1 + vimg_error; *IS_READ
 * says whether reading failed (else writing). */
int job_copy_range(struct node *src, struct node *dst, uint64_t off,
                   uint64_t len, uint32_t compress_unit, bool *is_read);

/* A copy step of job J failed (errno and message still set): emit
 * BLOCK_JOB_ERROR and apply ACT.  -1 (vimg_error kept) when the job must
 * fail (report); 0 when the step is to be retried (ignore, and stop,
 * which has paused the job). */
int job_copy_failed(struct job *j, enum job_on_error act, bool is_read);

/* Mirror (also the base of active commit). */
enum mirror_sync { MIRROR_SYNC_FULL, MIRROR_SYNC_TOP, MIRROR_SYNC_NONE };

struct mirror_params {
    struct node *src, *dst; /* borrowed; the job takes references */
    enum mirror_sync sync;
    uint32_t granularity;   /* bytes per dirty bit; 0 = 64 KiB */
    /* sync=top copies what the layers of SRC's chain above depth
     * TOP_DEPTH allocate (0 = 1: SRC alone); active commit sets it to
     * the depth of its base (DST).  COMMIT names the job "commit". */
    int top_depth;
    bool commit;
    enum job_on_error on_source_error, on_target_error;
    /* Once the copy has caught up and completion was asked for (or a
     * ready job was cancelled softly: SWITCH false), hold SRC's users
     * back, run FINAL(FINAL_OPAQUE) (it copies the last changes), and
     * with SWITCH make them use DST instead.  NULL: SRC has no users to
     * hold back or switch; FINAL runs directly. */
    int (*switch_over)(void *opaque, struct node *src, struct node *dst,
                       bool do_switch, int (*final)(void *),
                       void *final_opaque);
    void *opaque;
};

/* A mirror job: copies SRC to DST and keeps copying what is written to
 * SRC; ready once caught up; on job-complete switches SRC's users to
 * DST.  NULL + vimg_error. */
struct job *mirror_create(struct job_registry *reg, const char *id,
                          const struct mirror_params *p, bool auto_finalize,
                          bool auto_dismiss, uint64_t speed);

/* Stream: copy into TOP what its backing chain holds above BASE, then
 * make BASE (NULL: nothing) TOP's backing file, recorded as
 * BACKING_FILE (NULL: BASE's filename). */
struct stream_params {
    struct node *top, *base; /* borrowed; the job takes references */
    const char *backing_file;
    enum job_on_error on_error;
};

struct job *stream_create(struct job_registry *reg, const char *id,
                          const struct stream_params *p, bool auto_finalize,
                          bool auto_dismiss, uint64_t speed);

/* Intermediate commit: the data of TOP's chain above BASE goes into
 * BASE (which must be writable), then ABOVE (the node whose backing is
 * TOP) gets BASE as its backing, recorded as BACKING_FILE (NULL: BASE's
 * filename). */
struct commit_params {
    struct node *above, *top, *base; /* borrowed */
    const char *backing_file;
    enum job_on_error on_error;
};

struct job *commit_create(struct job_registry *reg, const char *id,
                          const struct commit_params *p, bool auto_finalize,
                          bool auto_dismiss, uint64_t speed);

#endif
