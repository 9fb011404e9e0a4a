/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The node graph: opening nodes from option trees, probing formats,
 * opening "file" and "backing" children, and reference counting.
 *
 * Backing chains are opened here, not in drivers: a format driver only
 * records the backing name and format it found in its metadata.  This
 * file resolves the name relative to the image's folder, refuses names
 * that would make an untrusted image open arbitrary things ("json:"),
 * detects loops (same device and inode twice in one chain) and limits
 * the depth.  Backing nodes are always opened read-only.
 *
 * Permissions follow QEMU's model (block.c, bdrv_default_perms) so that
 * the lock bytes of every file match what QEMU takes in the same place:
 * a user (command) needs consistent read, plus write when writing, and
 * shares everything; raw passes its parent's needs through to its file;
 * qcow2 also needs write and resize of its file when writable and lets
 * nobody else write or resize it; a data file may be written by others
 * but not resized; a backing file is read, and shared as the overlay
 * shares write; a filter (DRV_FILTER) passes its parent's needs through
 * like raw.  Force-share makes a node share everything.  A format's
 * "file" child gets its permissions right after probing, before the
 * format driver reads or writes anything through it.
 *
 * Children (file, data-file, backing) inherit their parent's "cache"
 * options (cache.direct) unless they set their own, as in QEMU.
 *
 * Graph changes are single-threaded (open/close); I/O on open nodes may
 * run from any thread (lib/io.c).
 */
#include <libgen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checked.h"
#include "cleanup.h"
#include "error.h"
#include "io.h"
#include "lock.h"
#include "node-bitmaps.h"
#include "node.h"
#include "options.h"

#define CHAIN_MAX_DEPTH 256

static const struct driver *const drivers[] = {
    &file_proto,
    &nbd_proto,
    &raw_format,
    &qcow2_format,
    &inject_filter,
};

/* Files already in the chain being opened (loop detection). */
struct chain {
    unsigned depth;
    dev_t dev[CHAIN_MAX_DEPTH + 1];
    ino_t ino[CHAIN_MAX_DEPTH + 1];
};

/* What a parent needs of a child, and lets others do (PERM_*). */
struct perms {
    unsigned perm, shared;
};

static struct node *open_in_chain(json_t *opts, unsigned flags,
                                  struct chain *chain,
                                  const struct perms *req);

const struct driver *
driver_find(const char *name)
{
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        if (!strcmp(drivers[i]->name, name))
            return drivers[i];
    vimg_error(EINVAL, "unknown driver '%s'", name);
    return NULL;
}

/* Every node, for lookups by node-name (blockdev-add references). */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
DEFINE_VECTOR(struct node *, node_ptr_vector);
static struct node_ptr_vector registry;

static void
registry_add(struct node *n)
{
    LOCK_GUARD(&registry_lock);
    if (node_ptr_vector_append(&registry, n) == -1)
        return; /* only lookups by name miss it */
}

static void
registry_remove(struct node *n)
{
    LOCK_GUARD(&registry_lock);
    for (size_t i = 0; i < registry.len; i++)
        if (registry.ptr[i] == n) {
            registry.ptr[i] = registry.ptr[--registry.len];
            break;
        }
    if (registry.len == 0)
        node_ptr_vector_reset(&registry);
}

struct node *
node_find(const char *name)
{
    LOCK_GUARD(&registry_lock);
    for (size_t i = 0; i < registry.len; i++) {
        struct node *n = registry.ptr[i];

        unsigned c = __atomic_load_n(&n->refcnt, __ATOMIC_ACQUIRE);

        if (!n->node_name || strcmp(n->node_name, name))
            continue;
        /* Take a reference unless the node is already being closed. */
        while (c > 0)
            if (__atomic_compare_exchange_n(&n->refcnt, &c, c + 1, false,
                                            __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE))
                return n;
        return NULL;
    }
    return NULL;
}

