/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for lib/job.c: the status sequences and events QMP clients
 * see (checked against the sequences qemu-storage-daemon 7.2 emits, as
 * recorded in the project's reference notes), the verbs and their
 * errors, transactions and the speed limit, with a fake driver whose
 * run() is steered by the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "error.h"
#include "job.h"
#include "vimg.h"

#define UNUSED __attribute__((unused))

/* Events as "NAME" or "status" strings, joined by spaces. */
static char events[4096];

static void
on_event(void *opaque UNUSED, const char *name, json_t *data)
{
    char item[256];

    if (!strcmp(name, "JOB_STATUS_CHANGE"))
        snprintf(item, sizeof item, "%s",
                 json_string_value(json_object_get(data, "status")));
    else if (json_object_get(data, "error"))
        snprintf(item, sizeof item, "%s(%s)", name,
                 json_string_value(json_object_get(data, "error")));
    else
        snprintf(item, sizeof item, "%s", name);
    if (events[0])
        strncat(events, " ", sizeof events - strlen(events) - 1);
    strncat(events, item, sizeof events - strlen(events) - 1);
}

/* The fake driver's steering. */
struct fake {
    int fail;        /* run returns -1 with "boom" */
    int mirror;      /* become ready, then wait for complete */
    uint64_t bytes;  /* bytes to account through the rate limit */
    volatile int go; /* run waits for this (or cancel) */
    int committed, aborted, cleaned;
};

static int
fake_run(struct job *j)
{
    struct fake *f = j->opaque;

    while (!f->go) {
        if (job_pause_point(j))
            return 0;
        usleep(1000);
    }
    for (uint64_t done = 0; done < f->bytes; done += 65536) {
        if (job_pause_point(j))
            return 0;
        job_rate_limit(j, 65536);
        job_set_progress(j, done + 65536, f->bytes);
    }
    if (f->fail) {
        vimg_error(EIO, "boom");
        return -1;
    }
    if (f->mirror) {
        job_set_ready(j);
        while (!job_should_complete(j)) {
            if (job_pause_point(j))
                return 0;
            usleep(1000);
        }
    }
    return 0;
}

static int
fake_commit(struct job *j)
{
    ((struct fake *)j->opaque)->committed++;
    return 0;
}

static void
fake_abort(struct job *j)
{
    ((struct fake *)j->opaque)->aborted++;
}

static void
fake_clean(struct job *j)
{
    ((struct fake *)j->opaque)->cleaned++;
}

static const struct job_driver fake_driver = {
    .type = "backup",
    .run = fake_run,
    .commit = fake_commit,
    .abort = fake_abort,
    .clean = fake_clean,
};

static struct job_registry reg;

static int
setup(void **state UNUSED)
{
    events[0] = '\0';
    job_registry_init(&reg, on_event, NULL);
    return 0;
}

/* Every job gone and every job thread ended before the next test. */
static int
teardown(void **state UNUSED)
{
    job_cancel_all_sync(&reg);
    return 0;
}

/* Wait until no job is left or job ID has STATUS. */
static void
wait_status(const char *id, enum job_status status)
{
    for (int i = 0; i < 5000; i++) {
        struct job *j;
        bool done;

        pthread_mutex_lock(&reg.lock);
        j = job_find_locked(&reg, id);
        done = status == JOB_STATUS_NULL ? !j : j && j->status == status;
        pthread_mutex_unlock(&reg.lock);
        if (done)
            return;
        usleep(1000);
    }
    fail_msg("job %s never reached %s; events: %s", id, job_status_name(status),
             events);
}

static struct job *
start(const char *id, struct fake *f, bool af, bool ad, uint64_t speed,
      struct job_txn *t)
{
    struct job *j = job_create(&reg, id, &fake_driver, f, af, ad, speed, t);

    assert_non_null(j);
    assert_int_equal(job_start(j), 0);
    return j;
}

static void
test_job_success_sequence(void **state UNUSED)
{
    struct fake f = {.go = 1, .bytes = 1 << 20};

    start("j0", &f, true, true, 0, NULL);
    wait_status("j0", JOB_STATUS_NULL);
    assert_string_equal(events, "created running waiting pending "
                                "BLOCK_JOB_COMPLETED concluded null");
    assert_int_equal(f.committed, 1);
    assert_int_equal(f.aborted, 0);
    assert_int_equal(f.cleaned, 1);
}

static void
test_job_cancel_sequence(void **state UNUSED)
{
    struct fake f = {0};

    start("j0", &f, true, true, 0, NULL);
    wait_status("j0", JOB_STATUS_RUNNING);
    assert_int_equal(job_user_cancel(&reg, "j0", true), 0);
    wait_status("j0", JOB_STATUS_NULL);
    assert_string_equal(events, "created running aborting "
                                "BLOCK_JOB_CANCELLED concluded null");
    assert_int_equal(f.committed, 0);
    assert_int_equal(f.aborted, 1);
}

static void
test_job_failure_reports_error(void **state UNUSED)
{
    struct fake f = {.go = 1, .fail = 1};

    start("j0", &f, true, true, 0, NULL);
    wait_status("j0", JOB_STATUS_NULL);
    assert_string_equal(events, "created running aborting "
                                "BLOCK_JOB_COMPLETED(boom) concluded null");
    assert_int_equal(f.aborted, 1);
}

static void
test_job_manual_finalize_and_dismiss(void **state UNUSED)
{
    struct fake f = {.go = 1};

    start("j0", &f, false, false, 0, NULL);
    wait_status("j0", JOB_STATUS_PENDING);
    assert_int_equal(job_user_dismiss(&reg, "j0"), -1);
    assert_string_equal(vimg_get_error(), "Job 'j0' in state 'pending' "
                                          "cannot accept command verb "
                                          "'dismiss'");
    assert_int_equal(job_user_finalize(&reg, "j0"), 0);
    wait_status("j0", JOB_STATUS_CONCLUDED);
    assert_int_equal(job_user_dismiss(&reg, "j0"), 0);
    wait_status("j0", JOB_STATUS_NULL);
    assert_string_equal(events, "created running waiting pending "
                                "BLOCK_JOB_PENDING BLOCK_JOB_COMPLETED "
                                "concluded null");
}

static void
test_job_pause_resume_and_verb_errors(void **state UNUSED)
{
    struct fake f = {0};

    start("j0", &f, true, true, 0, NULL);
    wait_status("j0", JOB_STATUS_RUNNING);
    assert_int_equal(job_user_resume(&reg, "j0"), -1);
    assert_string_equal(vimg_get_error(),
                        "Can't resume a job that was not paused");
    assert_int_equal(job_user_complete(&reg, "j0"), -1);
    assert_int_equal(job_user_pause(&reg, "j0"), 0);
    wait_status("j0", JOB_STATUS_PAUSED);
    assert_int_equal(job_user_pause(&reg, "j0"), -1);
    assert_int_equal(job_user_resume(&reg, "j0"), 0);
    wait_status("j0", JOB_STATUS_RUNNING);
    f.go = 1;
    wait_status("j0", JOB_STATUS_NULL);
    assert_string_equal(events, "created running paused running waiting "
                                "pending BLOCK_JOB_COMPLETED concluded null");
    assert_int_equal(job_user_cancel(&reg, "nope", true), -1);
    assert_string_equal(vimg_get_error(), "Job not found");
}

static void
test_job_ready_standby_complete(void **state UNUSED)
{
    struct fake f = {.go = 1, .mirror = 1};

    start("m0", &f, true, true, 0, NULL);
    wait_status("m0", JOB_STATUS_READY);
    assert_int_equal(job_user_pause(&reg, "m0"), 0);
    wait_status("m0", JOB_STATUS_STANDBY);
    assert_int_equal(job_user_resume(&reg, "m0"), 0);
    wait_status("m0", JOB_STATUS_READY);
    assert_int_equal(job_user_complete(&reg, "m0"), 0);
    wait_status("m0", JOB_STATUS_NULL);
    assert_string_equal(events, "created running ready BLOCK_JOB_READY "
                                "standby ready waiting pending "
                                "BLOCK_JOB_COMPLETED concluded null");
    assert_int_equal(f.committed, 1);
}

static void
test_job_soft_cancel_of_ready_job_completes(void **state UNUSED)
{
    struct fake f = {.go = 1, .mirror = 1};
    struct job *j = start("m0", &f, true, true, 0, NULL);

    wait_status("m0", JOB_STATUS_READY);
    assert_true(j->soft_cancel == false);
    assert_int_equal(job_user_cancel(&reg, "m0", false), 0);
    wait_status("m0", JOB_STATUS_NULL);
    assert_string_equal(events, "created running ready BLOCK_JOB_READY "
                                "waiting pending BLOCK_JOB_COMPLETED "
                                "concluded null");
}

static void
test_job_grouped_transaction_fails_together(void **state UNUSED)
{
    struct fake a = {0}, b = {.go = 1, .fail = 1};
    struct job_txn *t = job_txn_new();

    start("a", &a, true, true, 0, t);
    start("b", &b, true, true, 0, t);
    job_txn_unref(&reg, t);
    wait_status("a", JOB_STATUS_NULL);
    wait_status("b", JOB_STATUS_NULL);
    assert_int_equal(a.committed + b.committed, 0);
    assert_int_equal(a.aborted, 1);
    assert_int_equal(b.aborted, 1);
    assert_non_null(strstr(events, "BLOCK_JOB_COMPLETED(boom)"));
    assert_non_null(strstr(events, "BLOCK_JOB_CANCELLED"));
}

static void
test_job_speed_limit_slows_the_copy(void **state UNUSED)
{
    struct fake f = {.go = 1, .bytes = 3 << 20};
    struct timespec t0, t1;
    double secs;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    start("s0", &f, true, true, 8 << 20, NULL); /* 8 MiB/s */
    wait_status("s0", JOB_STATUS_NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) +
           (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(secs >= 0.3); /* 3 MiB at 8 MiB/s: about 0.375 s */
}

static void
test_job_duplicate_and_invalid_ids(void **state UNUSED)
{
    struct fake f = {0};

    start("j0", &f, true, true, 0, NULL);
    assert_null(job_create(&reg, "j0", &fake_driver, &f, true, true, 0, NULL));
    assert_string_equal(vimg_get_error(), "Job ID 'j0' already in use");
    assert_null(
        job_create(&reg, "0bad", &fake_driver, &f, true, true, 0, NULL));
    job_cancel_all_sync(&reg);
    assert_null(reg.jobs);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_job_success_sequence, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_job_cancel_sequence, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_job_failure_reports_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_job_manual_finalize_and_dismiss,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_pause_resume_and_verb_errors,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_ready_standby_complete, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_job_soft_cancel_of_ready_job_completes, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_job_grouped_transaction_fails_together, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_speed_limit_slows_the_copy,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_duplicate_and_invalid_ids,
                                        setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
