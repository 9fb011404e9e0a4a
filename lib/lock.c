/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Image locking, byte for byte compatible with QEMU, so that vimg and
 * QEMU processes exclude each other correctly.
 *
 * Byte 100+i is read-locked while this opener holds permission i; byte
 * 200+i while it does not share permission i (i = 0 consistent read,
 * 1 write, 2 write unchanged, 3 resize).  Every lock is a 1-byte F_RDLCK
 * taken with F_OFD_SETLK, so locks belong to the open file description
 * and closing another descriptor of the same file keeps them (POSIX
 * locks would not).  Conflicts are probed with F_OFD_GETLK and an
 * F_WRLCK, which sees read locks of other descriptions only.  Byte 0
 * (libvirt's) and bytes 104/204 (QEMU before 6.2) are never touched.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>

#include "error.h"
#include "lock.h"

#define PERM_BASE 100
#define SHARED_BASE 200

static const char *const perm_names[] = { "consistent read", "write",
                                          "write unchanged", "resize" };

static int
lock_byte(int fd, int byte, short type)
{
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET,
                        .l_start = byte, .l_len = 1 };

    return fcntl(fd, F_OFD_SETLK, &fl);
}

/* Does another open file description hold BYTE? */
static int
byte_held_elsewhere(int fd, int byte, bool *held)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
                        .l_start = byte, .l_len = 1 };

    if (fcntl(fd, F_OFD_GETLK, &fl) == -1)
        return -1;
    *held = fl.l_type != F_UNLCK;
    return 0;
}

/* Set exactly the bytes for (PERM, SHARED); with ADD_ONLY, never unlock. */
static int
apply(int fd, unsigned perm, unsigned shared, bool add_only)
{
    for (int i = 0; i < 4; i++) {
        bool p = perm & (1u << i), ns = !(shared & (1u << i));

        if ((p || !add_only) &&
            lock_byte(fd, PERM_BASE + i, p ? F_RDLCK : F_UNLCK) == -1)
            return -1;
        if ((ns || !add_only) &&
            lock_byte(fd, SHARED_BASE + i, ns ? F_RDLCK : F_UNLCK) == -1)
            return -1;
    }
    return 0;
}

/* Returns the conflicting bit index, -1 on error, 4 for none; *SHARED_ERR
 * tells which kind of conflict it was. */
static int
find_conflict(int fd, unsigned perm, unsigned shared, bool *shared_err)
{
    for (int i = 0; i < 4; i++) {
        bool held;

        if (perm & (1u << i)) {
            if (byte_held_elsewhere(fd, SHARED_BASE + i, &held) == -1)
                return -1;
            if (held) {
                *shared_err = false;
                return i;
            }
        }
        if (!(shared & (1u << i))) {
            if (byte_held_elsewhere(fd, PERM_BASE + i, &held) == -1)
                return -1;
            if (held) {
                *shared_err = true;
                return i;
            }
        }
    }
    return 4;
}

int
lock_update(int fd, const char *filename, unsigned old_perm,
            unsigned old_shared, unsigned perm, unsigned shared)
{
    bool shared_err = false;
    int c;

    /* 1. Lock the union of old and new, releasing nothing. */
    if (apply(fd, old_perm | perm, old_shared & shared, true) == -1)
        goto err_errno;
    /* 2. Test. */
    c = find_conflict(fd, perm, shared, &shared_err);
    if (c == -1)
        goto err_errno;
    if (c < 4) {
        apply(fd, old_perm, old_shared, false);
        vimg_error(EAGAIN, "Failed to get %s\"%s\" lock: Is another process "
                   "using the image [%s]?", shared_err ? "shared " : "",
                   perm_names[c], filename);
        return -1;
    }
    /* 3. Release what the new set does not need. */
    if (apply(fd, perm, shared, false) == -1)
        goto err_errno;
    return 0;
err_errno:
    vimg_error(errno, "%s: cannot lock: %m", filename);
    return -1;
}
