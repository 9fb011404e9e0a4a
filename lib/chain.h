/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Backing-chain helpers for commit, stream-local and rebase. */
#ifndef VIMG_CHAIN_H
#define VIMG_CHAIN_H

#include <jansson.h>

#include "node.h"

/* Number of layers in TOP's chain (1 for an image without backing). */
int chain_length(struct node *top);
/* The layer at DEPTH (0 = TOP), or NULL. */
struct node *chain_layer(struct node *top, int depth);
/* Depth (>= 1) of the backing layer whose file is NAME (a path relative
 * to the current folder or, failing that, to TOP's folder; compared by
 * device and inode), or -1 with qemu-img's "Did not find" error, or when
 * NAME is TOP itself. */
int chain_find(struct node *top, const char *name);
/* An option tree that reopens TOP's chain file by file with recorded
 * formats; layer d is writable when (WRITABLE >> d) & 1.  Caller frees. */
json_t *chain_options(struct node *top, unsigned long writable);
/* Reopen the chain of TOP (which is consumed) with the layers selected
 * by WRITABLE (as for chain_options) read-write.  NULL on error (TOP is
 * closed either way). */
struct node *chain_reopen(struct node *top, unsigned long writable);
/* The name to record in TOP for a backing file the user named NAME:
 * NAME itself when it resolves relative to TOP's folder to the same
 * file as relative to the current folder, else an absolute path.
 * Caller frees. */
char *chain_backing_name(struct node *top, const char *name);

#endif
