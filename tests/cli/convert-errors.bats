#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg convert: bad options and bad input.  Each failure is one line on
# stderr and exit 1 (as qemu-img); the source is never changed; a target
# that convert created is removed.

load ../helpers

MNT=

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io
    qemu-img create -q -f qcow2 s.qcow2 8M
    qemu-io -f qcow2 -c "write -P 0x11 0 6M" s.qcow2 >/dev/null
    sha256sum s.qcow2 >s.sum
}

eval "helpers_$(declare -f teardown)"
teardown() {
    if [ -n "$MNT" ]; then
        umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
    fi
    [ -e ro.raw ] && chattr -i ro.raw 2>/dev/null
    helpers_teardown
}

source_unchanged() { sha256sum -c --quiet s.sum; }

# fails_with MESSAGE-PART ARGS...: one-line error containing MESSAGE-PART.
fails_with() {
    local want=$1
    shift
    run_split "$VIMG" convert "$@"
    assert_one_line_error
    if [[ $stderr != *"$want"* ]]; then
        echo "expected '$want' in: $stderr" >&2
        return 1
    fi
}

@test "option checks: qemu-img's messages" {
    fails_with "requires use of -n flag" --target-is-zero s.qcow2 o
    fails_with "--target-image-opts requires use of -n flag" --target-image-opts s.qcow2 o
    fails_with "between 1 and 16" -m 0 s.qcow2 o
    fails_with "between 1 and 16" -m 17 s.qcow2 o
    fails_with "between 1 and 16" -m x s.qcow2 o
    fails_with "Invalid buffer size for sparse output" -S 511 s.qcow2 o
    fails_with "Invalid buffer size for sparse output" -S 32M s.qcow2 o
    fails_with "Invalid buffer size for sparse output" -S abc s.qcow2 o
    fails_with "Unknown file format 'foo'" -O foo s.qcow2 o
    fails_with "Must specify image file name" s.qcow2
    fails_with "Must specify image file name"
    fails_with "Compression not supported for this file format" -c s.qcow2 o
    fails_with "Backing file not supported for file format 'raw'" -B s.qcow2 -F qcow2 s.qcow2 o
    fails_with "Backing file format not supported" -F qcow2 s.qcow2 o
    fails_with "requires explicit backing format" -O qcow2 -B s.qcow2 s.qcow2 o
    fails_with "Invalid cache option: bogus" -t bogus s.qcow2 o
    fails_with "Invalid source cache option: bogus" -T bogus s.qcow2 o
    fails_with "-o has no effect when skipping image creation" -n -o cluster_size=4k s.qcow2 o
    fails_with "Cannot use --target-is-zero" -n --target-is-zero -O qcow2 -B s.qcow2 -F qcow2 s.qcow2 o
    fails_with "Format driver 'raw' does not support bitmaps" --bitmaps s.qcow2 o
    fails_with "Use of --skip-broken-bitmaps requires --bitmaps" -O qcow2 --skip-broken-bitmaps s.qcow2 o
    fails_with "Copying bitmaps only possible with single source" -O qcow2 --bitmaps s.qcow2 s.qcow2 o
    fails_with "mutually exclusive" -O qcow2 --bitmaps --bitmap b s.qcow2 o
    fails_with "--bitmap needs a single source" -O qcow2 --bitmap b s.qcow2 s.qcow2 o
    fails_with "--clear-bitmap requires --bitmap" -O qcow2 --clear-bitmap s.qcow2 o
    fails_with "drop -U" -O qcow2 -U --bitmap b --clear-bitmap s.qcow2 o
    fails_with "Dirty bitmap 'b' not found" -O qcow2 --bitmap b s.qcow2 o
    qemu-img convert -O raw s.qcow2 s.raw
    fails_with "Source lacks bitmap support" -f raw -O qcow2 --bitmap b s.raw o
    fails_with "Source lacks bitmap support" -f raw -O qcow2 --bitmaps s.raw o
    qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 8M
    fails_with "Format driver 'qcow2' does not support bitmaps" -n -O qcow2 --bitmaps s.qcow2 v2.qcow2
    fails_with "invalid option" -z s.qcow2 o
    fails_with "cluster_size" -O raw -o cluster_size=4k s.qcow2 o
    fails_with "foo" -O qcow2 -o foo=bar s.qcow2 o
    fails_with "" -O qcow2 -o cluster_size=3k s.qcow2 o
    [ ! -e o ]
    source_unchanged
}

