#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-nbd against the peers: nbdinfo --list and --map for the three
# metadata contexts give the same answers as qemu-nbd serving the same
# image; nbdcopy and qemu-img read back the same bytes; socket
# activation and --fork; a clean stop on SIGTERM.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-nbd qemu-img qemu-io nbdinfo nbdcopy
}

# The image of nbd.md's verified session: data before the bitmap, then
# writes recorded by bm0, one of them a zero cluster.
make_disk() {
    qemu-img create -f qcow2 d.qcow2 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x11 0 1M' d.qcow2 >/dev/null
    qemu-img bitmap --add d.qcow2 bm0
    qemu-io -f qcow2 -c 'write -P 0x22 8M 2M' -c 'write -z 32M 1M' \
        d.qcow2 >/dev/null
}

@test "nbdinfo --list and every --map context match qemu-nbd" {
    make_disk
    vnbd_start v -t -e 4 -r -f qcow2 -x disk -D "test disk" -B bm0 -A d.qcow2
    qnbd_start q -e 4 -r -f qcow2 -x disk -D "test disk" -B bm0 -A d.qcow2
    diff <(nbdinfo --list "$U" | sed 's/v\.sock/S/') \
        <(nbdinfo --list "$QU" | sed 's/q\.sock/S/')
    for ctx in base:allocation qemu:dirty-bitmap:bm0 qemu:allocation-depth; do
        diff <(nbdinfo --map="$ctx" "nbd+unix:///disk?socket=$T/v.sock") \
            <(nbdinfo --map="$ctx" "nbd+unix:///disk?socket=$T/q.sock")
    done
    vnbd_stop
}

@test "nbdcopy with 1 and 4 connections and qemu-img compare read the image" {
    make_disk
    vnbd_start v -t -e 4 -r -f qcow2 d.qcow2
    nbdcopy -C 1 "$U" one.raw
    nbdcopy -C 4 "$U" four.raw
    qemu-img compare -f raw -F qcow2 one.raw d.qcow2
    qemu-img compare -f raw -F qcow2 four.raw d.qcow2
    qemu-img compare "$U" d.qcow2
    vnbd_stop
}

@test "socket activation: nbdinfo -- [ vimg-nbd ... ]" {
    make_disk
    run nbdinfo --map=qemu:dirty-bitmap:bm0 -- [ "$VIMG_NBD" -r -f qcow2 -B bm0 d.qcow2 ]
    assert_success
    expected=$(printf '%10s %11s %4s  %s\n' 0 8388608 0 clean)
    assert_line --index 0 "$expected"
    assert_line --partial "8388608     2097152    1  dirty"
}

@test "--fork returns once listening; without -t the last client ends it" {
    make_disk
    "$VIMG_NBD" --fork --pid-file="$T/p.pid" -r -f qcow2 -k "$T/f.sock" d.qcow2
    [ -S "$T/f.sock" ]
    pid=$(cat "$T/p.pid")
    BG_PIDS+=("$pid")
    nbdinfo --size "nbd+unix:///?socket=$T/f.sock"
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    ! kill -0 "$pid" 2>/dev/null
    [ ! -e "$T/f.sock" ]
}

@test "nbdinfo --json and --json --list match qemu-nbd" {
    make_disk
    vnbd_start v -t -r -f qcow2 -x disk -D "test disk" -B bm0 -A d.qcow2
    qnbd_start q -r -f qcow2 -x disk -D "test disk" -B bm0 -A d.qcow2
    diff <(nbdinfo --json "nbd+unix:///disk?socket=$T/v.sock" | sed 's/v\.sock/S/') \
        <(nbdinfo --json "nbd+unix:///disk?socket=$T/q.sock" | sed 's/q\.sock/S/')
    diff <(nbdinfo --json --list "$U" | sed 's/v\.sock/S/') \
        <(nbdinfo --json --list "$QU" | sed 's/q\.sock/S/')
    vnbd_stop
}
