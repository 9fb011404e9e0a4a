#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg map against qemu-img map (7.2) as the oracle: the JSON and the
# human output must be byte for byte the same on images QEMU made (the
# interop corpus of workload.bash and a few more shapes).

load ../helpers
load workload

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq python3
}

# assert_map_equal [map options...] IMG: JSON and human output equal.
assert_map_equal() {
    local q v qrc=0 vrc=0 out
    for out in json human; do
        q=$(qemu-img map --output=$out "$@" 2>&1) || qrc=$?
        v=$(timeout 20 "$VIMG" map --output=$out "$@" 2>&1) || vrc=$?
        # Error lines differ only in the program name.
        q=${q//qemu-img: /vimg: map: }
        if [ "$q" != "$v" ] || [ "$qrc" != "$vrc" ]; then
            echo "map --output=$out $* differs (< qemu-img rc=$qrc," \
                "> vimg rc=$vrc):" >&2
            diff <(echo "$q") <(echo "$v") | head -40 >&2
            return 1
        fi
    done
}

@test "map: raw written by qemu-io, with holes" {
    mk_q_raw
    assert_map_equal -f raw "$IMG"
    # A sparse raw file with an unaligned tail.
    truncate -s $((5 * MiB + 1000)) holes.raw
    printf 'x%.0s' {1..3000} | dd of=holes.raw bs=1 seek=$((2 * MiB)) conv=notrunc status=none
    printf 'y' | dd of=holes.raw bs=1 seek=$((5 * MiB + 999)) conv=notrunc status=none
    assert_map_equal -f raw holes.raw
    assert_map_equal holes.raw
}

@test "map: qcow2 v2 and v3 across L2 tables, 512-byte clusters" {
    mk_q_plain v2 $((1024 * MiB)) 65536 compat=0.10
    assert_map_equal "$IMG"
    mk_q_plain v3 $((1024 * MiB)) 65536
    assert_map_equal "$IMG"
    mk_q_plain c512 $((64 * MiB)) 512
    assert_map_equal "$IMG"
    mk_q_plain c2m $((64 * MiB)) $((2 * MiB))
    assert_map_equal "$IMG"
}

@test "map: --start-offset and --max-length" {
    mk_q_plain v3 $((64 * MiB)) 65536
    assert_map_equal --start-offset 1000 "$IMG"
    assert_map_equal -s 65537 -l 300000 "$IMG"
    assert_map_equal --max-length 1M "$IMG"
    assert_map_equal --start-offset 64M "$IMG"
    assert_map_equal --start-offset 100M "$IMG"
    assert_map_equal -s 63M -l 10G "$IMG"
    assert_map_equal -l 0 "$IMG"
}

@test "map: compressed clusters (zlib, zstd): no offset, human fails" {
    mk_q_compressed zlib
    assert_map_equal "$IMG"
    mk_q_compressed zstd
    assert_map_equal "$IMG"
}

@test "map: chains over raw and qcow2, relative paths, depth" {
    mk_q_chain qcow2
    assert_map_equal "$IMG"
    assert_map_equal --image-opts "driver=qcow2,file.filename=$IMG"
    rm -rf sub
    mk_q_chain raw
    assert_map_equal "$IMG"
    # Three layers, the middle one shorter than the top.
    qemu-img create -q -f qcow2 b0.qcow2 4M
    qemu-io -c "write -P 1 0 1M" -c "write -z 2M 64k" b0.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b b0.qcow2 -F qcow2 b1.qcow2 2M
    qemu-io -c "write -P 2 512k 64k" b1.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b b1.qcow2 -F qcow2 b2.qcow2 8M
    qemu-io -c "write -P 3 7M 4k" -c "write -z 64k 64k" b2.qcow2 >/dev/null
    assert_map_equal b2.qcow2
    assert_map_equal "$T/b2.qcow2"
}

@test "map: extended L2 with and without a backing file" {
    mk_q_extl2 65536
    assert_map_equal "$IMG"
    mk_q_extl2 $((128 * 1024))
    assert_map_equal "$IMG"
    mk_q_plain e64 $((16 * MiB)) 65536 extended_l2=on
    assert_map_equal "$IMG"
}

@test "map: external data file, raw and not raw" {
    mk_q_datafile on
    assert_map_equal "$IMG"
    mk_q_datafile off
    assert_map_equal "$IMG"
}

@test "map: snapshots, lazy refcounts (dirty), corrupt bit" {
    mk_q_snapshot
    assert_map_equal "$IMG"
    mk_q_lazy_dirty
    assert_map_equal -U "$IMG"
    mk_q_corrupt
    assert_map_equal "$IMG"
}

@test "map: preallocation modes and zero clusters" {
    local m
    for m in metadata falloc full; do
        qemu-img create -q -f qcow2 -o preallocation=$m p-$m.qcow2 3M
        qemu-io -c "write -P 7 64k 64k" -c "write -z 1M 128k" \
            -c "write -z -u 2M 64k" p-$m.qcow2 >/dev/null
        assert_map_equal p-$m.qcow2
    done
    qemu-img create -q -f raw -o preallocation=falloc p.raw 1M
    assert_map_equal -f raw p.raw
}

@test "map: a 16 TiB sparse qcow2 maps quickly" {
    qemu-img create -q -f qcow2 big.qcow2 16T
    qemu-io -c "write -P 1 0 64k" -c "write -P 2 8T 1M" \
        -c "write -z 12T 64k" -c "write -P 3 $((16 * 1024 * 1024 * MiB - 65536)) 64k" \
        big.qcow2 >/dev/null
    assert_map_equal big.qcow2
    local t0 t1
    t0=$(date +%s%N)
    "$VIMG" map --output=json big.qcow2 >/dev/null
    t1=$(date +%s%N)
    echo "map of 16 TiB took $(((t1 - t0) / 1000000)) ms" >&2
    if [[ $VIMG_BUILD != *asan* ]]; then
        [ $(((t1 - t0) / 1000000)) -lt 1000 ]
    fi
}

@test "map: fragmented qcow2 with holes punched in its file" {
    qemu-img create -q -f qcow2 -o cluster_size=4k frag.qcow2 1G
    local i
    for ((i = 0; i < 6000; i++)); do
        echo "write -P $((i % 200 + 1)) $((i * 40960)) 4k"
    done | qemu-io frag.qcow2 >/dev/null
    for ((i = 0; i < 6000; i += 2)); do
        echo "discard $((i * 40960)) 4k"
    done | qemu-io frag.qcow2 >/dev/null
    assert_map_equal frag.qcow2
    local t0 t1
    t0=$(date +%s%N)
    "$VIMG" map --output=json frag.qcow2 >/dev/null
    t1=$(date +%s%N)
    echo "map took $(((t1 - t0) / 1000000)) ms" >&2
    if [[ $VIMG_BUILD != *asan* ]]; then
        [ $(((t1 - t0) / 1000000)) -lt 1000 ]
    fi
}