@test "missing source: one line, no target left" {
    fails_with "Could not open 'missing.qcow2'" missing.qcow2 o.raw
    [ ! -e o.raw ]
    fails_with "missing.qcow2" s.qcow2 missing.qcow2 o.raw
    [ ! -e o.raw ]
}

@test "wrong source format" {
    qemu-img create -q -f raw r.raw 1M
    fails_with "Could not open 'r.raw'" -f qcow2 r.raw o.raw
    fails_with "" -f vmdk s.qcow2 o.raw
    [ ! -e o.raw ]
}

@test "unwritable target folder" {
    fails_with "no/such/dir/o.raw" s.qcow2 no/such/dir/o.raw
    touch file
    fails_with "file/o.qcow2" -O qcow2 s.qcow2 file/o.qcow2
    source_unchanged
}

@test "-n: missing target, too small target, read-only target" {
    fails_with "Could not open 'nonexist'" -n s.qcow2 nonexist
    qemu-img create -q -f raw small.raw 1M
    fails_with "output file is smaller than input file" -n s.qcow2 small.raw
    qemu-img create -q -f raw ro.raw 8M
    sha256sum ro.raw >ro.sum
    chattr +i ro.raw 2>/dev/null || skip "chattr +i not supported here"
    fails_with "ro.raw" -n s.qcow2 ro.raw
    chattr -i ro.raw
    sha256sum -c --quiet ro.sum
    source_unchanged
}

@test "the target is one of the sources: refused, source untouched" {
    fails_with "s.qcow2" -O raw s.qcow2 s.qcow2
    fails_with "s.qcow2" -O qcow2 s.qcow2 s.qcow2
    source_unchanged
}

@test "a target that another process holds: refused with -n" {
    # A qcow2 target: a raw one is shared for writing (qemu-img convert
    # -n into a raw image that qemu-io writes succeeds too).
    qemu-img create -q -f qcow2 t.qcow2 8M
    hold_image -f qcow2 t.qcow2
    fails_with "lock" -n -O qcow2 s.qcow2 t.qcow2
    source_unchanged
}

@test "a source held for writing: refused without -U" {
    hold_image -f qcow2 s.qcow2
    fails_with "lock" s.qcow2 o.raw
    [ ! -e o.raw ]
}

@test "full disk: clear error, the created target is removed" {
    [ "$(id -u)" -eq 0 ] || skip "needs root for a tmpfs mount"
    mkdir mnt
    mount -t tmpfs -o size=2M tmpfs mnt 2>/dev/null || skip "cannot mount tmpfs"
    MNT=$T/mnt
    fails_with "No space left on device" s.qcow2 mnt/o.raw
    [ ! -e mnt/o.raw ]
    fails_with "No space left on device" -O qcow2 s.qcow2 mnt/o.qcow2
    [ ! -e mnt/o.qcow2 ]
    # Random data does not compress.
    head -c 6M /dev/urandom >rnd.raw
    fails_with "No space left on device" -c -O qcow2 rnd.raw mnt/c.qcow2
    [ ! -e mnt/c.qcow2 ]
    # With -n the target is the user's: it stays.
    truncate -s 8M mnt/n.raw
    fails_with "No space left on device" -n s.qcow2 mnt/n.raw
    [ -e mnt/n.raw ]
    source_unchanged
}

@test "corrupt source: clean error, target removed" {
    cp s.qcow2 bad.qcow2
    # Point the L1 table far past the end of the file.
    printf '\x00\x00\x10\x00\x00\x00\x00\x00' |
        dd of=bad.qcow2 bs=1 seek=40 conv=notrunc status=none
    run_split "$VIMG" convert bad.qcow2 o.raw
    assert_one_line_error
    [ ! -e o.raw ]
}
