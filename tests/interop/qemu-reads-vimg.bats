#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# Images made by `vimg create` and written by `vimg-io` must pass
# `qemu-img check` (no errors, no leaks) and read back, through qemu-io,
# exactly what was written.  QEMU is the oracle; the expected content
# comes from the shadow model in workload.bash / shadow.py.

load ../helpers
load workload

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq python3
}

# vimg_roundtrip NAME SIZE CS [create -o options]
# vimg create + standard workload through vimg-io (three opens), then
# qemu-img check and qemu-io read-back.
vimg_roundtrip() {
    local name=$1 size=$2 cs=$3 opts=${4:-} ext=
    [[ $opts == *extended_l2=on* ]] && ext=extl2
    run vimg_t create -q -f qcow2 -o "cluster_size=$cs${opts:+,$opts}" \
        "$name.qcow2" "$size"
    assert_success
    assert_qemu_info "$name.qcow2" ".[\"cluster-size\"] == $cs and .[\"virtual-size\"] == $size"
    gen_workload "$cs" "$size" "$(l2cov "$cs" $ext)" >"$name.ops"
    run_ops "$VIMG_IO -f qcow2" "$name.ops" "$name.qcow2"
    assert_qemu_check_clean "$name.qcow2"
    verify_ops "qemu-io -f qcow2" "$name.qcow2" "$name.ops"
}

@test "raw: vimg-io writes, qemu-io reads" {
    run vimg_t create -q -f raw raw.img 64M
    assert_success
    gen_workload 65536 $((64 * MiB)) $((1 << 40)) >raw.ops
    run_ops "$VIMG_IO -f raw" raw.ops raw.img
    assert_equal "$(stat -c %s raw.img)" $((64 * MiB))
    verify_ops "qemu-io -f raw" raw.img raw.ops
}

@test "qcow2 v2 (compat=0.10), 64k clusters, across an L2 table" {
    vimg_roundtrip v2 $((1024 * MiB)) 65536 compat=0.10
    assert_qemu_info v2.qcow2 '.["format-specific"].data.compat == "0.10"'
}

@test "qcow2 v3, 64k clusters, across an L2 table" {
    vimg_roundtrip v3 $((1024 * MiB)) 65536 compat=1.1
    assert_qemu_info v3.qcow2 '.["format-specific"].data.compat == "1.1"'
}

@test "qcow2 v3, default options" {
    run vimg_t create -q -f qcow2 def.qcow2 64M
    assert_success
    assert_qemu_info def.qcow2 '.["cluster-size"] == 65536 and .["format-specific"].data.compat == "1.1" and .["format-specific"].data["refcount-bits"] == 16'
    gen_workload 65536 $((64 * MiB)) $((512 * MiB)) >def.ops
    run_ops "$VIMG_IO" def.ops def.qcow2
    assert_qemu_check_clean def.qcow2
    verify_ops "qemu-io -f qcow2" def.qcow2 def.ops
}

@test "qcow2 v3, 512-byte clusters (many L2 tables)" {
    vimg_roundtrip c512 $((64 * MiB)) 512
}

@test "qcow2 v2, 512-byte clusters" {
    vimg_roundtrip c512v2 $((64 * MiB)) 512 compat=0.10
}

@test "qcow2 v3, 4k clusters" {
    vimg_roundtrip c4k $((64 * MiB)) 4096
}

@test "qcow2 v3, 2M clusters, across an L2 table at 512 GiB" {
    vimg_roundtrip c2m $(($(l2cov $((2 * MiB))) + 64 * MiB)) $((2 * MiB))
}

@test "qcow2 refcount_bits=1" {
    vimg_roundtrip rb1 $((64 * MiB)) 4096 refcount_bits=1
    assert_qemu_info rb1.qcow2 '.["format-specific"].data["refcount-bits"] == 1'
}

@test "qcow2 refcount_bits=8" {
    vimg_roundtrip rb8 $((64 * MiB)) 4096 refcount_bits=8
    assert_qemu_info rb8.qcow2 '.["format-specific"].data["refcount-bits"] == 8'
}

@test "qcow2 refcount_bits=16" {
    vimg_roundtrip rb16 $((64 * MiB)) 4096 refcount_bits=16
    assert_qemu_info rb16.qcow2 '.["format-specific"].data["refcount-bits"] == 16'
}

@test "qcow2 refcount_bits=64" {
    vimg_roundtrip rb64 $((64 * MiB)) 4096 refcount_bits=64
    assert_qemu_info rb64.qcow2 '.["format-specific"].data["refcount-bits"] == 64'
}

