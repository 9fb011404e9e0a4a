/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Checked arithmetic and alignment helpers for values read from images
 * or sockets.  ADD_OVERFLOW/MUL_OVERFLOW return true on overflow. */
#ifndef VIMG_UTIL_CHECKED_H
#define VIMG_UTIL_CHECKED_H

#include <stdbool.h>
#include <stdint.h>

#define ADD_OVERFLOW(a, b, r) __builtin_add_overflow((a), (b), (r))
#define MUL_OVERFLOW(a, b, r) __builtin_mul_overflow((a), (b), (r))

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define DIV_ROUND_UP(n, d) (((n) + (d)-1) / (d))
/* ALIGN must be a power of two. */
#define ALIGN_DOWN(v, align) ((v) & ~((__typeof__(v))(align)-1))
#define ALIGN_UP(v, align) ALIGN_DOWN((v) + (align)-1, (align))
#define IS_ALIGNED(v, align) (((v) & ((__typeof__(v))(align)-1)) == 0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline bool
is_power_of_2(uint64_t v)
{
    return v && !(v & (v - 1));
}

#endif
