/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Progress display for long vimg subcommands (convert, commit,
 * stream-local, rebase): qemu-img's "    (12.34/100%)" on stdout, with
 * rate and time left on a terminal, plain percent lines otherwise; a
 * SIGUSR1 prints the progress once even without -p.  Thread-safe.
 */
#ifndef VIMG_PROGRESS_H
#define VIMG_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

#define PROGRESS_SHOW 0x1u  /* -p: draw the bar */
#define PROGRESS_QUIET 0x2u /* -q: print nothing, not even on SIGUSR1 */

/* Start a display; TITLE (may be NULL) is printed after the figures.
 * Installs the SIGUSR1 handler until progress_finish(). */
void progress_start(const char *title, unsigned flags);
/* Report DONE of TOTAL bytes; callable from any thread. */
void progress_report(uint64_t done, uint64_t total);
/* progress_report() in the shape of copy_params.progress (OPAQUE is
 * ignored). */
void progress_update(void *opaque, uint64_t done, uint64_t total);
/* End the display: with OK, print 100% (with -p).  SIGUSR1 goes back to
 * its old handler, or to SIG_IGN if that was the default. */
void progress_finish(bool ok);

#endif
