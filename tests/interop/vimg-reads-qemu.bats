#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# Images made by qemu-img 7.2 and written by qemu-io, one per qcow2
# feature, read back through vimg-io with read -P.  Where vimg-io then
# writes to them, qemu-img check and qemu-io are the judges.

load ../helpers
load workload

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq python3
}

# A second workload, for vimg-io to write over QEMU's data.
# gen_pass2 CS SIZE
gen_pass2() {
    local cs=$1 size=$2
    echo "w 0xe1 $((cs / 2)) $cs"
    echo "z $((2 * cs + 7)) 300"
    echo "w 0xe2 $((5 * cs - 3)) 6"
    echo "--"
    if ((size >= 4 * MiB)); then
        echo "w 0xe3 $((MiB + 500)) 3000"
    fi
    echo "d $((20 * cs)) $((2 * cs))"
    echo "w 0xe4 $((size - 100)) 100"
}

# vimg-io reads QEMU's image, then writes pass 2; qemu checks and reads.
vimg_reads_then_writes() {
    local cs=$1 size=$2
    verify_ops "$VIMG_IO -f $FMT" "$IMG" "${EXP[@]}"
    gen_pass2 "$cs" "$size" >pass2.ops
    run_ops "$VIMG_IO -f $FMT" pass2.ops "$IMG"
    [ "$FMT" = raw ] || assert_qemu_check_clean "$IMG"
    verify_ops "qemu-io -f $FMT" "$IMG" "${EXP[@]}" pass2.ops
}

@test "raw written by qemu-io" {
    mk_q_raw
    vimg_reads_then_writes 65536 $((64 * MiB))
}

@test "qcow2 v2, 64k clusters, across an L2 table" {
    mk_q_plain v2 $((1024 * MiB)) 65536 compat=0.10
    vimg_reads_then_writes 65536 $((1024 * MiB))
}

@test "qcow2 v3, 64k clusters, across an L2 table" {
    mk_q_plain v3 $((1024 * MiB)) 65536
    vimg_reads_then_writes 65536 $((1024 * MiB))
}

@test "qcow2 v3, 512-byte clusters" {
    mk_q_plain c512 $((64 * MiB)) 512
    vimg_reads_then_writes 512 $((64 * MiB))
}

@test "qcow2 v2, 512-byte clusters" {
    mk_q_plain c512v2 $((64 * MiB)) 512 compat=0.10
    vimg_reads_then_writes 512 $((64 * MiB))
}

@test "qcow2 v3, 4k clusters" {
    mk_q_plain c4k $((64 * MiB)) 4096
    vimg_reads_then_writes 4096 $((64 * MiB))
}

@test "qcow2 v3, 2M clusters, across an L2 table at 512 GiB" {
    local size=$(($(l2cov $((2 * MiB))) + 64 * MiB))
    mk_q_plain c2m $size $((2 * MiB))
    vimg_reads_then_writes $((2 * MiB)) $size
}

@test "qcow2 refcount_bits 1, 2, 4, 8, 16, 32, 64" {
    local rb
    for rb in 1 2 4 8 16 32 64; do
        mk_q_plain "rb$rb" $((64 * MiB)) 4096 "refcount_bits=$rb"
        assert_qemu_info "rb$rb.qcow2" ".[\"format-specific\"].data[\"refcount-bits\"] == $rb"
        vimg_reads_then_writes 4096 $((64 * MiB))
    done
}

@test "qcow2 v3 zero clusters (write -z over data, with and without unmap)" {
    qemu-img create -q -f qcow2 zero.qcow2 16M
    cat >zero.ops <<EOF
bg 0 0 $((16 * MiB))
w 0x31 0 $((4 * MiB))
--
z 65536 131072
z $((MiB)) $((MiB))
z $((3 * MiB + 100)) 1000
EOF
    _run_io "qemu-io -f qcow2" zero.qcow2 -c "write -P 0x31 0 4M"
    _run_io "qemu-io -f qcow2" zero.qcow2 -c "write -z 64k 128k" \
        -c "write -z -u 1M 1M" -c "write -z $((3 * MiB + 100)) 1000"
    # QEMU made real zero clusters (present, zero, no data).
    run qemu-img map --output=json zero.qcow2
    assert_success
    [ "$(jq '[.[] | select(.zero and .present and (.data | not))] | length' <<<"$output")" -ge 2 ]
    verify_ops "$VIMG_IO -f qcow2" zero.qcow2 zero.ops
}

@test "qcow2 compressed clusters, zlib (convert -c and write -c)" {
    mk_q_compressed zlib
    run qemu-img check --output=json comp-zlib.qcow2
    assert_success
    [ "$(jq '.["compressed-clusters"]' <<<"$output")" -gt 0 ]
    vimg_reads_then_writes 65536 $((16 * MiB))
}

@test "qcow2 compressed clusters, zstd (convert -c and write -c)" {
    mk_q_compressed zstd
    assert_qemu_info comp-zstd.qcow2 '.["format-specific"].data["compression-type"] == "zstd"'
    run qemu-img check --output=json comp-zstd.qcow2
    assert_success
    [ "$(jq '.["compressed-clusters"]' <<<"$output")" -gt 0 ]
    vimg_reads_then_writes 65536 $((16 * MiB))
}

