/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Command-line words to QMP arguments.  Either one JSON object
 * ('{"node":"d0"}'), or key=value words, read the way QEMU's keyval
 * reads them: a dotted key nests objects (addr.data.path=/x), an object
 * whose keys are exactly 0..n-1 becomes an array (bitmaps.0=b0).
 * Values: true and false are booleans, a decimal integer is a number,
 * anything else a string; key:=JSON takes any JSON value as it is
 * (port:='"10809"', bitmaps:='["a","b"]').
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "ctl.h"
#include "error.h"

static json_t *
scalar(const char *v)
{
    const char *digits = v + (*v == '-');
    char *end;
    long long n;

    if (!strcmp(v, "true"))
        return json_true();
    if (!strcmp(v, "false"))
        return json_false();
    if (*digits && strspn(digits, "0123456789") == strlen(digits)) {
        errno = 0;
        n = strtoll(v, &end, 10);
        if (errno == 0 && !*end)
            return json_integer((json_int_t)n);
    }
    return json_string(v);
}

/* Set KEY (dotted, length KLEN) in ROOT to VAL (stolen). */
static int
set_key(json_t *root, const char *key, size_t klen, json_t *val)
{
    CLEANUP_FREE char *k = strndup(key, klen);
    char *seg = k, *dot;
    json_t *obj = root;

    if (!k || !val) {
        json_decref(val);
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    for (;;) {
        json_t *child;

        dot = strchr(seg, '.');
        if (dot)
            *dot = '\0';
        if (!*seg) {
            json_decref(val);
            vimg_error(EINVAL, "%.*s: empty key", (int)klen, key);
            return -1;
        }
        child = json_object_get(obj, seg);
        if (!dot) {
            if (child) {
                json_decref(val);
                vimg_error(EINVAL, "%.*s: %s", (int)klen, key,
                           json_is_object(child) ? "conflicts with a "
                                                   "longer dotted key"
                                                 : "given twice");
                return -1;
            }
            return json_object_set_new(obj, seg, val);
        }
        if (!child) {
            child = json_object();
            json_object_set_new(obj, seg, child);
        } else if (!json_is_object(child)) {
            json_decref(val);
            vimg_error(EINVAL, "%.*s: conflicts with %.*s", (int)klen, key,
                       (int)(dot - k), key);
            return -1;
        }
        obj = child;
        seg = dot + 1;
    }
}

/* Objects whose keys are exactly "0".."n-1" into arrays, everywhere
 * under V; returns V or its replacement (reference moved). */
static json_t *
arrays(json_t *v)
{
    size_t n = json_object_size(v), i;
    const char *key;
    json_t *child, *a;
    char idx[24];

    if (!json_is_object(v))
        return v;
    json_object_foreach(v, key, child)
        json_object_set_new(v, key, arrays(json_incref(child)));
    for (i = 0; i < n; i++) {
        snprintf(idx, sizeof idx, "%zu", i);
        if (!json_object_get(v, idx))
            return v;
    }
    if (n == 0)
        return v;
    a = json_array();
    for (i = 0; a && i < n; i++) {
        snprintf(idx, sizeof idx, "%zu", i);
        json_array_append(a, json_object_get(v, idx));
    }
    json_decref(v);
    return a;
}

static json_t *
json_arg(const char *s)
{
    json_error_t err;
    json_t *v = json_loads(s, 0, &err);

    if (!v) {
        vimg_error(EINVAL, "invalid JSON argument: %s", err.text);
        return NULL;
    }
    return v;
}

json_t *
ctl_parse_args(int argc, char **argv)
{
    json_t *root;

    if (argc == 1 && argv[0][strspn(argv[0], " \t\n")] == '{')
        return json_arg(argv[0]);
    root = json_object();
    for (int i = 0; root && i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        size_t klen;
        json_t *val;

        if (!eq || eq == argv[i]) {
            vimg_error(EINVAL, "%s: expected key=value or one JSON object",
                       argv[i]);
            goto fail;
        }
        klen = (size_t)(eq - argv[i]);
        if (eq[-1] == ':') {
            json_error_t err;

            klen--;
            val = json_loads(eq + 1, JSON_DECODE_ANY, &err);
            if (!val) {
                vimg_error(EINVAL, "%.*s: invalid JSON value: %s",
                           (int)klen, argv[i], err.text);
                goto fail;
            }
        } else {
            val = scalar(eq + 1);
        }
        if (set_key(root, argv[i], klen, val) == -1)
            goto fail;
    }
    return arrays(root);
fail:
    json_decref(root);
    return NULL;
}

char *
ctl_abs_path(const char *target)
{
    CLEANUP_FREE char *cwd = NULL;
    char *p;

    if (*target == '/' || strstr(target, "://"))
        p = strdup(target);
    else if (!(cwd = getcwd(NULL, 0))) {
        vimg_error(errno, "getcwd: %m");
        return NULL;
    } else if (asprintf(&p, "%s/%s", cwd, target) == -1)
        p = NULL;
    if (!p)
        vimg_error(ENOMEM, "out of memory");
    return p;
}
