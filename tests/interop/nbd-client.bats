#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# The "nbd" protocol driver (libnbd) against qemu-nbd: nbd+unix:// URIs
# and QEMU's server.* options, reads and writes checked with qemu-io and
# nbdcopy as oracles, zeroes and trim, a qcow2 image served as raw bytes
# and opened as qcow2 through NBD, base:allocation block status compared
# with qemu-img map, multi-conn, backing files named by URIs, and clean
# one-line errors for refused connections, TLS and read-only exports.
# Every qemu-nbd is started with --fork --pid-file and killed by PID.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-nbd qemu-img qemu-io jq
}

# serve SOCKNAME [qemu-nbd options...] IMAGE: start a persistent qemu-nbd
# on $T/SOCKNAME.sock; sets U to its URI.
serve() {
    local name=$1 i
    shift
    qemu-nbd --fork --pid-file="$T/$name.pid" -t -k "$T/$name.sock" "$@"
    for ((i = 0; i < 100; i++)); do
        [ -s "$T/$name.pid" ] && [ -S "$T/$name.sock" ] && break
        sleep 0.05
    done
    BG_PIDS+=("$(cat "$T/$name.pid")")
    U="nbd+unix:///?socket=$T/$name.sock"
}

@test "vimg info over nbd+unix: size and format, probed as qemu-img does" {
    truncate -s 5M d.raw
    serve s -f raw d.raw
    run vimg_t info --output=json "$U"
    assert_success
    [ "$(jq '.["virtual-size"]' <<<"$output")" = 5242880 ]
    [ "$(jq -r .format <<<"$output")" = raw ]
    run vimg_t info -f raw "$U"
    assert_success
    assert_line --partial "virtual size: 5 MiB (5242880 bytes)"
}

@test "vimg-io writes and reads through NBD; qemu-io and nbdcopy agree" {
    truncate -s 4M d.raw
    serve s -f raw d.raw
    run vimg_io_t -f raw -c 'write -P 5 0 64k' -c 'read -P 5 0 64k' \
        -c 'write -f -P 6 1M 100k' -c 'read -q -P 0 64k 960k' "$U"
    assert_success
    run qemu-io -f raw -c 'read -q -P 5 0 64k' -c 'read -q -P 6 1M 100k' \
        -c 'read -q -P 0 1124k 2972k' "$U"
    assert_success
    assert_output ""
    if command -v nbdcopy >/dev/null; then
        nbdcopy "$U" copy.raw
        cmp copy.raw d.raw
    fi
}

@test "zeroes (with and without unmap) and discard through NBD" {
    truncate -s 2M d.raw
    serve s -f raw d.raw
    run vimg_io_t -f raw -c 'write -P 7 0 2M' -c 'write -z 0 64k' \
        -c 'write -z -u 64k 64k' -c 'discard 1M 1M' \
        -c 'read -q -P 0 0 128k' -c 'read -q -P 7 128k 896k' "$U"
    assert_success
    run qemu-io -f raw -c 'read -q -P 0 0 128k' -c 'read -q -P 7 128k 896k' "$U"
    assert_output ""
}

@test "--image-opts with QEMU's server.type=unix options" {
    truncate -s 1M d.raw
    qemu-io -f raw -c 'write -P 0x42 4k 4k' d.raw >/dev/null
    serve s -f raw d.raw
    run vimg_io_t --image-opts -c 'read -P 0x42 4k 4k' -c 'read -P 0 0 4k' \
        "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=$T/s.sock"
    assert_success
    run vimg_t info --image-opts \
        "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=$T/s.sock,file.export="
    assert_success
    assert_line --partial "virtual size: 1 MiB"
}

