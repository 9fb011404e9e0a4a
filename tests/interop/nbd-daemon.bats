#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-nbd with qemu-storage-daemon's start-up options (--blockdev,
# --nbd-server, --export), with qemu-storage-daemon itself as the
# oracle: the same options give the same exports, contexts and maps;
# two exports from one process; the inline child form; bad options fail
# with one line; the daemon outlives its clients and stops cleanly.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-storage-daemon qemu-img qemu-io nbdinfo
}

# qsd_start NAME [options...]: qemu-storage-daemon in the background,
# listening on $T/NAME.sock (the options must say so), pid in
# $T/NAME.pid; killed by PID at teardown.
qsd_start() {
    local name=$1 i
    shift
    rm -f "$T/$name.sock" "$T/$name.pid"
    qemu-storage-daemon --pidfile "$T/$name.pid" "$@" 2>"$T/$name.log" &
    BG_PIDS+=($!)
    for ((i = 0; i < 200; i++)); do
        [ -s "$T/$name.pid" ] && [ -S "$T/$name.sock" ] && return 0
        sleep 0.05
    done
    cat "$T/$name.log" >&2
    return 1
}

# vd_start NAME [options...]: vimg-nbd in daemon mode in the background,
# listening on $T/NAME.sock (the options must say so).  Sets VNBD_PID.
vd_start() {
    local name=$1
    shift
    rm -f "$T/$name.sock"
    "$VIMG_NBD" "$@" 2>"$T/$name.log" &
    VNBD_PID=$!
    BG_PIDS+=("$VNBD_PID")
    _wait_socket "$T/$name.sock" "$VNBD_PID" || {
        cat "$T/$name.log" >&2
        return 1
    }
}

# nbd+unix URI of export NAME on $T/SOCK.sock.
uri() { echo "nbd+unix:///$2?socket=$T/$1.sock"; }

# nbdinfo --list with the socket name filtered out.
list_of() { nbdinfo --list "$(uri "$1" "$2")" | sed "s/$1\.sock/S/"; }

make_disk() {
    qemu-img create -f qcow2 "$1" 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x11 0 1M' -c 'write -z 2M 1M' \
        "$1" >/dev/null
    qemu-img bitmap --add "$1" b0
    qemu-io -f qcow2 -c 'write -P 0x22 8M 2M' -c 'write -z 32M 64k' \
        "$1" >/dev/null
}

@test "--blockdev/--nbd-server/--export serve like qemu-storage-daemon" {
    make_disk d.qcow2
    local bd=(--blockdev driver=file,node-name=f0,filename=d.qcow2
        --blockdev driver=qcow2,node-name=d0,file=f0)
    # qemu-storage-daemon 7.2 spells the bitmap list bitmaps.0=.
    qsd_start q "${bd[@]}" --nbd-server addr.type=unix,addr.path="$T/q.sock" \
        --export type=nbd,id=e0,node-name=d0,name=disk,writable=on,bitmaps.0=b0
    for ctx in base:allocation qemu:dirty-bitmap:b0; do
        nbdinfo --map=$ctx "$(uri q disk)" >"q.$ctx"
    done
    qlist=$(list_of q disk)
    kill "$(cat "$T/q.pid")"
    wait "${BG_PIDS[-1]}" || true

    vd_start v "${bd[@]}" --nbd-server addr.type=unix,addr.path="$T/v.sock" \
        --export type=nbd,id=e0,node-name=d0,name=disk,writable=on,bitmap=b0
    diff <(echo "$qlist") <(list_of v disk)
    for ctx in base:allocation qemu:dirty-bitmap:b0; do
        diff "q.$ctx" <(nbdinfo --map=$ctx "$(uri v disk)")
    done
    qemu-io -f raw -c 'write -P 0x33 20M 1M' "$(uri v disk)" >/dev/null
    vnbd_stop
    assert_qemu_check_clean d.qcow2
    qemu-io -r -f qcow2 -c 'read -P 0x33 20M 1M' -c 'read -P 0x22 8M 2M' \
        d.qcow2 | grep -q 'read 1048576/1048576'

    # bitmaps.0= works for vimg-nbd too, and writes are recorded.
    vd_start v "${bd[@]}" --nbd-server addr.type=unix,addr.path="$T/v.sock" \
        --export type=nbd,id=e0,node-name=d0,name=disk,writable=on,bitmaps.0=b0
    run nbdinfo --map=qemu:dirty-bitmap:b0 "$(uri v disk)"
    assert_line --partial "20971520     1048576    1  dirty"
    vnbd_stop
}

