#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# Compressed qcow2 writes (vimg-io write -c) checked with QEMU as the
# oracle: `qemu-img check` is clean and counts compressed clusters,
# `qemu-img compare` against a raw shadow written with the same commands
# (without -c) finds no difference, qemu-io reads the patterns back, and
# `qemu-img map` shows no host offset for compressed ranges.  Covers
# deflate and zstd, 4k/64k/2M clusters, v2 and v3, extended L2, 1-bit
# refcounts, incompressible data (stored uncompressed), overwrites of
# compressed clusters, normal writes into them (copy on write), the
# short last cluster, snapshots and byte-granular packing.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq
    seq 1 300000 >text
    head -c 1M /dev/urandom | base64 -w0 | head -c 1M >semi
    head -c 2M /dev/urandom >rnd
}

SIZE=$((16 * 1024 * 1024))

# The command list; every -c write is aligned to 2 MiB, so it covers
# whole clusters for every cluster size tested.
CMDS=(
    "write -c -P 0x11 0 4M"
    "write -c -s semi 4M 4M"
    "write -c -s rnd 8M 2M"
    "write -c -P 0x22 0 2M"
    "write -c -s text 2M 2M"
    "write -P 0x55 12k 1k"
    "write -P 0x66 5M 100k"
    "write -c -P 0x77 14M 2M"
    "write -c -s semi 14M 2M"
    "write -c -P 0x78 12M 2M"
)

# run_scenario NAME CREATE-OPTS: write CMDS compressed into NAME.qcow2
# and uncompressed into NAME.raw, then check everything with QEMU.
run_scenario() {
    local name=$1 opts=$2 args=() rargs=() c
    run qemu-img create -q -f qcow2 -o "$opts" "$name.qcow2" "$SIZE"
    assert_success
    truncate -s "$SIZE" "$name.raw"
    for c in "${CMDS[@]}"; do
        args+=(-c "$c")
        rargs+=(-c "${c/ -c / }")
    done
    run vimg_io_t -f qcow2 "${args[@]}" "$name.qcow2"
    assert_success
    run vimg_io_t -f raw "${rargs[@]}" "$name.raw"
    assert_success
    assert_qemu_check_clean "$name.qcow2"
    run qemu-img check --output=json "$name.qcow2"
    assert_success
    [ "$(jq '.["compressed-clusters"] > 0' <<<"$output")" = true ]
    run qemu-img compare -f qcow2 -F raw "$name.qcow2" "$name.raw"
    assert_success
    run qemu-io -f qcow2 -c 'read -q -P 0x22 0 12k' -c 'read -q -P 0x55 12k 1k' \
        -c 'read -q -P 0x22 13k 2035k' -c 'read -q -P 0x78 12M 2M' \
        "$name.qcow2"
    assert_success
    assert_output ""
    # Compressed ranges have no host offset; the incompressible
    # random data at 8M was stored uncompressed and has one.
    run qemu-img map --output=json "$name.qcow2"
    assert_success
    [ "$(jq '[.[] | select(.start < 4194304 and .start + .length > 2097152)
              | select(.data and (has("offset") | not))] | length > 0' \
        <<<"$output")" = true ]
    [ "$(jq '[.[] | select(.start < 4194304 and .start + .length > 2097152)
              | select(has("offset"))] | length' <<<"$output")" = 0 ]
    [ "$(jq '[.[] | select(.start < 10485760 and .start + .length > 8388608)
              | select(has("offset") | not)] | length' <<<"$output")" = 0 ]
}

@test "compressed writes: deflate, v3, 64k clusters" {
    run_scenario z64 compression_type=zlib,cluster_size=64k
}

@test "compressed writes: deflate, v3, 4k clusters" {
    run_scenario z4 compression_type=zlib,cluster_size=4k
}

@test "compressed writes: deflate, v3, 2M clusters" {
    run_scenario z2m compression_type=zlib,cluster_size=2M
}

@test "compressed writes: zstd, 64k clusters" {
    run_scenario s64 compression_type=zstd,cluster_size=64k
}

@test "compressed writes: zstd, 4k clusters" {
    run_scenario s4 compression_type=zstd,cluster_size=4k
}

