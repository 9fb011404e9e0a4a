/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The option tree.  Nodes are opened from a jansson object shaped like
 * QEMU's blockdev-add arguments.  This file builds that tree from the
 * three front-end forms (a plain filename with an optional format,
 * dotted "key.sub=value" strings as in --image-opts, and JSON text, also
 * as a "json:{...}" filename) and reads typed values out of it.  NBD
 * URIs (nbd://, nbd+unix://...) name an "nbd" protocol node; the format
 * over it is probed as for files unless given, as qemu-img does.
 *
 * Dotted strings follow QEMU's rules: ',' separates pairs, ",," is a
 * literal comma, and dots nest objects.  All values stay strings; the
 * typed getters accept both strings and JSON numbers/booleans.
 */
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "error.h"
#include "options.h"
#include "vimg.h"

/* Set KEY (dotted) to VALUE inside OBJ, creating nested objects. */
static int
set_dotted(json_t *obj, const char *key, const char *value)
{
    const char *dot;

    while ((dot = strchr(key, '.')) != NULL) {
        CLEANUP_FREE char *part = strndup(key, dot - key);
        json_t *sub;

        if (!part || !*part) {
            vimg_error(EINVAL, "invalid option name '%s'", key);
            return -1;
        }
        sub = json_object_get(obj, part);
        if (!sub) {
            sub = json_object();
            json_object_set_new(obj, part, sub);
        } else if (!json_is_object(sub)) {
            vimg_error(EINVAL, "option '%s' is both a value and a group",
                       part);
            return -1;
        }
        obj = sub;
        key = dot + 1;
    }
    if (!*key) {
        vimg_error(EINVAL, "empty option name");
        return -1;
    }
    if (json_object_get(obj, key)) {
        vimg_error(EINVAL, "option '%s' given twice", key);
        return -1;
    }
    json_object_set_new(obj, key, json_string(value));
    return 0;
}

/* Copy the next token of S (up to ',' or '=' per STOP) into a fresh
 * string, turning ",," into ','.  Advances *S past the token. */
static char *
next_token(const char **s, bool stop_at_eq)
{
    size_t cap = strlen(*s) + 1, n = 0;
    char *out = malloc(cap);
    const char *p = *s;

    if (!out)
        return NULL;
    for (; *p; p++) {
        if (*p == ',') {
            if (p[1] == ',') {
                out[n++] = ',';
                p++;
                continue;
            }
            break;
        }
        if (stop_at_eq && *p == '=')
            break;
        out[n++] = *p;
    }
    out[n] = '\0';
    *s = p;
    return out;
}

json_t *
opts_parse_dotted(const char *str, const char *implied_key)
{
    json_t *obj = json_object();
    const char *p = str;
    bool first = true;

    while (*p) {
        CLEANUP_FREE char *key = next_token(&p, true);
        CLEANUP_FREE char *value = NULL;

        if (!key)
            goto oom;
        if (*p == '=') {
            p++;
            value = next_token(&p, false);
            if (!value)
                goto oom;
        } else if (first && implied_key) {
            value = TAKE_PTR(key);
            key = strdup(implied_key);
            if (!key)
                goto oom;
        } else {
            vimg_error(EINVAL, "invalid parameter '%s': expected key=value",
                       key);
            goto err;
        }
        if (set_dotted(obj, key, value) == -1)
            goto err;
        if (*p == ',')
            p++;
        first = false;
    }
    return obj;
oom:
    vimg_error(ENOMEM, "out of memory");
err:
    json_decref(obj);
    return NULL;
}

json_t *
opts_parse_json(const char *text)
{
    json_error_t jerr;
    json_t *obj = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);

    if (!obj) {
        vimg_error(EINVAL, "invalid JSON options: %s", jerr.text);
        return NULL;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        vimg_error(EINVAL, "JSON options must be an object");
        return NULL;
    }
    return obj;
}

json_t *
opts_from_filename(const char *filename, const char *format)
{
    json_t *obj;

    if (strncmp(filename, "json:", 5) == 0) {
        obj = opts_parse_json(filename + 5);
        if (obj && format && !json_object_get(obj, "driver"))
            json_object_set_new(obj, "driver", json_string(format));
        return obj;
    }
    if (!strncmp(filename, "nbds://", 7) || !strncmp(filename, "nbds+", 5)) {
        vimg_error(ENOTSUP, "%s: NBD over TLS is not supported yet",
                   filename);
        return NULL;
    }
    if (!strncmp(filename, "nbd://", 6) || !strncmp(filename, "nbd+", 4))
        obj = json_pack("{s:{s:s,s:s}}", "file", "driver", "nbd", "uri",
                        filename);
    else
        obj = json_pack("{s:{s:s,s:s}}", "file", "driver", "file",
                        "filename", filename);
    if (!obj) {
        vimg_error(ENOMEM, "out of memory");
        return NULL;
    }
    if (format)
        json_object_set_new(obj, "driver", json_string(format));
    return obj;
}

const char *
opts_get_str(json_t *opts, const char *key)
{
    json_t *v = json_object_get(opts, key);

    return json_is_string(v) ? json_string_value(v) : NULL;
}

int
opts_get_bool(json_t *opts, const char *key, bool dflt, bool *out)
{
    json_t *v = json_object_get(opts, key);
    const char *s;

    *out = dflt;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 0;
    }
    s = json_string_value(v);
    if (s && (!strcmp(s, "on") || !strcmp(s, "true") || !strcmp(s, "yes"))) {
        *out = true;
        return 0;
    }
    if (s && (!strcmp(s, "off") || !strcmp(s, "false") || !strcmp(s, "no"))) {
        *out = false;
        return 0;
    }
    vimg_error(EINVAL, "parameter '%s' expects 'on' or 'off'", key);
    return -1;
}

int
opts_get_size(json_t *opts, const char *key, uint64_t dflt, uint64_t *out)
{
    json_t *v = json_object_get(opts, key);

    *out = dflt;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0)
            goto bad;
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v) &&
        vimg_parse_size(json_string_value(v), out) == 0)
        return 0;
bad:
    vimg_error(EINVAL, "parameter '%s' expects a size", key);
    return -1;
}

int
opts_check_keys(json_t *opts, const char *const *allowed, const char *what)
{
    const char *key;
    json_t *v;

    json_object_foreach(opts, key, v) {
        const char *const *a;

        for (a = allowed; *a; a++)
            if (!strcmp(*a, key))
                break;
        if (!*a) {
            vimg_error(EINVAL, "%s does not support the option '%s'", what,
                       key);
            return -1;
        }
    }
    return 0;
}