@test "qcow2 extended_l2, 64k clusters, subcluster writes over a backing file" {
    mk_q_extl2 65536
    vimg_reads_then_writes 65536 $((8 * MiB))
}

@test "qcow2 extended_l2, 128k clusters, subcluster writes over a backing file" {
    mk_q_extl2 131072
    vimg_reads_then_writes 131072 $((8 * MiB))
}

@test "backing file: qcow2 over raw (recorded format, relative name in sub/)" {
    mk_q_chain raw
    vimg_reads_then_writes 65536 $((16 * MiB))
    # The base is untouched.
    verify_ops "qemu-io -f raw" sub/base.raw base.ops
}

@test "backing file: qcow2 over qcow2 (recorded format, relative name in sub/)" {
    mk_q_chain qcow2
    vimg_reads_then_writes 65536 $((16 * MiB))
    assert_qemu_check_clean sub/base.qcow2
    verify_ops "qemu-io -f qcow2" sub/base.qcow2 base.ops
}

@test "backing file: read from inside the subfolder too" {
    mk_q_chain qcow2
    cd sub
    verify_ops "$VIMG_IO -f qcow2" top.qcow2 ../base.ops ../top.ops
}

@test "external data file (data_file_raw=off)" {
    mk_q_datafile off
    vimg_reads_then_writes 65536 $((16 * MiB))
}

@test "external data file (data_file_raw=on): data file stays a raw image" {
    mk_q_datafile on
    vimg_reads_then_writes 65536 $((16 * MiB))
    verify_ops "qemu-io -f raw" df-on.data df.ops pass2.ops
}

@test "internal snapshot: current data, then a vimg write to a shared cluster" {
    mk_q_snapshot
    verify_ops "$VIMG_IO -f qcow2" snap.qcow2 snapA.ops snapB.ops
    # Clusters 8 (0x55) and 20 (0x88) are still shared with s1.
    cat >snapC.ops <<EOF
w 0xe9 $((8 * 65536 + 100)) 300
w 0xea $((MiB + 4 * 65536 + 200)) 5000
z $((10 * 65536)) 65536
EOF
    run_ops "$VIMG_IO -f qcow2" snapC.ops snap.qcow2
    assert_qemu_check_clean snap.qcow2
    verify_ops "qemu-io -f qcow2" snap.qcow2 snapA.ops snapB.ops snapC.ops
    run qemu-img snapshot -l snap.qcow2
    assert_success
    assert_output --partial s1
    cp snap.qcow2 copy.qcow2
    qemu-img snapshot -a s1 copy.qcow2
    verify_ops "qemu-io -f qcow2" copy.qcow2 snapA.ops
    assert_qemu_check_clean copy.qcow2
}

@test "lazy refcounts after a crash: read-only open reads, read-write open repairs" {
    mk_q_lazy_dirty
    cp lazy.qcow2 before.qcow2
    verify_ops "$VIMG_IO -f qcow2" lazy.qcow2 lazy.ops
    # A read-only open changes nothing; the image stays dirty.
    cmp lazy.qcow2 before.qcow2
    run vimg_io_t -f qcow2 -c "read -P 0x5a 0 64k" lazy.qcow2
    assert_success
    refute_output --partial "Pattern verification failed"
    assert_qemu_check_clean lazy.qcow2
    assert_qemu_info lazy.qcow2 '.["dirty-flag"] == false'
    verify_ops "qemu-io -f qcow2" lazy.qcow2 lazy.ops
    # And it is writable afterwards.
    printf 'w 0x6b %d 70000\n' $((MiB / 2)) >lazy2.ops
    run_ops "$VIMG_IO -f qcow2" lazy2.ops lazy.qcow2
    assert_qemu_check_clean lazy.qcow2
    assert_qemu_info lazy.qcow2 '.["dirty-flag"] == false'
    verify_ops "qemu-io -f qcow2" lazy.qcow2 lazy.ops lazy2.ops
}

@test "corrupt bit: read-only read works, read-write open fails" {
    mk_q_corrupt
    cp corrupt.qcow2 before.qcow2
    verify_ops "$VIMG_IO -f qcow2" corrupt.qcow2 corrupt.ops
    run_split "$VIMG_IO" -f qcow2 -c "read 0 64k" corrupt.qcow2
    assert_one_line_error
    run_split "$VIMG_IO" -f qcow2 -c "write -P 0x12 0 64k" corrupt.qcow2
    assert_one_line_error
    cmp corrupt.qcow2 before.qcow2
}

@test "vimg-io --image-opts, and -U while qemu-io holds the image" {
    mk_q_plain io $((64 * MiB)) 65536
    verify_ops "$VIMG_IO --image-opts" \
        "driver=qcow2,file.driver=file,file.filename=io.qcow2" io.ops
    hold_image -f qcow2 io.qcow2
    verify_ops "$VIMG_IO -U -f qcow2" io.qcow2 io.ops
}
