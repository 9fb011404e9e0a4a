#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# Image locking against QEMU as the oracle (issue 4, point 6).  Proves
# that vimg and QEMU exclude each other: while qemu-nbd or qemu-io use
# an image, vimg's writers and plain `vimg info` fail with QEMU's lock
# message and leave the image untouched, and -U / file.locking=off get
# through; while vimg-io writes an image, qemu-img and qemu-io are kept
# out.  And that vimg takes the very same OFD lock bytes as qemu-io, on
# every file (top, backing, external data file), read-write, read-only
# and force-share, for qcow2 and raw.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io qemu-nbd
}

# The lock bytes other processes hold on FILE's inode, e.g.
# "100 101 103 201 203" (/proc/locks: field 6 is MAJ:MIN:INODE, fields
# 7 and 8 the first and last byte).
lock_bytes() {
    local ino
    ino=$(stat -c %i "$1") || return 1
    awk -v ino="$ino" '$2 == "OFDLCK" { n = split($6, a, ":")
        if (a[n] == ino) for (b = $7; b <= $8; b++) print b }' /proc/locks |
        sort -nu | paste -sd ' '
}

# The lock bytes of each FILE, one "FILE: BYTES" line each, once they
# have stopped changing (a chain locks its files one after another).
settled_bytes() {
    local a b f i
    for ((i = 0; i < 50; i++)); do
        a=$(for f in "$@"; do echo "$f: $(lock_bytes "$f")"; done)
        sleep 0.1
        b=$(for f in "$@"; do echo "$f: $(lock_bytes "$f")"; done)
        [ "$a" = "$b" ] && ! grep -q ': $' <<<"$a" && break
    done
    echo "$b"
}

# Stop the last process started by start_bg (by PID) and forget it.
release() {
    local pid=${BG_PIDS[-1]}
    kill "$pid"
    wait "$pid" 2>/dev/null || true # killed by SIGTERM: 143
    unset 'BG_PIDS[-1]'
    [ -z "$(lock_bytes "$1")" ] || { echo "$1 still locked" >&2; false; }
}

# Serve IMG read-write with qemu-nbd (stopped by PID in the test, or at
# teardown).  serve_rw IMG
serve_rw() {
    qemu-nbd -f qcow2 --fork --pid-file="$T/nbd.pid" -k "$T/nbd.sock" "$1"
    BG_PIDS+=("$(cat "$T/nbd.pid")")
}

# After run_split: vimg failed with QEMU's lock message for FILE (exit 1,
# or 2 for compare, as qemu-img compare).
assert_lock_error() {
    local file=$1
    [ "$status" -ne 2 ] || status=1
    assert_one_line_error
    [[ $stderr == *'Failed to get "write" lock'* ||
       $stderr == *'Failed to get shared "write" lock'* ]] &&
        [[ $stderr == *"Is another process using the image [$file]?"* ]] || {
        echo "not QEMU's lock error: $stderr" >&2
        false
    }
}

@test "while qemu-nbd serves read-write, vimg's writers and info are refused" {
    qemu-img create -q -f qcow2 base.qcow2 1M
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 img.qcow2
    qemu-io -c 'write -P 7 0 64k' img.qcow2 >/dev/null
    serve_rw img.qcow2
    cp img.qcow2 img.copy
    cp base.qcow2 base.copy

    run_split "$VIMG_IO" -c 'write 0 512' img.qcow2
    [ "$status" -eq 1 ]
    [[ $stderr == *'Failed to get "write" lock'* ]]
    [[ $stderr == *'Is another process using the image [img.qcow2]?'* ]]
    for cmd in "resize img.qcow2 2M" "commit img.qcow2" \
        "bitmap --add img.qcow2 b0" "info img.qcow2"; do
        run_split "$VIMG" $cmd
        assert_lock_error img.qcow2 || { echo "vimg $cmd" >&2; false; }
    done
    cmp img.qcow2 img.copy
    cmp base.qcow2 base.copy

    run_split "$VIMG" info -U img.qcow2
    [ "$status" -eq 0 ]
    [[ $output == *'image: img.qcow2'* ]]
    # file.locking=off takes no locks at all, so it gets through too.
    run_split "$VIMG" info --image-opts \
        driver=qcow2,file.driver=file,file.filename=img.qcow2,file.locking=off
    [ "$status" -eq 0 ]
    [[ $output == *'image: img.qcow2'* ]]
    cmp img.qcow2 img.copy

    kill "$(cat nbd.pid)"
    while kill -0 "$(cat nbd.pid)" 2>/dev/null; do sleep 0.05; done
    "$VIMG" info img.qcow2 >/dev/null
}

@test "while vimg-io writes, qemu-img and qemu-io are refused" {
    qemu-img create -q -f qcow2 img.qcow2 1M
    hold_image_with "$VIMG_IO" -c 'write 0 64k' img.qcow2
    [ "$(settled_bytes img.qcow2)" = "img.qcow2: 100 101 103 201 203" ]

    run qemu-img info img.qcow2
    [ "$status" -eq 1 ]
    [[ $output == *'Failed to get shared "write" lock'* ]]
    [[ $output == *'Is another process using the image [img.qcow2]?'* ]]
    run qemu-io -c 'write 0 512' img.qcow2
    [ "$status" -eq 1 ]
    [[ $output == *'Failed to get "write" lock'* ]]
    [[ $output == *'Is another process using the image [img.qcow2]?'* ]]
    run qemu-img info -U img.qcow2
    [ "$status" -eq 0 ]
    release img.qcow2
    qemu-img info img.qcow2 >/dev/null
}

