/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Messages and number formatting shared by the vimg subcommands.  Only
 * cmd/ prints; each failure is printed once, on one line. */
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "cmd.h"
#include "vimg.h"

/* "vimg: CMD: [KIND: ]MESSAGE" on stderr. */
static void
vmessage(const char *kind, const char *fmt, va_list ap)
{
    fprintf(stderr, "vimg: %s: %s", cmd_name, kind);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void
cmd_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vmessage("", fmt, ap);
    va_end(ap);
}

void
cmd_warning(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vmessage("warning: ", fmt, ap);
    va_end(ap);
}

void
cmd_lib_error(const char *prefix)
{
    if (prefix)
        cmd_error("%s: %s", prefix, vimg_get_error());
    else
        cmd_error("%s", vimg_get_error());
}

int
cmd_usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "vimg: %s: ", cmd_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'vimg %s --help')\n", cmd_name);
    return 1;
}

char *
human_size(uint64_t val)
{
    static const char *const suffix[] = { "", "Ki", "Mi", "Gi",
                                          "Ti", "Pi", "Ei" };
    int exp;
    char *s;

    frexp(val / (1000.0 / 1024.0), &exp);
    exp = exp > 0 ? (exp - 1) / 10 : 0;
    if (exp > 6)
        exp = 6;
    if (asprintf(&s, "%0.3g %sB", (double)val / (double)(1ULL << (exp * 10)),
                 suffix[exp]) < 0)
        return NULL;
    return s;
}

int
cmd_bad_option(char **argv)
{
    const char *arg = argv[optind - 1];

    if (optopt && arg[0] == '-' && arg[1] != '-')
        return cmd_usage_error("invalid option or missing argument '-%c'",
                               optopt);
    return cmd_usage_error("invalid option or missing argument '%s'", arg);
}

vimg_node *
cmd_open_image(const char *file, const char *fmt, bool image_opts,
               unsigned flags)
{
    vimg_node *n;

    if (image_opts && fmt) {
        cmd_usage_error("--image-opts and -f are exclusive");
        return NULL;
    }
    n = image_opts ? vimg_open_opts(file, flags) : vimg_open(file, fmt, flags);
    if (!n)
        cmd_error("%s", vimg_get_error());
    return n;
}

int
cmd_parse_output(const char *arg, bool *json)
{
    if (!strcmp(arg, "json") || !strcmp(arg, "human")) {
        *json = !strcmp(arg, "json");
        return 0;
    }
    /* qemu-img's wording, so scripts matching it keep working. */
    cmd_usage_error("--output must be used with human or json as argument.");
    return -1;
}

int
cmd_append_opts(char **opts, const char *str)
{
    char *o;

    if (asprintf(&o, "%s%s%s", *opts ? *opts : "", *opts ? "," : "",
                 str) < 0)
        return -1;
    free(*opts);
    *opts = o;
    return 0;
}

int
cmd_append_opt_kv(char **opts, const char *key, const char *value)
{
    size_t len = strlen(value);
    CLEANUP_FREE char *esc = malloc(strlen(key) + 2 * len + 2);
    char *p = esc;

    if (!esc)
        return -1;
    p += sprintf(p, "%s=", key);
    for (size_t i = 0; i < len; i++) {
        *p++ = value[i];
        if (value[i] == ',')
            *p++ = ',';
    }
    *p = '\0';
    return cmd_append_opts(opts, esc);
}
