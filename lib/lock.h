/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* QEMU-compatible OFD image locks (see lock.c). */
#ifndef VIMG_LOCK_H
#define VIMG_LOCK_H

/* Permission bits, as QEMU numbers them. */
#define PERM_CONSISTENT_READ 0x1u
#define PERM_WRITE 0x2u
#define PERM_WRITE_UNCHANGED 0x4u
#define PERM_RESIZE 0x8u
#define PERM_ALL 0xfu

/* Move FD's lock bytes from (OLD_PERM, OLD_SHARED) to (PERM, SHARED):
 * lock first, test for conflicts, then release extras.  On a conflict,
 * restores the old set and fails with EAGAIN and QEMU's message naming
 * FILENAME.  Pass old = (0, PERM_ALL) for a fresh descriptor. */
int lock_update(int fd, const char *filename, unsigned old_perm,
                unsigned old_shared, unsigned perm, unsigned shared);

#endif
