#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# Data through vimg-nbd, with qemu's tools and libnbd's as the oracles:
# qemu-io writes and reads over NBD and then directly on the file;
# qemu-img convert/compare from and into an export; nbdcopy with one and
# four connections; a backing chain and bitmaps mapped the same way as
# qemu-nbd maps them; dirty bitmaps recording NBD writes and saved on
# stop; SIGTERM during a copy; qemu's image locking.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-nbd qemu-img qemu-io nbdinfo nbdcopy
}

# qemu-io over NBD: run each -c command against URI, fail loudly.
qio_nbd() {
    local uri=$1 out
    shift
    out=$(qemu-io -f raw "$@" "$uri" 2>&1) || {
        echo "qemu-io $* $uri failed: $out" >&2
        return 1
    }
    if grep -qiE 'fail|error|mismatch' <<<"$out"; then
        echo "qemu-io $* $uri: $out" >&2
        return 1
    fi
}

# The same directly on a file with format FMT.
qio_file() {
    local fmt=$1 img=$2 out
    shift 2
    out=$(qemu-io -r -f "$fmt" "$@" "$img" 2>&1) || {
        echo "qemu-io $* $img failed: $out" >&2
        return 1
    }
    if grep -qiE 'fail|error|mismatch' <<<"$out"; then
        echo "qemu-io $* $img: $out" >&2
        return 1
    fi
}

# Writes (patterns, zeroes, discard, aio) over NBD, then reads back.
IO_WRITES=(
    -c 'write -P 0xa1 0 64k'
    -c 'write -P 0xa2 1M 3M'
    -c 'write -P 0xa3 5000 1234'
    -c 'write -P 0xa4 10M 1M'
    -c 'write -z 10M 512k'
    -c 'write -P 0xa5 20M 2M'
    -c 'discard 20M 1M'
    -c 'aio_write -P 0xb1 30M 256k'
    -c 'aio_write -P 0xb2 31M 64k'
    -c 'aio_write -z 30M 64k'
    -c 'aio_flush'
    -c 'flush'
)
IO_READS=(
    -c 'read -P 0xa1 0 4096'
    -c 'read -P 0xa3 5000 1234'
    -c 'read -P 0xa1 6234 59302'
    -c 'read -P 0xa2 1M 3M'
    -c 'read -P 0 10M 512k'
    -c 'read -P 0xa4 10752k 512k'
    -c 'read -P 0 20M 1M'
    -c 'read -P 0xa5 21M 1M'
    -c 'read -P 0 30M 64k'
    -c 'read -P 0xb1 30784k 192k'
    -c 'read -P 0xb2 31M 64k'
    -c 'read -P 0 40M 1M'
)

@test "qemu-io over NBD writes a raw export; the file holds the data" {
    truncate -s 64M d.raw
    vnbd_start v -t -f raw d.raw
    qio_nbd "$U" "${IO_WRITES[@]}"
    qio_nbd "$U" "${IO_READS[@]}"
    vnbd_stop
    qio_file raw d.raw "${IO_READS[@]}"
}

@test "qemu-io over NBD writes a qcow2 export; the file holds the data" {
    qemu-img create -f qcow2 d.qcow2 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x77 40M 1M' d.qcow2 >/dev/null
    vnbd_start v -t -f qcow2 d.qcow2
    qio_nbd "$U" "${IO_WRITES[@]}" -c 'write -z 40M 1M'
    qio_nbd "$U" "${IO_READS[@]}"
    vnbd_stop
    assert_qemu_check_clean d.qcow2
    qio_file qcow2 d.qcow2 "${IO_READS[@]}"
}

# A qcow2 image with a bit of everything in it.
make_mixed() {
    qemu-img create -f qcow2 "$1" 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x11 0 1M' -c 'write -P 0x22 5M 300k' \
        -c 'write -z 8M 1M' -c 'write -P 0x33 63M 1M' "$1" >/dev/null
}

@test "qemu-img convert and compare read an export" {
    make_mixed d.qcow2
    vnbd_start v -t -r -f qcow2 d.qcow2
    qemu-img convert -O qcow2 "$U" out.qcow2
    qemu-img compare -F qcow2 "$U" d.qcow2
    qemu-img compare -f qcow2 -F qcow2 out.qcow2 d.qcow2
    vnbd_stop
    assert_qemu_check_clean out.qcow2
}

