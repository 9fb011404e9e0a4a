/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Number parsing and output formatting for vimg-io, written to give the
 * same results as qemu-io 7.2 (cvtnum/qemu_strtosz, cvtstr, timestr,
 * print_report, dump_buffer) so that scripts and golden outputs written
 * against qemu-io keep working.  No state; not thread-safe only in that
 * it prints.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vimg.h"
#include "util.h"

/* The multiplier of suffix C, or 0 if C is not a suffix. */
static uint64_t
suffix_mul(char c)
{
    const char *units = "BKMGTPE", *u;

    if (!c || !(u = strchr(units, toupper((unsigned char)c))))
        return 0;
    return 1ULL << (10 * (u - units));
}

int64_t
io_cvtnum(const char *s)
{
    char *end;
    uint64_t val, mul, fpart;
    double frac = 0;
    bool hex = false;

    errno = 0;
    val = strtoull(s, &end, 10);
    if (end == s)
        return -EINVAL;
    if (memchr(s, '-', end - s))
        return -EINVAL;
    if (errno == ERANGE)
        return -ERANGE;
    if (val == 0 && (*end == 'x' || *end == 'X')) {
        val = strtoull(s, &end, 16);
        if (errno == ERANGE)
            return -ERANGE;
        if (*end == '.')
            return -EINVAL;
        hex = true;
    } else if (*end == '.') {
        const char *f = end;

        frac = strtod(f, &end);
        if (end == f || errno || !isfinite(frac)) {
            frac = 0; /* "1.k": no fraction digits */
            end = (char *)f + 1;
        } else if (memchr(f, 'e', end - f) || memchr(f, 'E', end - f)) {
            return -EINVAL;
        }
    }
    mul = suffix_mul(*end);
    if (mul) {
        if (hex && mul > 1)
            io_err("vimg-io: warning: Using a multiplier suffix on hex "
                   "numbers is deprecated: %s\n",
                   s);
        end++;
    } else {
        mul = 1;
    }
    if (*end || (mul == 1 && frac != 0))
        return -EINVAL;
    fpart = (uint64_t)(frac * (double)mul);
    if (val > (UINT64_MAX - fpart) / mul)
        return -ERANGE;
    val = val * mul + fpart;
    if (val > INT64_MAX)
        return -ERANGE;
    return (int64_t)val;
}

void
io_cvtnum_err(int64_t rc, const char *arg)
{
    if (rc == -EINVAL)
        io_err("Parsing error: non-numeric argument, or extraneous/"
               "unrecognized suffix -- %s\n",
               arg);
    else if (rc == -ERANGE)
        io_err("Parsing error: argument too large -- %s\n", arg);
    else
        io_err("Parsing error: %s\n", arg);
}

int
io_arg_num(const char *arg, int64_t *out)
{
    int64_t v = io_cvtnum(arg);

    if (v < 0) {
        io_cvtnum_err(v, arg);
        return -1;
    }
    *out = v;
    return 0;
}

int
io_parse_pattern(const char *arg)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(arg, &end, 0);
    if (errno || v < 0 || v > 255 || *end) {
        io_err("%s is not a valid pattern byte\n", arg);
        return -1;
    }
    return (int)v;
}

void
io_cvtstr(double value, char *str, size_t size)
{
    static const char *const names[] = {" bytes", " KiB", " MiB", " GiB",
                                        " TiB",   " PiB", " EiB"};
    int i = 0;
    char *trim;

    while (i < 6 && value >= ldexp(1, 10 * (i + 1)))
        i++;
    value /= ldexp(1, 10 * i);
    snprintf(str, size - 6, "%.3f", value);
    trim = strstr(str, ".000");
    if (trim)
        *trim = '\0';
    strcat(str, names[i]);
}

struct timespec
io_tsub(struct timespec t2, struct timespec t1)
{
    struct timespec d = {t2.tv_sec - t1.tv_sec, t2.tv_nsec - t1.tv_nsec};

    if (d.tv_nsec < 0) {
        d.tv_sec--;
        d.tv_nsec += 1000000000L;
    }
    return d;
}

/* qemu-io's timestr(): "00.12 sec" under a second, else H:MM:SS.ss;
 * FIXED always uses the long form. */
static void
timestr(struct timespec t, char *ts, size_t size, bool fixed)
{
    double frac = t.tv_nsec / 1e9;
    unsigned long s = (unsigned long)t.tv_sec;

    if (fixed || s)
        snprintf(ts, size, "%lu:%02lu:%05.2f", s / 3600, s % 3600 / 60,
                 (double)(s % 60) + frac);
    else
        snprintf(ts, size, "%05.2f sec", frac);
}

static double
tdiv(double value, struct timespec t)
{
    return value / (t.tv_sec + t.tv_nsec / 1e9);
}

void
io_report(const char *op, struct timespec t, int64_t offset, int64_t count,
          int64_t total, int cnt, bool terse)
{
    char s1[64], s2[64], ts[64];

    timestr(t, ts, sizeof ts, terse);
    if (terse) {
        printf("%lld,%d,%s,%.3f,%.3f\n", (long long)total, cnt, ts,
               tdiv((double)total, t), tdiv((double)cnt, t));
        return;
    }
    io_cvtstr((double)total, s1, sizeof s1);
    io_cvtstr(tdiv((double)total, t), s2, sizeof s2);
    printf("%s %lld/%lld bytes at offset %lld\n", op, (long long)total,
           (long long)count, (long long)offset);
    printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n", s1, cnt, ts, s2,
           tdiv((double)cnt, t));
}

void
io_dump(const uint8_t *buf, int64_t offset, int64_t len)
{
    for (int64_t i = 0; i < len; i += 16) {
        int64_t n = len - i < 16 ? len - i : 16;

        printf("%08llx:  ", (unsigned long long)(offset + i));
        for (int64_t j = 0; j < n; j++)
            printf("%02x ", buf[i + j]);
        putchar(' ');
        for (int64_t j = 0; j < n; j++)
            putchar(isalnum(buf[i + j]) ? buf[i + j] : '.');
        putchar('\n');
    }
}

void
io_err(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

void
io_errno_err(const char *cmd, int err)
{
    io_err("%s failed: %s\n", cmd, strerror(err));
}

void
io_lib_err(const char *cmd)
{
    int err = vimg_get_errno();
    const char *msg = vimg_get_error();
    const char *es = strerror(err ? err : EIO);

    if (msg && *msg && strcmp(msg, es))
        io_err("%s failed: %s (%s)\n", cmd, es, msg);
    else
        io_err("%s failed: %s\n", cmd, es);
}