struct node *
node_new(const struct driver *drv, unsigned flags)
{
    static atomic_uint next_id;
    struct node *n = calloc(1, sizeof *n);

    if (!n)
        goto oom;
    n->drv = drv;
    n->flags = flags;
    n->refcnt = 1;
    n->shared = PERM_ALL;
    n->cow_align = n->serialise_align = n->request_align = 1;
    if (drv->state_size && !(n->state = calloc(1, drv->state_size)))
        goto oom;
    if (asprintf(&n->node_name, "#node%u", atomic_fetch_add(&next_id, 1)) < 0)
        goto oom;
    pthread_mutex_init(&n->io_lock, NULL);
    pthread_cond_init(&n->io_cond, NULL);
    pthread_mutex_init(&n->dirty_lock, NULL);
    pthread_rwlock_init(&n->hooks_lock, NULL);
    registry_add(n);
    return n;
oom:
    if (n)
        free(n->state);
    free(n);
    vimg_error(ENOMEM, "out of memory");
    return NULL;
}

static void
node_free(struct node *n)
{
    registry_remove(n);
    pthread_mutex_destroy(&n->io_lock);
    pthread_cond_destroy(&n->io_cond);
    pthread_mutex_destroy(&n->dirty_lock);
    pthread_rwlock_destroy(&n->hooks_lock);
    node_mem_bitmaps_free(n);
    bitmap_ptr_vector_reset(&n->dirty);
    free(n->state);
    free(n->node_name);
    free(n->filename);
    free(n->backing_name);
    free(n->backing_fmt);
    free(n->backing_full);
    free(n);
}

void
node_ref(struct node *n)
{
    __atomic_add_fetch(&n->refcnt, 1, __ATOMIC_RELAXED);
}

int
node_unref(struct node *n)
{
    int r = 0;

    if (!n || __atomic_sub_fetch(&n->refcnt, 1, __ATOMIC_ACQ_REL) > 0)
        return 0;
    if (n->drv->close && n->drv->close(n) == -1)
        r = -1;
    if (n->backing && node_unref(n->backing) == -1)
        r = -1;
    if (n->data_file && node_unref(n->data_file) == -1)
        r = -1;
    if (n->file && node_unref(n->file) == -1)
        r = -1;
    node_free(n);
    return r;
}

char *
node_path_relative(const char *base_filename, const char *name)
{
    CLEANUP_FREE char *copy = NULL;
    char *out;
    const char *dir;

    /* URIs (nbd://...) are not relative to anything. */
    if (name[0] == '/' || strstr(name, "://") || !base_filename ||
        strstr(base_filename, "://") || !strchr(base_filename, '/'))
        out = strdup(name);
    else {
        copy = strdup(base_filename);
        if (!copy)
            goto oom;
        dir = dirname(copy);
        if (asprintf(&out, "%s/%s", dir, name) < 0)
            out = NULL;
    }
    if (!out)
        goto oom;
    return out;
oom:
    vimg_error(ENOMEM, "out of memory");
    return NULL;
}

/* Choose a format for the bytes in FILE.  Raw is only chosen when
 * ALLOW_RAW; a backing file without a recorded format may not be raw. */
static const struct driver *
probe(struct node *file, bool allow_raw)
{
    uint8_t buf[2048] = { 0 };
    uint64_t len = MIN(file->size, sizeof buf);
    const struct driver *best = NULL;
    int best_score = 0;

    if (len && node_pread(file, buf, len, 0) == -1)
        return NULL;
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++) {
        int s;

        if (!drivers[i]->probe)
            continue;
        s = drivers[i]->probe(buf, len);
        if (s > best_score) {
            best_score = s;
            best = drivers[i];
        }
    }
    if (!best || (best == &raw_format && !allow_raw)) {
        vimg_error(EINVAL, "%s: could not determine the image format "
                   "(raw is never guessed for writing or for a backing "
                   "file); give it explicitly, e.g. -f raw", file->filename);
        return NULL;
    }
    return best;
}

