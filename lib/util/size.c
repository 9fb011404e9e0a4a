/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Size strings as qemu-img takes them: 512, 64k, 1.5G, 2T (binary
 * units, case-insensitive suffixes k M G T P E, optional "B"). */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vimg.h"
#include "error.h"

int
vimg_parse_size(const char *str, uint64_t *size)
{
    const char *p = str, *units = "KMGTPE";
    char *end;
    double mult = 1, v;
    unsigned long long whole;

    while (isspace((unsigned char)*p))
        p++;
    if (*p == '-' || !isdigit((unsigned char)*p))
        goto bad;
    errno = 0;
    whole = strtoull(p, &end, 10);
    if (errno)
        goto bad;
    v = (double)whole;
    if (*end == '.') {
        v = strtod(p, &end);
    }
    if (*end) {
        const char *u = strchr(units, toupper((unsigned char)*end));
        if (!u || !*u)
            goto bad;
        for (long i = 0; i <= u - units; i++)
            mult *= 1024;
        end++;
        if (*end == 'b' || *end == 'B')
            end++;
        if (*end)
            goto bad;
    }
    if (mult == 1 && v != (double)whole)
        goto bad; /* fractional bytes */
    if (mult == 1) {
        *size = whole;
        return 0;
    }
    v *= mult;
    if (v >= 18446744073709551616.0)
        goto bad;
    *size = (uint64_t)v;
    return 0;
bad:
    vimg_error(EINVAL, "invalid size '%s'", str);
    return -1;
}
