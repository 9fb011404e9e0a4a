#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg convert against qemu-img as the oracle: every qemu-made image of
# the corpus converts to the same raw bytes as `qemu-img convert` gives,
# every qcow2 vimg writes passes `qemu-img check` and `qemu-img compare`
# with its source, the raw output is as sparse as qemu-img's, -B writes
# only what differs, -n --target-is-zero, and concatenation.

load ../helpers
load workload

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq python3
}

# Allocated bytes of a raw file according to qemu-img map.
raw_data_bytes() {
    qemu-img map -f raw --output=json "$1" |
        jq '[.[] | select(.data) | .length] | add // 0'
}

# The source must not change: remember and check its bytes.
remember() { sha256sum "$@" >"$T/.sums"; }
unchanged() { sha256sum -c --quiet "$T/.sums"; }

# convert_like_qemu IMG [FMT]: raw output equals qemu-img's, as sparse
# as qemu-img's; qcow2 output checks clean and compares equal.
convert_like_qemu() {
    local img=$1 fmt=${2:-qcow2} files
    files=$(ls ./*.qcow2 ./*.raw ./*.img ./*.data sub/* 2>/dev/null || true)
    remember $files
    qemu-img convert -f "$fmt" -O raw "$img" q.out
    run vimg_t convert -f "$fmt" -O raw "$img" v.out
    assert_success
    cmp q.out v.out
    local qd vd
    qd=$(raw_data_bytes q.out)
    vd=$(raw_data_bytes v.out)
    if ((vd > qd)); then
        echo "vimg's raw output holds $vd data bytes, qemu-img's $qd" >&2
        return 1
    fi
    run vimg_t convert -f "$fmt" -O qcow2 "$img" v.qcow2out
    assert_success
    assert_qemu_check_clean v.qcow2out
    run qemu-img compare -f "$fmt" -F qcow2 "$img" v.qcow2out
    assert_success
    unchanged
    rm -f q.out v.out v.qcow2out
}

@test "raw source (qemu-io workload)" {
    mk_q_raw
    convert_like_qemu raw.img raw
}

@test "qcow2 v2, 64k clusters, across an L2 table" {
    mk_q_plain v2 $((1024 * MiB)) 65536 compat=0.10
    convert_like_qemu v2.qcow2
}

@test "qcow2 v3, 64k clusters" {
    mk_q_plain v3 $((1024 * MiB)) 65536
    convert_like_qemu v3.qcow2
}

@test "qcow2 512-byte clusters (v3 and v2)" {
    mk_q_plain c512 $((64 * MiB)) 512
    convert_like_qemu c512.qcow2
    mk_q_plain c512v2 $((64 * MiB)) 512 compat=0.10
    convert_like_qemu c512v2.qcow2
}

@test "qcow2 4k clusters" {
    mk_q_plain c4k $((64 * MiB)) 4096
    convert_like_qemu c4k.qcow2
}

@test "qcow2 2M clusters" {
    mk_q_plain c2m $((64 * MiB)) $((2 * MiB))
    convert_like_qemu c2m.qcow2
}

@test "qcow2 v3 zero clusters" {
    qemu-img create -q -f qcow2 zero.qcow2 16M
    qemu-io -f qcow2 -c "write -P 0x31 0 4M" zero.qcow2 >/dev/null
    qemu-io -f qcow2 -c "write -z 64k 128k" -c "write -z -u 1M 1M" \
        -c "write -z $((3 * MiB + 100)) 1000" zero.qcow2 >/dev/null
    convert_like_qemu zero.qcow2
}

@test "compressed clusters, zlib and zstd" {
    mk_q_compressed zlib
    convert_like_qemu comp-zlib.qcow2
    mk_q_compressed zstd
    convert_like_qemu comp-zstd.qcow2
}

@test "extended L2 overlay over a qcow2 base" {
    mk_q_extl2 65536
    convert_like_qemu extl2-65536.qcow2
}

@test "backing chains: qcow2 over raw and over qcow2" {
    mk_q_chain raw
    convert_like_qemu sub/top.qcow2
    rm -rf sub
    mk_q_chain qcow2
    convert_like_qemu sub/top.qcow2
}

@test "external data file, data_file_raw off and on" {
    mk_q_datafile off
    convert_like_qemu df-off.qcow2
    mk_q_datafile on
    convert_like_qemu df-on.qcow2
}

@test "internal snapshot: the current state is converted" {
    mk_q_snapshot
    convert_like_qemu snap.qcow2
}

@test "raw -> qcow2 with cluster sizes and v2: check and compare" {
    mk_q_raw
    local o
    for o in cluster_size=512 cluster_size=4k cluster_size=2M compat=0.10 \
        extended_l2=on lazy_refcounts=on refcount_bits=1; do
        run vimg_t convert -f raw -O qcow2 -o "$o" raw.img o.qcow2
        assert_success
        assert_qemu_check_clean o.qcow2
        run qemu-img compare -f raw -F qcow2 raw.img o.qcow2
        assert_success
        rm o.qcow2
    done
}

@test "-c: compressed output checks clean and compares equal" {
    mk_q_raw
    run vimg_t convert -c -f raw -O qcow2 raw.img c.qcow2
    assert_success
    assert_qemu_check_clean c.qcow2
    run qemu-img check --output=json c.qcow2
    [ "$(jq '.["compressed-clusters"] // 0' <<<"$output")" -gt 0 ]
    run qemu-img compare -f raw -F qcow2 raw.img c.qcow2
    assert_success
    run vimg_t convert -c -W -m 2 -f raw -O qcow2 -o compression_type=zstd \
        raw.img z.qcow2
    assert_success
    assert_qemu_check_clean z.qcow2
    run qemu-img compare -f raw -F qcow2 raw.img z.qcow2
    assert_success
}

@test "-S: the raw target is sparse where the source holds zeroes" {
    qemu-img create -q -f raw src.raw 16M
    # Data with explicit zero runs: 1 MiB of written zeroes, 8k of zeroes
    # inside data, 2k of zeroes (below -S 4k).
    qemu-io -f raw -c "write -P 0x11 0 4M" -c "write -P 0 1M 1M" \
        -c "write -P 0 $((3 * MiB)) 8k" -c "write -P 0 $((3 * MiB + 65536)) 2k" \
        src.raw >/dev/null
    qemu-img convert -f raw -O raw src.raw q.raw
    run vimg_t convert -f raw -O raw src.raw v.raw
    assert_success
    cmp q.raw v.raw
    [ "$(raw_data_bytes v.raw)" -le "$(raw_data_bytes q.raw)" ]
    [ "$(raw_data_bytes v.raw)" -le $((3 * MiB)) ]
    # -S 0 allocates everything, like qemu-img.
    run vimg_t convert -S 0 -f raw -O raw src.raw full.raw
    assert_success
    cmp q.raw full.raw
    [ $(($(stat -c %b full.raw) * 512)) -ge $((16 * MiB)) ]
}

@test "-B: only the clusters that differ from the backing file are written" {
    qemu-img create -q -f qcow2 base.qcow2 16M
    qemu-io -f qcow2 -c "write -P 0x11 0 8M" -c "write -P 0x22 12M 1M" \
        base.qcow2 >/dev/null
    qemu-img convert -f qcow2 -O qcow2 base.qcow2 src.qcow2
    # src = base + a changed cluster + zeroes over base data + new data.
    qemu-io -f qcow2 -c "write -P 0x33 2M 64k" -c "write -z 4M 128k" \
        -c "write -P 0x44 14M 64k" src.qcow2 >/dev/null
    remember base.qcow2 src.qcow2
    run vimg_t convert -f qcow2 -O qcow2 -B base.qcow2 -F qcow2 src.qcow2 t.qcow2
    assert_success
    assert_qemu_check_clean t.qcow2
    run qemu-img compare -f qcow2 -F qcow2 src.qcow2 t.qcow2
    assert_success
    assert_qemu_info t.qcow2 '.["backing-filename"] == "base.qcow2"'
    # The top layer holds exactly 2M+64k, 4M+128k (zero) and 14M+64k.
    run qemu-img map --output=json t.qcow2
    assert_success
    local top
    top=$(jq -c '[.[] | select(.depth == 0 and .present) | [.start, .length]]' <<<"$output")
    assert_equal "$top" "[[$((2 * MiB)),65536],[$((4 * MiB)),131072],[$((14 * MiB)),65536]]"
    unchanged
}

@test "-n --target-is-zero skips zero ranges; -n alone zeroes them" {
    mk_q_plain s $((16 * MiB)) 65536
    qemu-img convert -f qcow2 -O raw s.qcow2 want.raw
    qemu-img create -q -f raw t.raw 16M
    run vimg_t convert -n --target-is-zero -f qcow2 -O raw s.qcow2 t.raw
    assert_success
    cmp want.raw t.raw
    [ "$(raw_data_bytes t.raw)" -le "$(raw_data_bytes want.raw)" ]
    # A target full of 0x77: -n writes zeroes over it where s reads zero.
    qemu-io -f raw -c "write -P 0x77 0 16M" t.raw >/dev/null
    run vimg_t convert -n -f qcow2 -O raw s.qcow2 t.raw
    assert_success
    cmp want.raw t.raw
    # An existing qcow2 target (-n -O qcow2).
    qemu-img create -q -f qcow2 t.qcow2 16M
    qemu-io -f qcow2 -c "write -P 0x77 0 16M" t.qcow2 >/dev/null
    run vimg_t convert -n -f qcow2 -O qcow2 s.qcow2 t.qcow2
    assert_success
    assert_qemu_check_clean t.qcow2
    run qemu-img compare -f qcow2 -F qcow2 s.qcow2 t.qcow2
    assert_success
}

@test "two sources are concatenated like qemu-img does" {
    mk_q_plain a $((16 * MiB)) 65536
    qemu-img create -q -f raw b.raw $((3 * MiB + 512))
    qemu-io -f raw -c "write -P 0x5a 1000 2M" b.raw >/dev/null
    qemu-img convert -O raw a.qcow2 b.raw a.qcow2 q.raw
    run vimg_t convert -O raw a.qcow2 b.raw a.qcow2 v.raw
    assert_success
    cmp q.raw v.raw
    run vimg_t convert -O qcow2 a.qcow2 b.raw v.qcow2
    assert_success
    assert_qemu_check_clean v.qcow2
    qemu-img convert -O raw a.qcow2 b.raw q2.raw
    run qemu-img compare -f raw -F qcow2 q2.raw v.qcow2
    assert_success
}

@test "a chain converts to a flat qcow2 that qemu-img reads back" {
    mk_q_chain qcow2
    run vimg_t convert -m 3 -W -O qcow2 sub/top.qcow2 flat.qcow2
    assert_success
    assert_qemu_check_clean flat.qcow2
    assert_qemu_info flat.qcow2 '.["backing-filename"] == null'
    verify_ops "qemu-io -f qcow2" flat.qcow2 base.ops top.ops
}
