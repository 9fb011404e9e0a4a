/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Write hooks: code that must run before a node's content changes.  The
 * backup job's copy-before-write is one: before a client's write lands
 * on the source, the old data is copied to the backup target.
 *
 * lib/io.c runs a node's hooks at the start of every pwrite,
 * pwrite_zeroes and discard on it, before the request takes its range,
 * with the range the request may change; truncate is refused while a
 * node has hooks.  Hooks may do I/O on other nodes and read the hooked
 * node itself; they must not write to it.  Several requests may run the
 * hooks at once.
 */
#ifndef VIMG_HOOK_H
#define VIMG_HOOK_H

#include <stdint.h>

#include "node.h"

struct write_hook {
    /* Before [OFF, OFF+LEN) of N changes.  The hook owns its failures
     * (the write goes ahead either way). */
    void (*before_write)(struct write_hook *h, struct node *n, uint64_t off,
                         uint64_t len);
    struct write_hook *next; /* by n->hooks_lock */
};

/* Start running H (borrowed until write_hook_remove) on N's writes. */
void write_hook_add(struct node *n, struct write_hook *h);
/* Stop; returns once no request is running H any more. */
void write_hook_remove(struct node *n, struct write_hook *h);
/* Run N's hooks for [OFF, OFF+LEN) (lib/io.c). */
void write_hooks_run(struct node *n, uint64_t off, uint64_t len);
/* Does N have hooks (a job depends on its content and size)? */
bool write_hooks_present(struct node *n);
/* Is this thread running hooks?  Their reads belong to a request that
 * is already in flight, so a drain must let them through (lib/io.c). */
bool write_hooks_running(void);

#endif