@test "qemu-img convert -n writes into an export" {
    make_mixed src.qcow2
    qemu-img create -f qcow2 dst.qcow2 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x99 0 64M' dst.qcow2 >/dev/null
    vnbd_start v -t -f qcow2 dst.qcow2
    qemu-img convert -n -f qcow2 -O raw src.qcow2 "$U"
    qemu-img compare -F qcow2 "$U" src.qcow2
    vnbd_stop
    assert_qemu_check_clean dst.qcow2
    qemu-img compare -f qcow2 -F qcow2 dst.qcow2 src.qcow2
}

@test "nbdcopy with 1 and 4 connections into a writable export and back" {
    head -c 48M /dev/urandom >src.raw
    # Holes and zeroes too.
    dd if=/dev/zero of=src.raw bs=1M seek=8 count=4 conv=notrunc 2>/dev/null
    truncate -s 64M src.raw
    for c in 1 4; do
        truncate -s 64M "d$c.raw"
        qemu-io -f raw -c 'write -P 0x5a 0 64M' "d$c.raw" >/dev/null
        vnbd_start "v$c" -t -e 4 -f raw "d$c.raw"
        nbdinfo --can multi-conn "$U"
        nbdcopy -C "$c" src.raw "$U"
        nbdcopy -C "$c" "$U" "back$c.raw"
        cmp src.raw "back$c.raw"
        vnbd_stop
        cmp src.raw "d$c.raw"
    done
}

# base <- mid <- top, distinct writes in each, some zero writes.
make_chain() {
    qemu-img create -f qcow2 base.qcow2 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x01 0 4M' -c 'write -P 0x02 16M 2M' \
        -c 'write -P 0x03 40M 1M' base.qcow2 >/dev/null
    qemu-img create -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x11 1M 1M' -c 'write -z 16M 1M' \
        -c 'write -P 0x12 24M 512k' mid.qcow2 >/dev/null
    qemu-img create -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x21 1536k 1M' -c 'write -z 40M 512k' \
        -c 'write -P 0x22 50M 64k' top.qcow2 >/dev/null
}

@test "a 3-deep chain maps like qemu-nbd (allocation, depth)" {
    make_chain
    vnbd_start v -t -r -A -f qcow2 top.qcow2
    qnbd_start q -r -A -f qcow2 top.qcow2
    for ctx in base:allocation qemu:allocation-depth; do
        diff <(nbdinfo --map="$ctx" "$QU") <(nbdinfo --map="$ctx" "$U")
    done
    qemu-img compare -F qcow2 "$U" top.qcow2
    vnbd_stop
}

@test "-B finds a bitmap in the backing file, as qemu-nbd does" {
    make_chain
    qemu-img bitmap --add base.qcow2 bb
    qemu-io -f qcow2 -c 'write -P 0x44 8M 1M' -c 'write -z 60M 64k' \
        base.qcow2 >/dev/null
    vnbd_start v -t -r -B bb -f qcow2 top.qcow2
    qnbd_start q -r -B bb -f qcow2 top.qcow2
    run nbdinfo --map=qemu:dirty-bitmap:bb "$U"
    assert_success
    assert_output --partial dirty
    diff <(nbdinfo --map=qemu:dirty-bitmap:bb "$QU") \
        <(nbdinfo --map=qemu:dirty-bitmap:bb "$U")
    vnbd_stop
}

@test "NBD writes are recorded by an enabled bitmap and saved on stop" {
    local writes=(-c 'write -P 0x21 4M 1M' -c 'write -z 9M 64k'
        -c 'write -P 0x22 33M 100k' -c 'discard 0 64k')
    qemu-img create -f qcow2 d.qcow2 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x11 0 2M' d.qcow2 >/dev/null
    qemu-img bitmap --add d.qcow2 b0
    # The oracle: the same writes by qemu-io on a copy.
    cp d.qcow2 q.qcow2
    qemu-io -f qcow2 "${writes[@]}" q.qcow2 >/dev/null
    qnbd_start q -r -B b0 -f qcow2 q.qcow2
    expected=$(nbdinfo --map=qemu:dirty-bitmap:b0 "$QU")
    grep -q dirty <<<"$expected"

    vnbd_start v -t -B b0 -f qcow2 d.qcow2
    qio_nbd "$U" "${writes[@]}"
    run nbdinfo --map=qemu:dirty-bitmap:b0 "$U"
    assert_success
    diff <(echo "$expected") <(echo "$output")
    vnbd_stop
    run qemu-img info --output=json d.qcow2
    assert_success
    [ "$(jq -c '."format-specific".data.bitmaps[0].flags' <<<"$output")" = '["auto"]' ]
    assert_qemu_check_clean d.qcow2
    qnbd_start q2 -r -B b0 -f qcow2 d.qcow2
    diff <(echo "$expected") <(nbdinfo --map=qemu:dirty-bitmap:b0 "$QU")
}

