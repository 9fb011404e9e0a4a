#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg measure against qemu-img measure (7.2): the same numbers (and the
# same fields, "bitmaps" included or not) for empty images of many shapes
# and for sources made by QEMU with data, zeroes and holes.

load ../helpers
load workload

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq python3
}

# assert_measure_equal MEASURE-ARGS...: JSON and human output equal.
assert_measure_equal() {
    local q v o
    for o in json human; do
        q=$(qemu-img measure --output=$o "$@") || {
            echo "qemu-img measure $* failed" >&2
            return 1
        }
        v=$(timeout 20 "$VIMG" measure --output=$o "$@") || {
            echo "vimg measure $* failed" >&2
            return 1
        }
        if [ "$q" != "$v" ]; then
            echo "measure --output=$o $* differs (< qemu-img, > vimg):" >&2
            diff <(echo "$q") <(echo "$v") >&2
            return 1
        fi
    done
}

@test "measure: empty images of many shapes" {
    local cs rb s
    for s in 0 1 512 1000000 1G 100G; do
        assert_measure_equal --size $s
        assert_measure_equal -O qcow2 --size $s
    done
    for cs in 512 4k 64k 2M; do
        for rb in 1 8 16 64; do
            assert_measure_equal -O qcow2 -o cluster_size=$cs,refcount_bits=$rb \
                --size 10G
        done
    done
    for cs in 16k 64k 2M; do
        assert_measure_equal -O qcow2 -o cluster_size=$cs,extended_l2=on --size 3T
    done
    assert_measure_equal -O qcow2 -o cluster_size=2M --size 16T
    assert_measure_equal -O qcow2 -o compat=0.10 --size 5G
    for s in off metadata falloc full; do
        assert_measure_equal -O qcow2 -o preallocation=$s --size 1G
        assert_measure_equal -O raw -o preallocation=$s --size 1G
    done
    assert_measure_equal -O qcow2 -o cluster_size=4k -o refcount_bits=2 --size 7G
}

@test "measure: sources with data, zeroes and holes" {
    mk_q_plain v3 $((1024 * MiB)) 65536
    assert_measure_equal v3.qcow2
    assert_measure_equal -O qcow2 v3.qcow2
    assert_measure_equal -O qcow2 -o cluster_size=512 v3.qcow2
    assert_measure_equal -O qcow2 -o cluster_size=2M,extended_l2=on v3.qcow2
    assert_measure_equal -O qcow2 -o preallocation=full v3.qcow2
    assert_measure_equal -O qcow2 -o backing_file=x.qcow2,backing_fmt=qcow2 v3.qcow2
    assert_measure_equal -O qcow2 -o compat=0.10 v3.qcow2
    mk_q_raw
    assert_measure_equal -f raw -O qcow2 raw.img
    assert_measure_equal -f raw -O qcow2 -o cluster_size=4k raw.img
    assert_measure_equal -f raw raw.img
    mk_q_chain qcow2
    assert_measure_equal -O qcow2 "$IMG"
    mk_q_compressed zlib
    assert_measure_equal -O qcow2 "$IMG"
    mk_q_extl2 65536
    assert_measure_equal -O qcow2 -o cluster_size=4k "$IMG"
    mk_q_plain v2 $((64 * MiB)) 65536 compat=0.10
    assert_measure_equal -O qcow2 v2.qcow2
    qemu-img create -q -f qcow2 -o preallocation=metadata pm.qcow2 64M
    qemu-io -c "write -P 1 1M 1M" pm.qcow2 >/dev/null
    assert_measure_equal -O qcow2 pm.qcow2
}

@test "measure: persistent bitmaps of the source" {
    qemu-img create -q -f qcow2 b.qcow2 100M
    qemu-io -c "write -P 1 0 1M" b.qcow2 >/dev/null
    assert_measure_equal -O qcow2 b.qcow2
    qemu-img bitmap --add b.qcow2 bm0
    qemu-img bitmap --add -g 512 b.qcow2 a-much-longer-bitmap-name
    qemu-img bitmap --add -g 2M --disable b.qcow2 x
    assert_measure_equal -O qcow2 b.qcow2
    assert_measure_equal -O qcow2 -o cluster_size=4k b.qcow2
    assert_measure_equal -O qcow2 -o compat=0.10 b.qcow2
    assert_measure_equal -O raw b.qcow2
}
