#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# `vimg info --output=json` equals `qemu-img info --output=json` on every
# key but actual-size, for QEMU's images of every feature, raw, images
# vimg created, and --backing-chain arrays; human output matches
# qemu-img's line for line (minus "disk size:") in simple cases.

load ../helpers
load workload

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq python3
}

# --- images made by QEMU ----------------------------------------------

@test "json: raw" {
    mk_q_raw
    assert_info_json_equal raw.img
    assert_info_json_equal -f raw raw.img
}

@test "json: raw files whose size is not a multiple of 512" {
    truncate -s 1000000 odd.img
    assert_info_json_equal odd.img
    assert_info_json_equal -f raw odd.img
    qemu-img create -q -f qcow2 q.qcow2 1M
    assert_info_json_equal -f raw q.qcow2
}

@test "json: qcow2 v2 and v3" {
    mk_q_plain v2 $((64 * MiB)) 65536 compat=0.10
    assert_info_json_equal v2.qcow2
    mk_q_plain v3 $((64 * MiB)) 65536 compat=1.1
    assert_info_json_equal v3.qcow2
    assert_info_json_equal -f qcow2 v3.qcow2
}

@test "json: qcow2 cluster sizes 512, 4k, 2M" {
    local cs
    for cs in 512 4096 $((2 * MiB)); do
        qemu-img create -q -f qcow2 -o cluster_size=$cs "c$cs.qcow2" 1G
        assert_info_json_equal "c$cs.qcow2"
    done
}

@test "json: qcow2 refcount_bits 1..64" {
    local rb
    for rb in 1 2 4 8 16 32 64; do
        qemu-img create -q -f qcow2 -o refcount_bits=$rb "rb$rb.qcow2" 64M
        assert_info_json_equal "rb$rb.qcow2"
    done
}

@test "json: qcow2 lazy_refcounts=on, clean and dirty after a crash" {
    qemu-img create -q -f qcow2 -o lazy_refcounts=on clean.qcow2 64M
    assert_info_json_equal clean.qcow2
    mk_q_lazy_dirty
    assert_info_json_equal lazy.qcow2
}

@test "json: qcow2 corrupt bit" {
    mk_q_corrupt
    assert_info_json_equal corrupt.qcow2
}

@test "json: qcow2 compressed, zlib and zstd" {
    mk_q_compressed zlib
    assert_info_json_equal comp-zlib.qcow2
    mk_q_compressed zstd
    assert_info_json_equal comp-zstd.qcow2
}

@test "json: qcow2 extended_l2 over a backing file" {
    mk_q_extl2 65536
    assert_info_json_equal extl2-65536.qcow2
}

@test "json: backing files, raw and qcow2, relative names in sub/" {
    mk_q_chain raw
    assert_info_json_equal sub/top.qcow2
    rm -rf sub
    mk_q_chain qcow2
    assert_info_json_equal sub/top.qcow2
    cd sub
    assert_info_json_equal top.qcow2
}

@test "json: external data file, data_file_raw off and on" {
    mk_q_datafile off
    assert_info_json_equal df-off.qcow2
    mk_q_datafile on
    assert_info_json_equal df-on.qcow2
}

@test "json: internal snapshots" {
    mk_q_snapshot
    qemu-img snapshot -c s2 snap.qcow2
    assert_info_json_equal snap.qcow2
}

@test "json: -U on an image in use by qemu-io" {
    qemu-img create -q -f qcow2 busy.qcow2 64M
    hold_image -f qcow2 busy.qcow2
    run qemu-img info busy.qcow2
    assert_failure
    assert_info_json_equal -U busy.qcow2
}

@test "json: --image-opts" {
    qemu-img create -q -f qcow2 io.qcow2 64M
    assert_info_json_equal --image-opts driver=qcow2,file.driver=file,file.filename=io.qcow2
}

# --- images made by vimg ----------------------------------------------

@test "json: images vimg created" {
    local o
    local -a opts=(
        compat=0.10 compat=1.1 cluster_size=512 cluster_size=2M
        refcount_bits=1 refcount_bits=64 lazy_refcounts=on extended_l2=on
        compression_type=zstd preallocation=metadata preallocation=falloc
        data_file=vd.data data_file=vdr.data,data_file_raw=on
    )
    local i=0
    for o in "${opts[@]}"; do
        run vimg_t create -q -f qcow2 -o "$o" "v$i.qcow2" 32M
        assert_success
        assert_info_json_equal "v$i.qcow2"
        i=$((i + 1))
    done
    run vimg_t create -q -f raw vraw.img 32M
    assert_success
    assert_info_json_equal vraw.img
}

