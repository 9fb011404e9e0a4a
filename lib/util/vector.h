/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One typed growable array: DEFINE_VECTOR(struct foo, foo_vector)
 * declares struct foo_vector { struct foo *ptr; size_t len, cap; } and
 * foo_vector_append(v, elem) (0/-1 with vimg_error on ENOMEM) and
 * foo_vector_reset(v) (frees the storage, not the elements).
 */
#ifndef VIMG_UTIL_VECTOR_H
#define VIMG_UTIL_VECTOR_H

#include <stdlib.h>
#include <string.h>

#include "error.h"

int generic_vector_reserve(void **ptr, size_t *cap, size_t need,
                           size_t elemsize);

#define DEFINE_VECTOR(type, name)                                            \
    struct name {                                                            \
        type *ptr;                                                           \
        size_t len, cap;                                                     \
    };                                                                       \
    static inline __attribute__((unused)) int name##_reserve(               \
        struct name *v, size_t extra)                                        \
    {                                                                        \
        return generic_vector_reserve((void **)&v->ptr, &v->cap,             \
                                      v->len + extra, sizeof(type));         \
    }                                                                        \
    static inline __attribute__((unused)) int name##_append(                \
        struct name *v, type elem)                                           \
    {                                                                        \
        if (name##_reserve(v, 1) == -1)                                      \
            return -1;                                                       \
        v->ptr[v->len++] = elem;                                             \
        return 0;                                                            \
    }                                                                        \
    static inline __attribute__((unused)) void name##_reset(struct name *v) \
    {                                                                        \
        free(v->ptr);                                                        \
        v->ptr = NULL;                                                       \
        v->len = v->cap = 0;                                                 \
    }

#endif