@test "compressed writes: zstd, 2M clusters" {
    run_scenario s2m compression_type=zstd,cluster_size=2M
}

@test "compressed writes: v2 (compat=0.10), 64k and 4k clusters" {
    run_scenario v2a compat=0.10,cluster_size=64k
    run_scenario v2b compat=0.10,cluster_size=4k
}

@test "compressed writes: extended L2 entries (bitmap 0), deflate and zstd" {
    run_scenario x64 extended_l2=on,cluster_size=64k
    run_scenario x2m extended_l2=on,cluster_size=2M,compression_type=zstd
}

@test "compressed writes: 1-bit refcounts give each one its own cluster" {
    run_scenario r1 refcount_bits=1,cluster_size=64k
}

@test "compressed clusters are packed at byte granularity" {
    qemu-img create -q -f qcow2 p.qcow2 1M
    run vimg_io_t -f qcow2 -c 'write -c -P 0x11 0 1M' p.qcow2
    assert_success
    run qemu-img check --output=json p.qcow2
    assert_success
    # header, L1, refcount table, refcount block, L2 and ONE data
    # cluster holding all 16 compressed clusters.
    [ "$(jq '.["compressed-clusters"]' <<<"$output")" = 16 ]
    [ "$(jq '.["image-end-offset"] <= 6 * 65536' <<<"$output")" = true ]
    run qemu-io -f qcow2 -c 'read -q -P 0x11 0 1M' p.qcow2
    assert_output ""
}

@test "compressed write of the short last cluster" {
    qemu-img create -q -f qcow2 e.qcow2 100k
    run vimg_io_t -f qcow2 -c 'write -c -P 0x3c 64k 36k' e.qcow2
    assert_success
    assert_qemu_check_clean e.qcow2
    run qemu-img check --output=json e.qcow2
    [ "$(jq '.["compressed-clusters"]' <<<"$output")" = 1 ]
    run qemu-io -f qcow2 -c 'read -q -P 0 0 64k' -c 'read -q -P 0x3c 64k 36k' \
        e.qcow2
    assert_output ""
    # A partial cluster that is not the last one is refused.
    run vimg_io_t -f qcow2 -c 'write -c -P 1 0 36k' e.qcow2
    assert_failure 1
}

@test "compressed overwrite of snapshot-shared clusters keeps the snapshot" {
    qemu-img create -q -f qcow2 s.qcow2 4M
    qemu-io -f qcow2 -c 'write -P 7 0 4M' s.qcow2 >/dev/null
    qemu-img snapshot -c snap s.qcow2
    run vimg_io_t -f qcow2 -c 'write -c -P 0x21 0 2M' \
        -c 'write -c -P 0x22 0 1M' s.qcow2
    assert_success
    assert_qemu_check_clean s.qcow2
    run qemu-io -f qcow2 -c 'read -q -P 0x22 0 1M' -c 'read -q -P 0x21 1M 1M' \
        -c 'read -q -P 7 2M 2M' s.qcow2
    assert_output ""
    qemu-img snapshot -a snap s.qcow2
    assert_qemu_check_clean s.qcow2
    run qemu-io -f qcow2 -c 'read -q -P 7 0 4M' s.qcow2
    assert_output ""
}

@test "compressed writes are refused with an external data file" {
    qemu-img create -q -f qcow2 -o data_file=d.data d.qcow2 1M
    run vimg_io_t -f qcow2 -c 'write -c 0 64k' d.qcow2
    assert_failure 1
    [[ $output == *"Operation not supported"* ]]
    assert_qemu_check_clean d.qcow2
}

@test "vimg reads qemu's compressed clusters and qemu reads vimg's" {
    qemu-img create -q -f qcow2 q.qcow2 4M
    qemu-io -f qcow2 -c 'write -c -P 0x41 0 2M' q.qcow2 >/dev/null
    run vimg_io_t -f qcow2 -c 'write -c -P 0x42 2M 2M' \
        -c 'read -q -P 0x41 0 2M' q.qcow2
    assert_success
    assert_qemu_check_clean q.qcow2
    run qemu-io -f qcow2 -c 'read -q -P 0x41 0 2M' -c 'read -q -P 0x42 2M 2M' \
        q.qcow2
    assert_output ""
}