@test "a qcow2 image served as raw bytes opens as qcow2 through NBD" {
    qemu-img create -q -f qcow2 x.qcow2 8M
    qemu-io -f qcow2 -c 'write -P 9 1M 1M' x.qcow2 >/dev/null
    serve s -f raw x.qcow2
    run vimg_t info "$U"
    assert_success
    assert_line "file format: qcow2"
    run vimg_io_t -f qcow2 -c 'read -q -P 9 1M 1M' -c 'read -q -P 0 0 1M' \
        -c 'write -P 0x10 1M 64k' -c map "$U"
    assert_success
    assert_line "1 MiB (0x100000) bytes     allocated at offset 1 MiB (0x100000)"
    run qemu-io -f qcow2 -c 'read -q -P 0x10 1M 64k' -c 'read -q -P 9 1088k 960k' \
        "$U"
    assert_output ""
}

@test "block status of a sparse export matches qemu-img map" {
    truncate -s 16M sp.raw
    qemu-io -f raw -c 'write -P 3 4M 1M' -c 'write -P 4 9M 64k' sp.raw >/dev/null
    serve s -f raw sp.raw
    run vimg_t map --output=json -f raw "$U"
    assert_success
    local v=$output
    run qemu-img map --output=json -f raw "$U"
    assert_success
    assert_equal "$(jq -c . <<<"$v")" "$(jq -c . <<<"$output")"
    [ "$(jq '[.[] | select(.data)] | length' <<<"$v")" = 2 ]
}

@test "multi-conn read-only export: pooled connections read correctly" {
    head -c 3M /dev/urandom >d.raw
    serve s -r -e 4 -f raw d.raw
    run vimg_io_t -r -f raw -c 'read -q 0 3M' "$U"
    assert_success
    # convert reads with several threads: they share the 4 connections.
    run vimg_t convert -f raw -O raw "$U" out.raw
    assert_success
    cmp out.raw d.raw
}

@test "a backing file named by an nbd+unix URI" {
    truncate -s 2M base.raw
    qemu-io -f raw -c 'write -P 0x21 0 2M' base.raw >/dev/null
    serve s -r -f raw base.raw
    qemu-img create -q -f qcow2 -b "$U" -F raw ov.qcow2 2M
    run vimg_io_t -f qcow2 -c 'write -P 0x22 64k 4k' -c 'read -q -P 0x21 0 64k' \
        -c 'read -q -P 0x22 64k 4k' -c 'read -q -P 0x21 68k 1980k' ov.qcow2
    assert_success
    run vimg_t info --output=json ov.qcow2
    assert_success
    [ "$(jq -r '.["backing-filename"]' <<<"$output")" = "$U" ]
    assert_qemu_check_clean ov.qcow2
    run qemu-io -f qcow2 -c 'read -q -P 0x22 64k 4k' -c 'read -q -P 0x21 0 64k' \
        ov.qcow2
    assert_output ""
}

@test "refused connections, TLS and read-only exports fail in one line" {
    run_split "$VIMG" info "nbd+unix:///?socket=$T/nosuch.sock"
    assert_one_line_error
    [[ $stderr == *"nosuch.sock"* ]]
    run_split "$VIMG" info "nbd://127.0.0.1:1/"
    assert_one_line_error
    run_split "$VIMG" info "nbds://127.0.0.1/"
    assert_one_line_error
    [[ $stderr == *TLS* ]]
    truncate -s 1M d.raw
    serve s -r -f raw d.raw
    run_split "$VIMG_IO" -f raw -c 'write 0 4k' "$U"
    [ "$status" -eq 1 ]
    [[ $stderr == *"read-only"* ]]
    run qemu-io -f raw -r -c 'read -q -P 0 0 1M' "$U"
    assert_output ""
}

@test "writes past the end of an NBD export fail and grow nothing" {
    truncate -s 1M d.raw
    serve s -f raw d.raw
    run_split "$VIMG_IO" -f raw -c 'write 1020k 8k' "$U"
    [ "$status" -eq 1 ]
    [ "$(stat -c %s d.raw)" -eq 1048576 ]
}