/* Refuse a second visit of the same file in one chain. */
static int
chain_enter(struct chain *chain, struct node *file)
{
    struct stat st;

    if (!chain)
        return 0;
    if (chain->depth >= CHAIN_MAX_DEPTH) {
        vimg_error(EMLINK, "backing chain is too deep (more than %d images)",
                   CHAIN_MAX_DEPTH);
        return -1;
    }
    if (file->drv == &file_proto && file->filename &&
        stat(file->filename, &st) == 0) {
        for (unsigned i = 0; i < chain->depth; i++) {
            if (chain->dev[i] == st.st_dev && chain->ino[i] == st.st_ino) {
                vimg_error(ELOOP, "backing file loop: %s is already in the "
                           "chain", file->filename);
                return -1;
            }
        }
        chain->dev[chain->depth] = st.st_dev;
        chain->ino[chain->depth] = st.st_ino;
    }
    chain->depth++;
    return 0;
}

/* QEMU's children inherit their parent's cache.* options (cache.direct:
 * O_DIRECT on every file of the graph) unless they set their own.
 * CHILD is owned by the caller. */
static void
inherit_cache(json_t *parent, json_t *child)
{
    json_t *cache = json_object_get(parent, "cache");

    if (cache && !json_object_get(child, "cache"))
        json_object_set(child, "cache", cache);
}

/* Open the backing child of N as described by OPTS["backing"] or by the
 * name the format driver found. */
static int
open_backing(struct node *n, json_t *opts, unsigned flags,
             struct chain *chain)
{
    json_t *b = json_object_get(opts, "backing");
    unsigned bflags = (flags & ~NODE_RDWR) | VIMG_OPEN_ALLOW_PROBE_RAW;
    /* QEMU's bdrv_default_perms_for_cow. */
    struct perms req = {
        PERM_CONSISTENT_READ,
        (n->shared & PERM_WRITE) ? PERM_ALL
                                 : PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED
    };
    json_t *bopts;

    if (n->backing_name && strncmp(n->backing_name, "json:", 5) &&
        !(n->backing_full = node_path_relative(n->filename,
                                               n->backing_name)))
        return -1;
    if (flags & NODE_NO_BACKING || (b && json_is_null(b)))
        return 0;
    if (b && json_is_object(b)) {
        bool ro;

        /* blockdev-add's "read-only": backing layers default to it. */
        if (opts_get_bool(b, "read-only", true, &ro) == -1)
            return -1;
        if (!ro) {
            bflags = (bflags | NODE_RDWR) & ~VIMG_OPEN_FORCE_SHARE;
            req.perm |= PERM_WRITE;
        }
        if (!(bopts = json_deep_copy(b))) {
            vimg_error(ENOMEM, "out of memory");
            return -1;
        }
        inherit_cache(opts, bopts);
        n->backing = open_in_chain(bopts, bflags, chain, &req);
        json_decref(bopts);
        return n->backing ? 0 : -1;
    }
    if (json_is_string(b)) { /* a node-name ("" = none) */
        const char *ref = json_string_value(b);

        if (!*ref)
            return 0;
        n->backing = node_find(ref);
        if (!n->backing) {
            vimg_error(ENOENT, "Cannot find device=%s nor node-name=%s",
                       ref, ref);
            return -1;
        }
        return 0;
    }
    if (b) {
        vimg_error(EINVAL, "backing must be null, a node name or an "
                           "option object");
        return -1;
    }
    if (!n->backing_name)
        return 0;
    if (!strncmp(n->backing_name, "json:", 5)) {
        vimg_error(EPERM, "refusing to follow a json: backing file name");
        return -1;
    }
    bopts = opts_from_filename(n->backing_full, n->backing_fmt);
    if (!bopts)
        return -1;
    inherit_cache(opts, bopts);
    if (!n->backing_fmt)
        bflags &= ~VIMG_OPEN_ALLOW_PROBE_RAW;
    n->backing = open_in_chain(bopts, bflags, chain, &req);
    json_decref(bopts);
    if (!n->backing) {
        vimg_error_prefix("could not open backing file %s", n->backing_full);
        return -1;
    }
    return 0;
}

/* QEMU's rules for what format node N needs of its "file" child (DATA
 * false) or of its "data-file" child (DATA true). */