@test "qcow2 refcount table growth: 512-byte clusters, refcount_bits=64, scattered writes" {
    # One refcount block maps 64 clusters (32 KiB); one refcount-table
    # cluster maps 2 MiB of host file.  ~3.6 MiB of data plus one L2
    # table per write must grow the refcount table.
    run vimg_t create -q -f qcow2 -o cluster_size=512,refcount_bits=64 grow.qcow2 1G
    assert_success
    gen_scatter $((1024 * MiB)) 120 30000 >grow.ops
    run_ops "$VIMG_IO -f qcow2" grow.ops grow.qcow2
    assert_qemu_check_clean grow.qcow2
    verify_ops "qemu-io -f qcow2" grow.qcow2 grow.ops
}

@test "qcow2 refcount table growth: 512-byte clusters, refcount_bits=16, 4 GiB" {
    run vimg_t create -q -f qcow2 -o cluster_size=512 grow16.qcow2 4G
    assert_success
    gen_scatter $((4096 * MiB)) 300 32000 >grow16.ops
    run_ops "$VIMG_IO -f qcow2" grow16.ops grow16.qcow2
    assert_qemu_check_clean grow16.qcow2
    verify_ops "qemu-io -f qcow2" grow16.qcow2 grow16.ops
}

@test "qcow2 refcount table growth by vimg-io on a qemu-img-created image" {
    # The same growth, independent of vimg create.
    qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=64 qgrow.qcow2 1G
    gen_scatter $((1024 * MiB)) 120 30000 >qgrow.ops
    run_ops "$VIMG_IO -f qcow2" qgrow.ops qgrow.qcow2
    assert_qemu_check_clean qgrow.qcow2
    verify_ops "qemu-io -f qcow2" qgrow.qcow2 qgrow.ops
}

@test "qcow2 lazy_refcounts=on: clean after close" {
    vimg_roundtrip lazy $((64 * MiB)) 65536 lazy_refcounts=on
    assert_qemu_info lazy.qcow2 '.["format-specific"].data["lazy-refcounts"] == true and .["dirty-flag"] == false'
}

@test "qcow2 extended_l2=on, 64k clusters, across an L2 table" {
    vimg_roundtrip ext $((1024 * MiB)) 65536 extended_l2=on
    assert_qemu_info ext.qcow2 '.["format-specific"].data["extended-l2"] == true'
}

@test "qcow2 extended_l2=on, 32k clusters (1k subclusters)" {
    vimg_roundtrip ext32 $((64 * MiB)) 32768 extended_l2=on
}

@test "qcow2 compression_type=zstd" {
    vimg_roundtrip zstd $((64 * MiB)) 65536 compression_type=zstd
    assert_qemu_info zstd.qcow2 '.["format-specific"].data["compression-type"] == "zstd"'
}

@test "qcow2 preallocation=metadata" {
    vimg_roundtrip pm $((32 * MiB)) 65536 preallocation=metadata
}

@test "qcow2 preallocation=falloc" {
    vimg_roundtrip pf $((32 * MiB)) 65536 preallocation=falloc
    [ "$(stat -c %s pf.qcow2)" -ge $((32 * MiB)) ]
}

@test "qcow2 preallocation=full" {
    vimg_roundtrip pfull $((32 * MiB)) 65536 preallocation=full
    [ "$(stat -c %s pfull.qcow2)" -ge $((32 * MiB)) ]
    [ $(($(stat -c %b pfull.qcow2) * $(stat -c %B pfull.qcow2))) -ge $((32 * MiB)) ]
}

@test "raw preallocation=full" {
    run vimg_t create -q -f raw -o preallocation=full rawfull.img 8M
    assert_success
    assert_equal "$(stat -c %s rawfull.img)" $((8 * MiB))
    [ $(($(stat -c %b rawfull.img) * $(stat -c %B rawfull.img))) -ge $((8 * MiB)) ]
    run qemu-io -r -f raw -c "read -P 0 0 8M" rawfull.img
    assert_success
    refute_output --partial "Pattern verification failed"
}

# chain_roundtrip BASEFMT [top -o options]: sub/top.qcow2 over sub/base.*,
# relative backing name, every layer written by vimg-io.
chain_roundtrip() {
    local bf=$1 opts=${2:-} base
    base=base.$bf
    mkdir sub
    run vimg_t create -q -f "$bf" "sub/$base" 16M
    assert_success
    gen_base $((16 * MiB)) >base.ops
    run_ops "$VIMG_IO -f $bf" base.ops "sub/$base"
    run vimg_t create -q -f qcow2 ${opts:+-o "$opts"} -b "$base" -F "$bf" sub/top.qcow2
    assert_success
    assert_qemu_info sub/top.qcow2 ".[\"virtual-size\"] == $((16 * MiB)) and .[\"backing-filename\"] == \"$base\" and .[\"backing-filename-format\"] == \"$bf\" and .[\"full-backing-filename\"] == \"sub/$base\""
    gen_workload 65536 $((16 * MiB)) $((1 << 40)) nobg >top.ops
    run_ops "$VIMG_IO -f qcow2" top.ops sub/top.qcow2
    assert_qemu_check_clean sub/top.qcow2
    [ "$bf" = raw ] || assert_qemu_check_clean "sub/$base"
    # The top shows the base through everything it did not write.
    verify_ops "qemu-io -f qcow2" sub/top.qcow2 base.ops top.ops
    # The base is untouched by writes to the top.
    verify_ops "qemu-io -f $bf" "sub/$base" base.ops
}