@test "two exports from one process, inline file.* form, like qemu-storage-daemon" {
    make_disk a.qcow2
    qemu-img create -f qcow2 b.qcow2 32M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x44 1M 3M' b.qcow2 >/dev/null
    local opts=(--blockdev driver=qcow2,node-name=na,file.driver=file,file.filename=a.qcow2
        --blockdev driver=qcow2,node-name=nb,read-only=on,file.driver=file,file.filename=b.qcow2)
    local ex=(--export type=nbd,id=ea,node-name=na,name=one,writable=on
        --export type=nbd,id=eb,node-name=nb,name=two)
    # qemu-storage-daemon needs --nbd-server before --export.
    qsd_start q "${opts[@]}" --nbd-server addr.type=unix,addr.path="$T/q.sock" \
        "${ex[@]}"
    qlist=$(list_of q one)
    for e in one two; do
        nbdinfo --map "$(uri q $e)" >"q.$e"
    done
    kill "$(cat "$T/q.pid")"
    wait "${BG_PIDS[-1]}" || true

    vd_start v "${opts[@]}" "${ex[@]}" \
        --nbd-server addr.type=unix,addr.path="$T/v.sock"
    diff <(echo "$qlist") <(list_of v one)
    for e in one two; do
        diff "q.$e" <(nbdinfo --map "$(uri v $e)")
    done
    qemu-img compare -U -F qcow2 "$(uri v one)" a.qcow2
    qemu-img compare -U -F qcow2 "$(uri v two)" b.qcow2
    [ "$(nbdinfo --size "$(uri v two)")" = 33554432 ]
    nbdinfo --is read-only "$(uri v two)"
    ! nbdinfo --is read-only "$(uri v one)"
    run nbdinfo "$(uri v three)"
    assert_failure
    vnbd_stop
}

# run_split the server with ARGS; both must fail, vimg-nbd with one line
# and without leaving its socket ($T/s.sock) behind.
both_fail() {
    run_split qemu-storage-daemon "$@"
    [ "$status" -ne 0 ] || {
        echo "qemu-storage-daemon $* succeeded" >&2
        return 1
    }
    rm -f "$T/s.sock"
    run_split "$VIMG_NBD" "$@"
    assert_one_line_error
    [ -z "$output" ]
    [ ! -e "$T/s.sock" ]
}

@test "bad --export, --blockdev and missing --nbd-server fail with one line" {
    make_disk d.qcow2
    local bd=(--blockdev driver=qcow2,node-name=d0,file.driver=file,file.filename=d.qcow2)
    local ns=(--nbd-server addr.type=unix,addr.path="$T/s.sock")
    both_fail "${bd[@]}" "${ns[@]}" --export type=nbd,id=e0,node-name=nope
    [[ $stderr == *nope* ]]
    both_fail "${bd[@]}" "${ns[@]}" --export type=nbd,id=e0,node-name=d0,colour=red
    [[ $stderr == *colour* ]]
    both_fail "${bd[@]}" "${ns[@]}" --export type=nbd,node-name=d0
    both_fail --blockdev driver=qcow2,node-name=d0,file.driver=file,file.filename=d.qcow2,colour=red \
        "${ns[@]}" --export type=nbd,id=e0,node-name=d0
    [[ $stderr == *colour* ]]
    both_fail "${bd[@]}" --export type=nbd,id=e0,node-name=d0,writable=on
    both_fail "${bd[@]}" --nbd-server addr.type=unix,addr.path="$T/s.sock",colour=red \
        --export type=nbd,id=e0,node-name=d0
    [[ $stderr == *colour* ]]
    # Not silently without TLS.
    both_fail "${bd[@]}" --nbd-server addr.type=unix,addr.path="$T/s.sock",tls-creds=t0 \
        --export type=nbd,id=e0,node-name=d0
    both_fail "${bd[@]}" "${ns[@]}" --export type=nbd,id=e0,node-name=d0 \
        --export type=nbd,id=e0,node-name=d0,name=other
    [[ $stderr == *e0* ]]
    both_fail "${bd[@]}" "${bd[@]}" "${ns[@]}" --export type=nbd,id=e0,node-name=d0
    [[ $stderr == *d0* ]]
    both_fail --blockdev driver=qcow2,node-name=d0,file=nosuch "${ns[@]}" \
        --export type=nbd,id=e0,node-name=d0
    [[ $stderr == *nosuch* ]]
    # A failed start leaves the image closed cleanly (no bitmap left
    # in-use, which qemu-storage-daemon 7.2 does not promise).
    make_disk d.qcow2
    run_split "$VIMG_NBD" "${bd[@]}" "${ns[@]}" \
        --export type=nbd,id=e0,node-name=nope
    assert_one_line_error
    assert_qemu_check_clean d.qcow2
    run qemu-img info --output=json d.qcow2
    [ "$(jq -c '."format-specific".data.bitmaps[0].flags' <<<"$output")" = '["auto"]' ]
}