static struct perms
child_perms(const struct node *n, bool data)
{
    unsigned rw = (n->flags & NODE_RDWR) ? PERM_WRITE | PERM_RESIZE : 0;
    struct perms c = { n->perm, n->shared };

    /* raw and filters (inject) pass everything through */
    if (n->drv == &raw_format || n->drv->kind == DRV_FILTER)
        return c;
    if (data) {
        c.perm |= rw;
        c.shared &= ~PERM_RESIZE;
    } else { /* metadata */
        c.perm |= PERM_CONSISTENT_READ | rw;
        c.shared &= ~(PERM_WRITE | PERM_RESIZE);
    }
    return c;
}

int
node_change_backing(struct node *n, struct node *backing, const char *name)
{
    struct node *old;
    char *full = NULL;
    int r;

    if (!n->drv->change_backing) {
        vimg_error(ENOTSUP, "%s cannot change its backing file",
                   n->drv->name);
        return -1;
    }
    if (backing && !name)
        name = backing->filename;
    if (backing && !(full = strdup(backing->filename))) {
        vimg_error(ENOMEM, "out of memory");
        return -1;
    }
    node_drain_begin(n);
    r = n->drv->change_backing(n, backing ? name : NULL,
                               backing ? backing->drv->name : NULL);
    if (r == 0) {
        old = n->backing;
        if (backing)
            node_ref(backing);
        n->backing = backing;
        free(n->backing_full);
        n->backing_full = full;
        full = NULL;
    }
    node_drain_end(n);
    free(full);
    if (r == 0)
        node_unref(old);
    return r;
}

static int
reopen_tree(struct node *n)
{
    if (n->flags & NODE_RDWR)
        return 0;
    if (!n->drv->reopen_rw) {
        vimg_error(ENOTSUP, "%s: cannot be reopened read-write",
                   n->drv->name);
        return -1;
    }
    if ((n->file && reopen_tree(n->file) == -1) ||
        (n->data_file && reopen_tree(n->data_file) == -1) ||
        n->drv->reopen_rw(n) == -1)
        return -1;
    n->flags = (n->flags | NODE_RDWR) & ~NODE_FORCE_SHARE;
    return 0;
}

int
node_reopen_rw(struct node *n)
{
    int r;

    if (n->flags & NODE_RDWR)
        return 0;
    node_drain_begin(n);
    r = reopen_tree(n);
    node_drain_end(n);
    if (r == 0)
        r = node_set_perm(n, n->perm | PERM_WRITE,
                          n->shared & ~(PERM_WRITE | PERM_RESIZE));
    return r;
}

int
node_set_perm(struct node *n, unsigned perm, unsigned shared)
{
    unsigned old_perm = n->perm, old_shared = n->shared;
    struct perms c;

    n->perm = perm;
    n->shared = (n->flags & NODE_FORCE_SHARE) ? PERM_ALL : shared;
    if (n->drv->kind == DRV_PROTOCOL) {
        if (n->drv->set_perm && n->drv->set_perm(n) == -1)
            goto err;
        return 0;
    }
    c = child_perms(n, false);
    if (n->file && node_set_perm(n->file, c.perm, c.shared) == -1)
        goto err;
    c = child_perms(n, true);
    if (n->data_file && node_set_perm(n->data_file, c.perm, c.shared) == -1)
        goto err;
    return 0;
err:
    n->perm = old_perm;
    n->shared = old_shared;
    return -1;
}

/* Open a node; REQ is what its parent needs of it (NULL: the caller
 * calls node_set_perm later; no locks until then). */