@test "chain: qcow2 over raw base, relative name in a subfolder" {
    chain_roundtrip raw
}

@test "chain: qcow2 over qcow2 base, relative name in a subfolder" {
    chain_roundtrip qcow2
}

@test "chain: qcow2 v2 overlay over qcow2 base" {
    chain_roundtrip qcow2 compat=0.10
}

@test "chain: extended_l2 overlay over qcow2 base (subcluster COW)" {
    chain_roundtrip qcow2 extended_l2=on
}

@test "chain: 512-byte-cluster overlay over raw base" {
    chain_roundtrip raw cluster_size=512
}

@test "chain: three levels raw <- qcow2 <- qcow2, data from every level" {
    mkdir sub
    run vimg_t create -q -f raw sub/base.raw 16M
    assert_success
    gen_base $((16 * MiB)) >base.ops
    run_ops "$VIMG_IO -f raw" base.ops sub/base.raw
    run vimg_t create -q -f qcow2 -b base.raw -F raw sub/mid.qcow2
    assert_success
    cat >mid.ops <<EOF
w 0xc1 $((MiB - 1000)) 70000
z $((2 * MiB)) 4096
w 0xc2 $((5 * MiB + 3)) 200000
EOF
    run_ops "$VIMG_IO -f qcow2" mid.ops sub/mid.qcow2
    run vimg_t create -q -f qcow2 -b mid.qcow2 -F qcow2 sub/top.qcow2
    assert_success
    cat >top3.ops <<EOF
w 0xd1 $((MiB + 500)) 1000
w 0xd2 $((2 * MiB - 10)) 20
w 0xd3 $((5 * MiB + 100000)) 65536
z $((16 * MiB - 4096)) 4096
EOF
    run_ops "$VIMG_IO -f qcow2" top3.ops sub/top.qcow2
    assert_qemu_check_clean sub/mid.qcow2
    assert_qemu_check_clean sub/top.qcow2
    verify_ops "qemu-io -f qcow2" sub/top.qcow2 base.ops mid.ops top3.ops
    verify_ops "qemu-io -f qcow2" sub/mid.qcow2 base.ops mid.ops
    verify_ops "qemu-io -f raw" sub/base.raw base.ops
}

@test "chain: -u with a size, then the backing file appears" {
    run vimg_t create -q -f qcow2 -u -b later.qcow2 -F qcow2 top.qcow2 16M
    assert_success
    qemu-img create -q -f qcow2 later.qcow2 16M
    gen_base $((16 * MiB)) >base.ops
    run_ops "qemu-io -f qcow2" base.ops later.qcow2
    gen_workload 65536 $((16 * MiB)) $((1 << 40)) nobg >top.ops
    run_ops "$VIMG_IO -f qcow2" top.ops top.qcow2
    assert_qemu_check_clean top.qcow2
    verify_ops "qemu-io -f qcow2" top.qcow2 base.ops top.ops
}

@test "external data file (data_file)" {
    run vimg_t create -q -f qcow2 -o data_file=ext.data ext.qcow2 16M
    assert_success
    [ -f ext.data ]
    assert_qemu_info ext.qcow2 '.["format-specific"].data["data-file"] == "ext.data"'
    gen_workload 65536 $((16 * MiB)) $((1 << 40)) >ext.ops
    run_ops "$VIMG_IO -f qcow2" ext.ops ext.qcow2
    assert_qemu_check_clean ext.qcow2
    verify_ops "qemu-io -f qcow2" ext.qcow2 ext.ops
}

@test "external data file with data_file_raw=on: the data file is a raw image" {
    run vimg_t create -q -f qcow2 -o data_file=extr.data,data_file_raw=on extr.qcow2 16M
    assert_success
    assert_qemu_info extr.qcow2 '.["format-specific"].data["data-file"] == "extr.data" and .["format-specific"].data["data-file-raw"] == true'
    gen_workload 65536 $((16 * MiB)) $((1 << 40)) >extr.ops
    run_ops "$VIMG_IO -f qcow2" extr.ops extr.qcow2
    assert_qemu_check_clean extr.qcow2
    verify_ops "qemu-io -f qcow2" extr.qcow2 extr.ops
    verify_ops "qemu-io -f raw" extr.data extr.ops
}
