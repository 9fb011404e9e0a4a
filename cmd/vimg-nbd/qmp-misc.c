/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP argument checking, shared by every command file, and the general
 * commands: qmp_capabilities, query-version, query-commands, quit.
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "qmp.h"

static const char *
type_name(char t)
{
    switch (t) {
    case 's': return "string";
    case 'b': return "boolean";
    case 'i': return "integer";
    case 'o': return "object";
    case 'a': return "array";
    default: return "value";
    }
}

static bool
type_ok(json_t *v, char t)
{
    switch (t) {
    case 's': return json_is_string(v);
    case 'b': return json_is_boolean(v);
    case 'i': return json_is_integer(v);
    case 'o': return json_is_object(v);
    case 'a': return json_is_array(v);
    default: return true;
    }
}

int
qmp_check_args(json_t *args, const char *const *spec)
{
    const char *key;
    json_t *v;

    json_object_foreach(args, key, v) {
        const char *const *p;

        for (p = spec; *p; p++) {
            const char *s = **p == '?' ? *p + 1 : *p;
            size_t l = strcspn(s, ":");

            if (strlen(key) == l && !strncmp(s, key, l))
                break;
        }
        if (!*p) {
            vimg_error(EINVAL, "Parameter '%s' is unexpected", key);
            return -1;
        }
        {
            const char *colon = strchr(*p, ':');
            char t = colon ? colon[1] : '*';

            if (!type_ok(v, t)) {
                vimg_error(EINVAL, "Invalid parameter type for '%s', "
                                   "expected: %s",
                           key, type_name(t));
                return -1;
            }
        }
    }
    for (const char *const *p = spec; *p; p++) {
        char name[64];
        size_t l = strcspn(*p, ":");

        if (**p == '?' || l >= sizeof name)
            continue;
        memcpy(name, *p, l);
        name[l] = '\0';
        if (!json_object_get(args, name)) {
            vimg_error(EINVAL, "Parameter '%s' is missing", name);
            return -1;
        }
    }
    return 0;
}

const char *
qmp_str(json_t *args, const char *key)
{
    return json_string_value(json_object_get(args, key));
}

bool
qmp_bool(json_t *args, const char *key, bool dflt)
{
    json_t *v = json_object_get(args, key);

    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

int64_t
qmp_int(json_t *args, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(args, key);

    return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

struct node *
qmp_node(const char *name)
{
    struct node *n = name ? node_find(name) : NULL;

    if (!n) /* GenericError, as bdrv_lookup_bs() */
        vimg_error(ENOENT, "Cannot find device='%s' nor node-name='%s'",
                   name ? name : "", name ? name : "");
    return n;
}

struct node *
qmp_node_by_name(const char *name)
{
    struct node *n = name ? node_find(name) : NULL;

    if (!n)
        vimg_error(ENOENT, "Cannot find device='' nor node-name='%s'",
                   name ? name : "");
    return n;
}

static int
cmd_capabilities(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { "?enable:a", NULL };
    json_t *v;
    size_t i;

    (void)srv;
    (void)ret;
    if (qmp_check_args(args, spec) == -1)
        return -1;
    json_array_foreach(json_object_get(args, "enable"), i, v) {
        vimg_error(EINVAL, "Capability '%s' not available",
                   json_string_value(v) ? json_string_value(v) : "?");
        return -1;
    }
    return 0;
}

static int
cmd_query_version(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { NULL };

    (void)srv;
    if (qmp_check_args(args, spec) == -1)
        return -1;
    *ret = json_pack("{s:{s:i,s:i,s:i},s:s}", "qemu", "micro", 0, "minor",
                     2, "major", 7, "package", "vimg-" VIMG_VERSION);
    return 0;
}

static int
cmd_query_commands(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { NULL };
    const struct qmp_command *const all[] = {
        qmp_misc_commands, qmp_block_commands, qmp_export_commands,
        qmp_bitmap_commands, qmp_job_commands, qmp_snapshot_commands,
    };
    json_t *a = json_array();

    (void)srv;
    if (qmp_check_args(args, spec) == -1) {
        json_decref(a);
        return -1;
    }
    for (size_t t = 0; t < sizeof all / sizeof all[0]; t++)
        for (const struct qmp_command *c = all[t]; c->name; c++)
            json_array_append_new(a, json_pack("{s:s}", "name", c->name));
    *ret = a;
    return 0;
}

static int
cmd_quit(struct server *srv, json_t *args, json_t **ret)
{
    static const char *const spec[] = { NULL };

    (void)ret;
    if (qmp_check_args(args, spec) == -1)
        return -1;
    atomic_store(&srv->stopping, true);
    listen_wake(srv);
    return 0;
}

const struct qmp_command qmp_misc_commands[] = {
    { "qmp_capabilities", cmd_capabilities },
    { "query-version", cmd_query_version },
    { "query-commands", cmd_query_commands },
    { "quit", cmd_quit },
    { NULL, NULL },
};