@test "json: a vimg image after vimg-io writes" {
    run vimg_t create -q -f qcow2 w.qcow2 64M
    assert_success
    gen_workload 65536 $((64 * MiB)) $((512 * MiB)) >w.ops
    run_ops "$VIMG_IO -f qcow2" w.ops w.qcow2
    assert_info_json_equal w.qcow2
}

# --- --backing-chain --------------------------------------------------

@test "json --backing-chain: 2 deep (qcow2 over raw, QEMU-made)" {
    mk_q_chain raw
    assert_info_json_equal --backing-chain sub/top.qcow2
    run vimg_t info --output=json --backing-chain sub/top.qcow2
    assert_success
    assert_equal "$(jq -r 'length' <<<"$output")" 2
    assert_equal "$(jq -r '.[0].filename' <<<"$output")" sub/top.qcow2
    assert_equal "$(jq -r '.[1].filename' <<<"$output")" sub/base.raw
}

@test "json --backing-chain: 3 deep (qcow2 <- qcow2 <- raw), QEMU-made" {
    mkdir sub
    qemu-img create -q -f raw sub/base.raw 16M
    qemu-img create -q -f qcow2 -b base.raw -F raw sub/mid.qcow2
    qemu-img create -q -f qcow2 -o extended_l2=on -b mid.qcow2 -F qcow2 sub/top.qcow2
    assert_info_json_equal --backing-chain sub/top.qcow2
    run vimg_t info --output=json --backing-chain sub/top.qcow2
    assert_success
    assert_equal "$(jq -r 'map(.filename) | join(" ")' <<<"$output")" \
        "sub/top.qcow2 sub/mid.qcow2 sub/base.raw"
}

@test "json --backing-chain: 3 deep, vimg-made, over a folder boundary" {
    mkdir -p a/b
    run vimg_t create -q -f qcow2 a/b/base.qcow2 16M
    assert_success
    run vimg_t create -q -f qcow2 -b b/base.qcow2 -F qcow2 a/mid.qcow2
    assert_success
    run vimg_t create -q -f qcow2 -b a/mid.qcow2 -F qcow2 top.qcow2
    assert_success
    assert_info_json_equal --backing-chain top.qcow2
    assert_info_json_equal top.qcow2
    assert_info_json_equal a/mid.qcow2
}

@test "json --backing-chain: single image is a one-element array" {
    qemu-img create -q -f qcow2 one.qcow2 16M
    assert_info_json_equal --backing-chain one.qcow2
    run vimg_t info --output=json --backing-chain one.qcow2
    assert_success
    assert_equal "$(jq -r 'type' <<<"$output")" array
}

# --- human output -----------------------------------------------------

@test "human: raw, qcow2 v3 and v2" {
    qemu-img create -q -f raw r.img 10M
    assert_info_human_equal r.img
    qemu-img create -q -f qcow2 v3.qcow2 1G
    assert_info_human_equal v3.qcow2
    qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4k v2.qcow2 100M
    assert_info_human_equal v2.qcow2
}

@test "human: uneven sizes" {
    qemu-img create -q -f raw r.img 1000000
    assert_info_human_equal r.img
    qemu-img create -q -f qcow2 q.qcow2 1536M
    assert_info_human_equal q.qcow2
    qemu-img create -q -f qcow2 t.qcow2 3T
    assert_info_human_equal t.qcow2
}

@test "human: qcow2 lazy, extended_l2, zstd, refcount_bits" {
    qemu-img create -q -f qcow2 -o lazy_refcounts=on,extended_l2=on,compression_type=zstd,refcount_bits=8 f.qcow2 64M
    assert_info_human_equal f.qcow2
}

@test "human: backing file and --backing-chain" {
    mk_q_chain raw
    assert_info_human_equal sub/top.qcow2
    assert_info_human_equal --backing-chain sub/top.qcow2
}

@test "human: external data file" {
    qemu-img create -q -f qcow2 -o data_file=d.data,data_file_raw=on d.qcow2 64M
    assert_info_human_equal d.qcow2
}

@test "human: dirty and corrupt images" {
    mk_q_lazy_dirty
    assert_info_human_equal lazy.qcow2
    mk_q_corrupt
    assert_info_human_equal corrupt.qcow2
}
