/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Shared by lib/job.c (the state machine) and lib/job-driver.c. */
#ifndef VIMG_JOB_INTERNAL_H
#define VIMG_JOB_INTERNAL_H

#include <jansson.h>

#include "job.h"

extern const char *const job_status_names[JOB_STATUS__MAX];
/* Emit event NAME with DATA (taken) to the registry's listener; caller
 * holds reg->lock. */
void job_emit_locked(struct job_registry *reg, const char *name,
                     json_t *data);
/* Move J to status S (a legal transition) with JOB_STATUS_CHANGE. */
void job_set_status_locked(struct job *j, enum job_status s);
/* The data of the BLOCK_JOB_* events for J (new reference). */
json_t *job_block_event_data(const struct job *j);

#endif
