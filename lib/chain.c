/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Backing-chain helpers: walking a chain, finding a layer by the name a
 * user gave, and describing a chain as an option tree so that a command
 * can reopen it with exactly the layers it writes opened read-write
 * (the others stay read-only and keep their shared locks).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chain.h"
#include "cleanup.h"
#include "error.h"

int
chain_length(struct node *top)
{
    int n = 0;

    for (; top; top = top->backing)
        n++;
    return n;
}

struct node *
chain_layer(struct node *top, int depth)
{
    while (top && depth-- > 0)
        top = top->backing;
    return top;
}

static bool
same_file(const char *a, const struct stat *b)
{
    struct stat st;

    return a && stat(a, &st) == 0 && st.st_dev == b->st_dev &&
           st.st_ino == b->st_ino;
}

int
chain_find(struct node *top, const char *name)
{
    CLEANUP_FREE char *rel = node_path_relative(top->filename, name);
    struct stat want;
    int d = 0;

    if (stat(name, &want) == -1 && (!rel || stat(rel, &want) == -1))
        goto not_found;
    for (struct node *n = top; n; n = n->backing, d++) {
        if (!same_file(n->filename, &want))
            continue;
        if (d == 0) {
            vimg_error(EINVAL, "'%s' is the image itself", name);
            return -1;
        }
        return d;
    }
not_found:
    vimg_error(ENOENT, "Did not find '%s' in the backing chain of '%s'",
               name, top->filename);
    return -1;
}

static json_t *
layer_options(struct node *n, unsigned long writable, int d)
{
    json_t *o = json_pack("{s:s,s:{s:s,s:s},s:b}", "driver", n->drv->name,
                          "file", "driver", "file", "filename", n->filename,
                          "read-only", d >= 64 || !((writable >> d) & 1));
    json_t *b;

    if (!o)
        goto oom;
    b = n->backing ? layer_options(n->backing, writable, d + 1)
                   : json_null();
    if (!b) {
        json_decref(o);
        return NULL;
    }
    json_object_set_new(o, "backing", b);
    return o;
oom:
    vimg_error(ENOMEM, "out of memory");
    return NULL;
}

json_t *
chain_options(struct node *top, unsigned long writable)
{
    return layer_options(top, writable, 0);
}

char *
chain_backing_name(struct node *top, const char *name)
{
    CLEANUP_FREE char *rel = node_path_relative(top->filename, name);
    struct stat a, b;
    char *out;

    if (name[0] == '/' || strstr(name, "://") ||
        (rel && stat(rel, &a) == 0 && stat(name, &b) == 0 &&
         a.st_dev == b.st_dev && a.st_ino == b.st_ino) ||
        (rel && stat(name, &b) == -1))
        out = strdup(name);
    else
        out = realpath(name, NULL);
    if (!out)
        vimg_error(errno, "%s: %m", name);
    return out;
}

struct node *
chain_reopen(struct node *top, unsigned long writable)
{
    json_t *opts = chain_options(top, writable);
    struct node *n;

    /* Our own read-only locks would conflict with the read-write open. */
    node_unref(top);
    if (!opts)
        return NULL;
    n = node_open(opts, (writable & 1) ? NODE_RDWR : 0);
    json_decref(opts);
    return n;
}