static struct node *
open_in_chain(json_t *opts, unsigned flags, struct chain *chain,
              const struct perms *req)
{
    const char *drvname = opts_get_str(opts, "driver");
    const char *nodename = opts_get_str(opts, "node-name");
    const struct driver *drv = NULL;
    struct node *file = NULL, *n;

    if (drvname && !(drv = driver_find(drvname)))
        return NULL;
    if (!drv || drv->kind != DRV_PROTOCOL) {
        file = node_open_child(NULL, opts, "file", NULL, flags);
        if (!file)
            return NULL;
        if (chain_enter(chain, file) == -1)
            goto err_file;
        if (!drv && !(drv = probe(file, flags & VIMG_OPEN_ALLOW_PROBE_RAW)))
            goto err_file;
    }
    n = node_new(drv, flags & ~VIMG_OPEN_ALLOW_PROBE_RAW);
    if (!n)
        goto err_file;
    n->file = file;
    if (nodename) {
        free(n->node_name);
        n->node_name = strdup(nodename);
    }
    if (file)
        n->filename = strdup(file->filename);
    if (req) {
        struct perms c;

        n->perm = req->perm;
        n->shared = (flags & NODE_FORCE_SHARE) ? PERM_ALL : req->shared;
        c = child_perms(n, false);
        if (file && node_set_perm(file, c.perm, c.shared) == -1) {
            node_free(n);
            goto err_file;
        }
    }
    if (drv->open(n, opts) == -1) {
        /* The driver released its own state; drop the children. */
        node_unref(n->data_file);
        node_unref(n->file);
        node_free(n);
        return NULL;
    }
    if (drv->kind == DRV_PROTOCOL && req &&
        node_set_perm(n, n->perm, n->shared) == -1) {
        node_unref(n);
        return NULL;
    }
    if (drv->kind != DRV_PROTOCOL &&
        open_backing(n, opts, flags, chain) == -1) {
        node_unref(n); /* an opened node: close it properly */
        return NULL;
    }
    return n;
err_file:
    node_unref(file);
    return NULL;
}

/* Open a node that starts a chain of its own. */
static struct node *
open_root(json_t *opts, unsigned flags, const struct perms *req)
{
    struct chain *chain = calloc(1, sizeof *chain);
    struct node *n;

    if (!chain) {
        vimg_error(ENOMEM, "out of memory");
        return NULL;
    }
    n = open_in_chain(opts, flags, chain, req);
    free(chain);
    return n;
}

struct node *
node_open(json_t *opts, unsigned flags)
{
    /* A user: like qemu-img's and qemu-io's BlockBackends. */
    struct perms req = {
        PERM_CONSISTENT_READ | ((flags & NODE_RDWR) ? PERM_WRITE : 0),
        (flags & NODE_NO_SHARE) ? PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED
                                : PERM_ALL
    };

    return open_root(opts, flags, &req);
}

struct node *
node_open_child(struct node *parent, json_t *opts, const char *key,
                const char *default_name, unsigned flags)
{
    json_t *c = json_object_get(opts, key), *copts;
    struct perms req, *r = NULL;
    struct node *n;

    if (parent) {
        req = child_perms(parent, !strcmp(key, "data-file"));
        r = &req;
    }
    flags &= ~VIMG_OPEN_ALLOW_PROBE_RAW;
    if (c && !json_is_object(c) && !json_is_string(c)) {
        vimg_error(EINVAL, "option '%s' must be a filename or an object",
                   key);
        return NULL;
    }
    if (!c && !default_name) {
        vimg_error(EINVAL, "option '%s' is required", key);
        return NULL;
    }
    /* A string naming a live node is a reference to it (blockdev-add). */
    if (json_is_string(c) && (n = node_find(json_string_value(c)))) {
        if (r && node_set_perm(n, n->perm | r->perm, n->shared & r->shared)
                     == -1) {
            node_unref(n);
            return NULL;
        }
        return n;
    }
    if (json_is_object(c)) {
        copts = json_deep_copy(c);
        if (copts && !json_object_get(copts, "driver"))
            json_object_set_new(copts, "driver", json_string("file"));
    } else {
        copts = json_pack("{s:s,s:s}", "driver", "file", "filename",
                          c ? json_string_value(c) : default_name);
    }
    if (!copts) {
        vimg_error(ENOMEM, "out of memory");
        return NULL;
    }
    inherit_cache(opts, copts);
    n = open_root(copts, flags, r);
    json_decref(copts);
    return n;
}
