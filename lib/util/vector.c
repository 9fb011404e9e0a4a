/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Storage growth for DEFINE_VECTOR (doubling, overflow-checked). */
#include <stdint.h>

#include "checked.h"
#include "vector.h"

int
generic_vector_reserve(void **ptr, size_t *cap, size_t need, size_t elemsize)
{
    size_t newcap, bytes;
    void *p;

    if (need <= *cap)
        return 0;
    newcap = *cap ? *cap : 8;
    while (newcap < need) {
        if (MUL_OVERFLOW(newcap, (size_t)2, &newcap)) {
            vimg_error(ENOMEM, "vector too large");
            return -1;
        }
    }
    if (MUL_OVERFLOW(newcap, elemsize, &bytes)) {
        vimg_error(ENOMEM, "vector too large");
        return -1;
    }
    p = realloc(*ptr, bytes);
    if (!p) {
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    *ptr = p;
    *cap = newcap;
    return 0;
}