# Hold the image with qemu-io, then with vimg-io, with the same OPTIONS;
# the lock bytes on every FILE must be the same.  Sets $bytes to them
# (as settled_bytes prints them).  Not run in a subshell, so teardown
# knows the holders.  same_bytes "OPTIONS" IMG FILE...
same_bytes() {
    local opts=$1 img=$2 q v
    shift 2
    hold_image $opts "$img"
    q=$(settled_bytes "$@")
    release "$img"
    hold_image_with "$VIMG_IO" $opts "$img"
    v=$(settled_bytes "$@")
    release "$img"
    if [ "$q" != "$v" ]; then
        echo "lock bytes with '$opts' differ (< qemu-io, > vimg-io):" >&2
        diff <(echo "$q") <(echo "$v") >&2
        return 1
    fi
    bytes=$v
}

# After same_bytes: $bytes is one "FILE: BYTES" line per argument.
assert_bytes() {
    local want
    want=$(printf '%s\n' "$@")
    [ "$bytes" = "$want" ] || {
        printf 'lock bytes:\n%s\nexpected:\n%s\n' "$bytes" "$want" >&2
        false
    }
}

@test "vimg-io takes the same lock bytes as qemu-io: qcow2 and raw" {
    qemu-img create -q -f qcow2 a.qcow2 1M
    qemu-img create -q -f raw a.raw 1M
    same_bytes "" a.qcow2 a.qcow2
    assert_bytes "a.qcow2: 100 101 103 201 203"
    same_bytes "-r" a.qcow2 a.qcow2
    assert_bytes "a.qcow2: 100 201 203"
    same_bytes "-U -r" a.qcow2 a.qcow2
    assert_bytes "a.qcow2: 100"
    # raw passes its user's needs through: qemu-io shares everything.
    same_bytes "-f raw" a.raw a.raw
    assert_bytes "a.raw: 100 101"
    same_bytes "-f raw -r" a.raw a.raw
    assert_bytes "a.raw: 100"
    same_bytes "-f raw -U -r" a.raw a.raw
    assert_bytes "a.raw: 100"
}

@test "vimg-io takes the same lock bytes as qemu-io: every file of a chain" {
    qemu-img create -q -f qcow2 base.qcow2 1M
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    same_bytes "" top.qcow2 top.qcow2 base.qcow2
    assert_bytes "top.qcow2: 100 101 103 201 203" "base.qcow2: 100 201 203"
    same_bytes "-r" top.qcow2 top.qcow2 base.qcow2
    assert_bytes "top.qcow2: 100 201 203" "base.qcow2: 100 201 203"
    same_bytes "-U -r" top.qcow2 top.qcow2 base.qcow2
    assert_bytes "top.qcow2: 100" "base.qcow2: 100"
    # A raw backing file passes the overlay's needs through.
    qemu-img create -q -f raw rbase.raw 1M
    qemu-img create -q -f qcow2 -b rbase.raw -F raw rtop.qcow2
    same_bytes "" rtop.qcow2 rtop.qcow2 rbase.raw
    assert_bytes "rtop.qcow2: 100 101 103 201 203" "rbase.raw: 100"
}

@test "vimg-io takes the same lock bytes as qemu-io: external data file" {
    qemu-img create -q -f qcow2 -o data_file=d.raw d.qcow2 1M
    qemu-img create -q -f qcow2 -b d.qcow2 -F qcow2 over.qcow2
    same_bytes "" d.qcow2 d.qcow2 d.raw
    assert_bytes "d.qcow2: 100 101 103 201 203" "d.raw: 100 101 103 203"
    same_bytes "-r" d.qcow2 d.qcow2 d.raw
    assert_bytes "d.qcow2: 100 201 203" "d.raw: 100 203"
    same_bytes "" over.qcow2 over.qcow2 d.qcow2 d.raw
    assert_bytes "over.qcow2: 100 101 103 201 203" \
        "d.qcow2: 100 201 203" \
        "d.raw: 100 203"
}

@test "-U gets every read-only vimg command past a qemu-io writer" {
    qemu-img create -q -f qcow2 img.qcow2 1M
    qemu-img create -q -f qcow2 other.qcow2 1M
    hold_image img.qcow2
    while read -r cmd; do
        run_split "$VIMG" $cmd img.qcow2
        assert_lock_error img.qcow2 || { echo "vimg $cmd" >&2; false; }
        run_split "$VIMG" $cmd -U img.qcow2
        [ "$status" -eq 0 ] ||
            { echo "vimg $cmd -U: $status: $stderr" >&2; false; }
    done <<'LIST'
info
map
check
measure -O qcow2
compare other.qcow2
LIST
    run_split "$VIMG" convert -O qcow2 img.qcow2 out.qcow2
    assert_lock_error img.qcow2
    run_split "$VIMG" convert -U -O qcow2 img.qcow2 out.qcow2
    [ "$status" -eq 0 ]
    qemu-img compare -U img.qcow2 out.qcow2
    release img.qcow2
}

@test "a raw image qemu-io writes: convert refuses to read it, other readers do not, as qemu-img" {
    qemu-img create -q -f raw w.raw 1M
    hold_image -f raw w.raw
    local cmd q v
    while read -r cmd; do
        q=0 v=0
        qemu-img $cmd >/dev/null 2>&1 || q=$?
        "$VIMG" $cmd >/dev/null 2>&1 || v=$?
        [ "$q" -eq "$v" ] || { echo "$cmd: qemu-img $q, vimg $v" >&2; false; }
    done <<'LIST'
info -f raw w.raw
map -f raw w.raw
compare -f raw -F raw w.raw w.raw
measure -f raw -O qcow2 w.raw
convert -f raw -O raw w.raw o.raw
convert -U -f raw -O raw w.raw o.raw
LIST
    run_split "$VIMG" convert -f raw -O raw w.raw o2.raw
    assert_lock_error w.raw
    [ ! -e o2.raw ]
}
