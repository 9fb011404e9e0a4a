/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Write hooks (see hook.h).  The list lives on the node; requests run it
 * under the read side of n->hooks_lock, so removing a hook (write side)
 * waits for every request that is running it.  A node without hooks
 * costs one atomic load per request.
 */
#include "hook.h"

/* How deep this thread is in running hooks. */
static __thread unsigned hook_depth;

bool
write_hooks_running(void)
{
    return hook_depth > 0;
}

void
write_hook_add(struct node *n, struct write_hook *h)
{
    pthread_rwlock_wrlock(&n->hooks_lock);
    h->next = n->hooks;
    __atomic_store_n(&n->hooks, h, __ATOMIC_RELEASE);
    pthread_rwlock_unlock(&n->hooks_lock);
}

void
write_hook_remove(struct node *n, struct write_hook *h)
{
    pthread_rwlock_wrlock(&n->hooks_lock);
    for (struct write_hook **pp = &n->hooks; *pp; pp = &(*pp)->next)
        if (*pp == h) {
            __atomic_store_n(pp, h->next, __ATOMIC_RELEASE);
            break;
        }
    pthread_rwlock_unlock(&n->hooks_lock);
}

bool
write_hooks_present(struct node *n)
{
    return __atomic_load_n(&n->hooks, __ATOMIC_ACQUIRE) != NULL;
}

void
write_hooks_run(struct node *n, uint64_t off, uint64_t len)
{
    if (!write_hooks_present(n) || len == 0)
        return;
    pthread_rwlock_rdlock(&n->hooks_lock);
    hook_depth++;
    for (struct write_hook *h = n->hooks; h; h = h->next)
        h->before_write(h, n, off, len);
    hook_depth--;
    pthread_rwlock_unlock(&n->hooks_lock);
}
