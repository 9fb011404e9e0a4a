/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Per-thread error state: vimg_error() records a message and errno once
 * per failure; public readers are vimg_get_error()/vimg_get_errno(). */
#ifndef VIMG_UTIL_ERROR_H
#define VIMG_UTIL_ERROR_H

#include <errno.h>
#include <inttypes.h>

/* Record ERRNUM and a printf-style message for this thread.  "%m" is
 * expanded with ERRNUM.  errno is set to ERRNUM on return. */
void vimg_error(int errnum, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prefix the current message with "PREFIX: " (keeps the errno). */
void vimg_error_prefix(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

#endif
