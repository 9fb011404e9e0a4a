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

#endif
