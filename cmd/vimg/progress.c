/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The progress display (progress.h).  One display per process at a
 * time.  State is protected by `lock`; the SIGUSR1 handler only sets an
 * atomic flag, which the next report turns into one printed line.  On a
 * terminal the line is redrawn in place ("\r") at most every 100 ms or
 * at each 0.01% step, with the rate and the time left; otherwise a line
 * is printed at each whole percent.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "progress.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    bool active, show, quiet, tty;
    const char *title;
    double start;        /* seconds, monotonic */
    double last_draw;
    int last_pct100;     /* last printed percent * 100 */
    uint64_t done, total;
    struct sigaction old_usr1;
} pg;

static volatile sig_atomic_t usr1_pending;

static void
on_usr1(int sig)
{
    (void)sig;
    usr1_pending = 1;
}

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* "1.23 GiB/s" style rate into BUF. */
static void
fmt_rate(char *buf, size_t len, double bytes_per_s)
{
    static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int u = 0;

    while (bytes_per_s >= 1024 && u < 4) {
        bytes_per_s /= 1024;
        u++;
    }
    snprintf(buf, len, "%.1f %s/s", bytes_per_s, unit[u]);
}

static void
fmt_eta(char *buf, size_t len, double s)
{
    long t = (long)(s + 0.5);

    if (t >= 3600)
        snprintf(buf, len, "%ld:%02ld:%02ld left", t / 3600, t / 60 % 60,
                 t % 60);
    else
        snprintf(buf, len, "%ld:%02ld left", t / 60, t % 60);
}

static double
percent_locked(void)
{
    if (!pg.total) /* nothing to do, or nothing reported yet */
        return pg.done || !pg.active ? 100.0 : 0.0;
    return 100.0 * (double)pg.done / (double)pg.total;
}

/* Print the current line; END is "\r" or "\n".  Lock held. */
static void
print_locked(const char *end, bool extras)
{
    char rate[32] = "", eta[32] = "";
    double el = now() - pg.start;

    if (extras && el > 0.2 && pg.done) {
        double r = (double)pg.done / el;

        fmt_rate(rate, sizeof rate, r);
        fmt_eta(eta, sizeof eta, (double)(pg.total - pg.done) / r);
    }
    printf("    (%.2f/100%%)%s%s%s%s%s%s%s", percent_locked(),
           *rate ? " " : "", rate, *eta ? ", " : "", eta,
           pg.title ? " " : "", pg.title ? pg.title : "",
           pg.tty && extras ? "\033[K" : "");
    fputs(end, stdout);
    fflush(stdout);
}

void
progress_start(const char *title, unsigned flags)
{
    struct sigaction sa;

    pthread_mutex_lock(&lock);
    memset(&pg, 0, sizeof pg);
    pg.active = true;
    pg.quiet = flags & PROGRESS_QUIET;
    pg.show = (flags & PROGRESS_SHOW) && !pg.quiet;
    pg.tty = isatty(STDOUT_FILENO);
    pg.title = title;
    pg.start = pg.last_draw = now();
    pg.last_pct100 = -1;
    usr1_pending = 0;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, &pg.old_usr1);
    if (pg.show)
        print_locked(pg.tty ? "\r" : "\n", false);
    pg.last_pct100 = 0;
    pthread_mutex_unlock(&lock);
}

void
progress_report(uint64_t done, uint64_t total)
{
    int pct100;
    double t;

    pthread_mutex_lock(&lock);
    if (!pg.active || done < pg.done) { /* reports may race: keep max */
        pthread_mutex_unlock(&lock);
        return;
    }
    pg.done = done;
    pg.total = total;
    pct100 = (int)(percent_locked() * 100);
    if (usr1_pending && !pg.quiet) {
        usr1_pending = 0;
        print_locked("\n", true);
    }
    if (pg.show && pg.tty) {
        t = now();
        if (pct100 != pg.last_pct100 && t - pg.last_draw >= 0.1) {
            pg.last_draw = t;
            pg.last_pct100 = pct100;
            print_locked("\r", true);
        }
    } else if (pg.show && pct100 / 100 != pg.last_pct100 / 100) {
        pg.last_pct100 = pct100;
        print_locked("\n", false);
    }
    pthread_mutex_unlock(&lock);
}

void
progress_update(void *opaque, uint64_t done, uint64_t total)
{
    (void)opaque;
    progress_report(done, total);
}

void
progress_finish(bool ok)
{
    pthread_mutex_lock(&lock);
    if (!pg.active) {
        pthread_mutex_unlock(&lock);
        return;
    }
    if (ok)
        pg.done = pg.total = pg.total ? pg.total : 1;
    if (pg.show && pg.tty)
        print_locked("\n", true); /* also ends a failed bar's line */
    else if (pg.show && ok && pg.last_pct100 < 10000)
        print_locked("\n", false);
    /* A late SIGUSR1 (the caller is closing images) must not kill the
     * process: ignore it unless someone else had a handler. */
    if (pg.old_usr1.sa_handler == SIG_DFL &&
        !(pg.old_usr1.sa_flags & SA_SIGINFO))
        pg.old_usr1.sa_handler = SIG_IGN;
    sigaction(SIGUSR1, &pg.old_usr1, NULL);
    pg.active = false;
    pthread_mutex_unlock(&lock);
}