@test "daemon mode outlives its clients and stops cleanly on SIGTERM" {
    make_disk d.qcow2
    vd_start v --blockdev driver=qcow2,node-name=d0,file.driver=file,file.filename=d.qcow2 \
        --nbd-server addr.type=unix,addr.path="$T/v.sock" \
        --export type=nbd,id=e0,node-name=d0,name=disk,writable=on
    nbdinfo --size "$(uri v disk)"
    qemu-io -f raw -c 'write -P 0x55 40M 64k' "$(uri v disk)" >/dev/null
    sleep 0.3
    kill -0 "$VNBD_PID"
    [ -S "$T/v.sock" ]
    qemu-io -f raw -c 'read -P 0x55 40M 64k' "$(uri v disk)" |
        grep -q 'read 65536/65536'
    nbdinfo --size "$(uri v disk)"
    vnbd_stop
    [ ! -e "$T/v.sock" ]
    assert_qemu_check_clean d.qcow2
    qemu-io -r -f qcow2 -c 'read -P 0x55 40M 64k' d.qcow2 |
        grep -q 'read 65536/65536'
}

@test "backing= (no backing) and a backing child named by node-name" {
    qemu-img create -f qcow2 base.qcow2 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x66 0 1M' base.qcow2 >/dev/null
    qemu-img create -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x77 4M 1M' top.qcow2 >/dev/null
    local f=file.driver=file,file.filename
    for b in "backing=" "backing=b0"; do
        local opts=(--blockdev driver=qcow2,node-name=b0,read-only=on,$f=base.qcow2
            --blockdev driver=qcow2,node-name=t0,$b,$f=top.qcow2)
        qsd_start q "${opts[@]}" --nbd-server addr.type=unix,addr.path="$T/q.sock" \
            --export type=nbd,id=e,node-name=t0
        nbdinfo --map "$(uri q t0)" >q.map
        qemu-img convert -f raw -O raw "$(uri q t0)" q.raw
        kill "$(cat "$T/q.pid")"
        wait "${BG_PIDS[-1]}" || true
        vd_start v "${opts[@]}" --nbd-server addr.type=unix,addr.path="$T/v.sock" \
            --export type=nbd,id=e,node-name=t0
        diff q.map <(nbdinfo --map "$(uri v t0)")
        qemu-img compare -f raw "$(uri v t0)" q.raw
        vnbd_stop
    done
}

@test "JSON options, bitmap order and allocation-depth like qemu-storage-daemon" {
    make_disk d.qcow2
    qemu-img bitmap --add d.qcow2 b1
    qemu-io -f qcow2 -c 'write -P 0x44 16M 64k' d.qcow2 >/dev/null
    local bd='{"driver":"qcow2","node-name":"d0","read-only":true,
               "file":{"driver":"file","filename":"d.qcow2"}}'
    local ex='{"type":"nbd","id":"e0","node-name":"d0","name":"",
               "bitmaps":["b1","b0"],"allocation-depth":true,
               "description":"a disk"}'
    qsd_start q --blockdev "$bd" \
        --nbd-server '{"addr":{"type":"unix","path":"'"$T"'/q.sock"}}' \
        --export "$ex"
    qlist=$(list_of q "")
    for ctx in base:allocation qemu:allocation-depth qemu:dirty-bitmap:b0 \
        qemu:dirty-bitmap:b1; do
        nbdinfo --map=$ctx "$(uri q "")" >"q.$ctx"
    done
    kill "$(cat "$T/q.pid")"
    wait "${BG_PIDS[-1]}" || true
    vd_start v --blockdev "$bd" \
        --nbd-server '{"addr":{"type":"unix","path":"'"$T"'/v.sock"}}' \
        --export "$ex"
    diff <(echo "$qlist") <(list_of v "")
    for ctx in base:allocation qemu:allocation-depth qemu:dirty-bitmap:b0 \
        qemu:dirty-bitmap:b1; do
        diff "q.$ctx" <(nbdinfo --map=$ctx "$(uri v "")")
    done
    vnbd_stop
}

@test "an enabled bitmap on a read-only export of a writable node fails" {
    make_disk d.qcow2
    cp d.qcow2 q.qcow2
    local ro=(--nbd-server addr.type=unix,addr.path="$T/s.sock"
        --export type=nbd,id=e0,node-name=d0,bitmaps.0=b0)
    run_split "$VIMG_NBD" ${ro[@]} \
        --blockdev driver=qcow2,node-name=d0,file.driver=file,file.filename=d.qcow2
    assert_one_line_error
    [[ $stderr == *b0* ]]
    run_split qemu-storage-daemon \
        --blockdev driver=qcow2,node-name=d0,file.driver=file,file.filename=q.qcow2 \
        "${ro[@]}"
    [ "$status" -eq 1 ]
    # vimg-nbd left the image clean; with read-only=on it serves.
    assert_qemu_check_clean d.qcow2
    vd_start s --blockdev driver=qcow2,node-name=d0,read-only=on,file.driver=file,file.filename=d.qcow2 \
        "${ro[@]}"
    run nbdinfo --map=qemu:dirty-bitmap:b0 "$(uri s d0)"
    assert_line --partial "8388608     2097152    1  dirty"
    vnbd_stop
}
