/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Scoped cleanup helpers (__attribute__((cleanup))), nbdkit style. */
#ifndef VIMG_UTIL_CLEANUP_H
#define VIMG_UTIL_CLEANUP_H

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static inline void
cleanup_free(void *ptr)
{
    free(*(void **)ptr);
}
#define CLEANUP_FREE __attribute__((cleanup(cleanup_free)))

static inline void
cleanup_close(int *fd)
{
    if (*fd >= 0)
        close(*fd);
}
#define CLEANUP_CLOSE __attribute__((cleanup(cleanup_close)))

static inline void
cleanup_unlock(pthread_mutex_t **m)
{
    pthread_mutex_unlock(*m);
}
#define LOCK_GUARD_NAME2(a, b) a##b
#define LOCK_GUARD_NAME(a, b) LOCK_GUARD_NAME2(a, b)
/* Lock MUTEX until the end of the enclosing scope. */
#define LOCK_GUARD(mutex)                                                    \
    __attribute__((cleanup(cleanup_unlock))) pthread_mutex_t                 \
        *LOCK_GUARD_NAME(lock_guard_, __LINE__) = (mutex);                   \
    pthread_mutex_lock(LOCK_GUARD_NAME(lock_guard_, __LINE__))

/* Hand ownership out of a CLEANUP_ variable. */
#define TAKE_PTR(p)                                                          \
    ({                                                                       \
        __typeof__(p) take_ptr_tmp_ = (p);                                   \
        (p) = NULL;                                                          \
        take_ptr_tmp_;                                                       \
    })

#endif
