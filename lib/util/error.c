/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Thread-local error message and errno, libnbd style.  Each failing
 * library function calls vimg_error() exactly once; callers higher up
 * may add context with vimg_error_prefix().
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "vimg.h"
#include "error.h"

#define MSG_MAX 1024

static _Thread_local char last_msg[MSG_MAX];
static _Thread_local int last_errno;

void
vimg_error(int errnum, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    errno = errnum; /* so that %m prints ERRNUM */
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    last_errno = errnum;
    errno = errnum;
}

void
vimg_error_prefix(const char *fmt, ...)
{
    char prefix[MSG_MAX], old[MSG_MAX];
    va_list ap;
    int saved = last_errno;

    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_msg, sizeof old);
    /* Truncation is fine: the message is for humans. */
    size_t n = strnlen(prefix, MSG_MAX - 3);
    memcpy(last_msg, prefix, n);
    memcpy(last_msg + n, ": ", 2);
    memcpy(last_msg + n + 2, old, MSG_MAX - n - 3);
    last_msg[MSG_MAX - 1] = '\0';
    last_errno = saved;
    errno = saved;
}

const char *
vimg_get_error(void)
{
    return last_msg[0] ? last_msg : "unknown error";
}

int
vimg_get_errno(void)
{
    return last_errno;
}
