#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg compare against qemu-img compare (7.2) as the oracle: the same
# exit status and the same stdout (Content mismatch at offset N!, the
# strict-mode and size-mismatch lines) on many pairs of images.

load ../helpers
load workload

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq python3
}

# assert_compare_equal [compare options...] A B
assert_compare_equal() {
    local q v qrc=0 vrc=0
    q=$(qemu-img compare "$@" 2>/dev/null) || qrc=$?
    v=$(timeout 20 "$VIMG" compare "$@" 2>/dev/null) || vrc=$?
    if [ "$q" != "$v" ] || [ "$qrc" != "$vrc" ]; then
        echo "compare $* differs: qemu-img rc=$qrc '$q'; vimg rc=$vrc '$v'" >&2
        return 1
    fi
    echo "compare $*: rc=$vrc $v"
}

@test "compare: identical copies in several formats" {
    mk_q_plain v3 $((64 * MiB)) 65536
    qemu-img convert -f qcow2 -O raw v3.qcow2 v3.raw
    qemu-img convert -f qcow2 -O qcow2 -o cluster_size=4k v3.qcow2 c4k.qcow2
    qemu-img convert -c -f qcow2 -O qcow2 v3.qcow2 comp.qcow2
    assert_compare_equal v3.qcow2 v3.raw
    assert_compare_equal -f qcow2 -F raw v3.qcow2 v3.raw
    assert_compare_equal -s v3.qcow2 c4k.qcow2
    assert_compare_equal -s v3.qcow2 v3.raw
    assert_compare_equal v3.raw comp.qcow2
    assert_compare_equal -q v3.qcow2 comp.qcow2
}

@test "compare: content mismatch offsets" {
    mk_q_plain v3 $((64 * MiB)) 65536
    local off
    for off in 0 1 511 512 70000 $((MiB + 123)) $((64 * MiB - 1)); do
        qemu-img convert -f qcow2 -O qcow2 v3.qcow2 m.qcow2
        qemu-io -c "write -P 0xee $off 1" m.qcow2 >/dev/null
        assert_compare_equal v3.qcow2 m.qcow2
        assert_compare_equal m.qcow2 v3.qcow2
        assert_compare_equal -q m.qcow2 v3.qcow2
    done
    # Data against unallocated, zero clusters against data, raw holes.
    qemu-img create -q -f qcow2 e.qcow2 64M
    assert_compare_equal e.qcow2 v3.qcow2
    assert_compare_equal v3.qcow2 e.qcow2
    qemu-img create -q -f raw e.raw 64M
    assert_compare_equal e.raw v3.qcow2
    assert_compare_equal -s e.raw e.qcow2
    qemu-img create -q -f qcow2 z.qcow2 64M
    qemu-io -c "write -P 0 0 1M" -c "write -z 2M 1M" z.qcow2 >/dev/null
    assert_compare_equal z.qcow2 e.qcow2
    assert_compare_equal -s z.qcow2 e.qcow2
    assert_compare_equal -s e.qcow2 z.qcow2
}

@test "compare: different sizes, tails, strict mode" {
    qemu-img create -q -f qcow2 a.qcow2 8M
    qemu-io -c "write -P 1 0 1M" a.qcow2 >/dev/null
    qemu-img create -q -f qcow2 b.qcow2 16M
    qemu-io -c "write -P 1 0 1M" b.qcow2 >/dev/null
    assert_compare_equal a.qcow2 b.qcow2
    assert_compare_equal b.qcow2 a.qcow2
    assert_compare_equal -s a.qcow2 b.qcow2
    qemu-io -c "write -z 9M 1M" b.qcow2 >/dev/null
    assert_compare_equal a.qcow2 b.qcow2
    qemu-io -c "write -P 0 10M 1M" -c "write -P 3 $((12 * MiB + 1000)) 1" \
        b.qcow2 >/dev/null
    assert_compare_equal a.qcow2 b.qcow2
    assert_compare_equal b.qcow2 a.qcow2
    qemu-img create -q -f raw r.raw 8M
    qemu-io -f raw -c "write -P 1 0 1M" r.raw >/dev/null
    assert_compare_equal -s a.qcow2 r.raw
    assert_compare_equal a.qcow2 r.raw
}

@test "compare: chains, short backing files, compressed" {
    mk_q_chain qcow2
    qemu-img convert -f qcow2 -O raw sub/top.qcow2 flat.raw
    assert_compare_equal sub/top.qcow2 flat.raw
    assert_compare_equal -s sub/top.qcow2 sub/base.qcow2
    assert_compare_equal sub/top.qcow2 sub/base.qcow2
    qemu-img create -q -f qcow2 short.qcow2 2M
    qemu-io -c "write -P 5 1M 1M" short.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b short.qcow2 -F qcow2 long.qcow2 8M
    qemu-img create -q -f qcow2 long2.qcow2 8M
    qemu-io -c "write -P 5 1M 1M" long2.qcow2 >/dev/null
    assert_compare_equal long.qcow2 long2.qcow2
    assert_compare_equal -s long.qcow2 long2.qcow2
    mk_q_compressed zstd
    qemu-img convert -f qcow2 -O raw "$IMG" comp.raw
    assert_compare_equal "$IMG" comp.raw
    qemu-io -f raw -c "write -P 9 $((8 * MiB + 4096)) 1" comp.raw >/dev/null
    assert_compare_equal "$IMG" comp.raw
}

@test "compare: open errors exit 2" {
    qemu-img create -q -f qcow2 a.qcow2 1M
    run_split "$VIMG" compare a.qcow2 missing.qcow2
    [ "$status" -eq 2 ]
    run qemu-img compare a.qcow2 missing.qcow2
    [ "$status" -eq 2 ]
    run_split "$VIMG" compare -f qcow2 -F qcow2 a.qcow2 /etc/hostname
    [ "$status" -eq 2 ]
}