@test "several bitmaps at once map like qemu-nbd" {
    qemu-img create -f qcow2 d.qcow2 64M >/dev/null
    qemu-img bitmap --add d.qcow2 a
    qemu-io -f qcow2 -c 'write -P 0x11 1M 1M' d.qcow2 >/dev/null
    qemu-img bitmap --add d.qcow2 b
    qemu-io -f qcow2 -c 'write -P 0x22 8M 64k' -c 'write -z 20M 1M' \
        d.qcow2 >/dev/null
    qemu-img bitmap --add --granularity 512k d.qcow2 c
    qemu-img bitmap --disable d.qcow2 a
    qemu-io -f qcow2 -c 'write -P 0x33 40M 4k' d.qcow2 >/dev/null
    vnbd_start v -t -r -B a -B b -B c -f qcow2 d.qcow2
    qnbd_start q -r -B a -B b -B c -f qcow2 d.qcow2
    for bm in a b c; do
        diff <(nbdinfo --map=qemu:dirty-bitmap:$bm "$QU") \
            <(nbdinfo --map=qemu:dirty-bitmap:$bm "$U")
    done
    diff <(nbdinfo --list "$QU" | sed 's/q\.sock/S/') \
        <(nbdinfo --list "$U" | sed 's/v\.sock/S/')
    vnbd_stop
}

@test "SIGTERM during an nbdcopy write: exit 0, image clean" {
    qemu-img create -f qcow2 d.qcow2 256M >/dev/null
    vnbd_start v -t -f qcow2 d.qcow2
    # A paced stream, so that the copy is surely running at the stop.
    for ((i = 0; i < 256; i++)); do
        head -c 1M /dev/urandom
        sleep 0.02
    done 2>/dev/null | nbdcopy -C 1 - "$U" 2>/dev/null &
    cpid=$!
    BG_PIDS+=("$cpid")
    for ((i = 0; i < 400; i++)); do
        [ "$(stat -c %s d.qcow2)" -gt 16777216 ] && break
        sleep 0.02
    done
    kill -0 "$cpid"
    vnbd_stop
    wait "$cpid" || true
    assert_qemu_check_clean d.qcow2
    run qemu-img info --output=json d.qcow2
    [ "$(jq '."format-specific".data.corrupt' <<<"$output")" = false ]
}

# run_split on a server start: vimg-nbd (or qemu-nbd) must fail before
# listening.
@test "an image locked by a writer: vimg-nbd fails like qemu-nbd" {
    qemu-img create -f qcow2 d.qcow2 64M >/dev/null
    hold_image -f qcow2 d.qcow2
    run_split qemu-nbd -f qcow2 -k "$T/q.sock" d.qcow2
    [ "$status" -ne 0 ]
    run_split "$VIMG_NBD" -f qcow2 -k "$T/v.sock" d.qcow2
    assert_one_line_error
    assert_output ""
    [[ $stderr == *'"write" lock'* ]]
    [ ! -e "$T/v.sock" ]
    # Read-only next to a writer: qemu-nbd -r fails too (the writer does
    # not share "consistent read").
    run_split qemu-nbd -r -f qcow2 -k "$T/q.sock" d.qcow2
    [ "$status" -ne 0 ]
    run_split "$VIMG_NBD" -r -f qcow2 -k "$T/v.sock" d.qcow2
    assert_one_line_error
}

@test "-r on an image qemu-nbd serves read-write fails like qemu-nbd" {
    qemu-img create -f qcow2 d.qcow2 64M >/dev/null
    qnbd_start q -f qcow2 d.qcow2
    run_split qemu-nbd -r -f qcow2 -k "$T/q2.sock" d.qcow2
    [ "$status" -ne 0 ]
    run_split "$VIMG_NBD" -r -f qcow2 -k "$T/v.sock" d.qcow2
    assert_one_line_error
    run_split "$VIMG_NBD" -f qcow2 -k "$T/v.sock" d.qcow2
    assert_one_line_error
    # Two readers share: qemu-nbd -r and vimg-nbd -r together are fine.
    qemu-img create -f qcow2 r.qcow2 64M >/dev/null
    qnbd_start q3 -r -f qcow2 r.qcow2
    vnbd_start v2 -t -r -f qcow2 r.qcow2
    nbdinfo --size "$U"
    vnbd_stop
}
