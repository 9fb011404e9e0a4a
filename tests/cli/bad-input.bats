#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# Hostile images (tests/data/mkbad.py damages a good qemu-img image).
# `vimg info` and `vimg-io -c 'read 0 64k'` must give a one-line error
# (exactly one stderr line, starting with "vimg") and exit 1: never a
# crash (exit >= 128, which is also how a sanitizer report shows) and
# never a hang (everything runs under timeout 20).

load ../helpers

MKBAD=$VIMG_SRC/tests/data/mkbad.py

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io python3 jq
    qemu-img create -q -f qcow2 good.qcow2 64M
    qemu-io -f qcow2 -c "write -q -P 0x5a 0 128k" good.qcow2
}

# Header damage: every open fails, with the format given or probed.
bad_header() {
    python3 "$MKBAD" "$1" good.qcow2 bad.qcow2
    run_split "$VIMG" info -f qcow2 bad.qcow2
    assert_one_line_error
    run_split "$VIMG" info -f qcow2 --output=json bad.qcow2
    assert_one_line_error
    run_split "$VIMG_IO" -f qcow2 -c "read 0 64k" bad.qcow2
    assert_one_line_error
    run_split "$VIMG_IO" -r -f qcow2 -c "read 0 64k" bad.qcow2
    assert_one_line_error
    # Probed (no -f): whatever the verdict, no crash and no hang.
    run_split "$VIMG" info bad.qcow2
    assert_no_crash
    run_split "$VIMG_IO" -r -c "read 0 64k" bad.qcow2
    assert_exit_0_or_1
}

# Mapping damage: the header is fine, reading the damaged range fails.
bad_mapping() {
    python3 "$MKBAD" "$1" good.qcow2 bad.qcow2
    run_split "$VIMG" info -f qcow2 bad.qcow2
    assert_no_crash
    run_split "$VIMG" info -f qcow2 --output=json bad.qcow2
    assert_no_crash
    run_split "$VIMG_IO" -f qcow2 -c "read 0 64k" bad.qcow2
    assert_one_line_error
    run_split "$VIMG_IO" -r -f qcow2 -c "read 0 64k" bad.qcow2
    assert_one_line_error
}

@test "the good image opens and reads (control)" {
    run_split "$VIMG" info -f qcow2 good.qcow2
    assert_success
    run_split "$VIMG_IO" -f qcow2 -c "read -P 0x5a 0 64k" good.qcow2
    assert_success
    refute_output --partial "Pattern verification failed"
}

@test "empty file opened as qcow2" { bad_header trunc-0; }
@test "header truncated to 48 bytes" { bad_header trunc-48; }
@test "v3 header truncated to 100 bytes" { bad_header trunc-100; }
@test "bad magic" { bad_header bad-magic; }
@test "version 1" { bad_header version-1; }
@test "version 4" { bad_header version-4; }
@test "cluster_bits 8" { bad_header cluster-bits-8; }
@test "cluster_bits 22" { bad_header cluster-bits-22; }
@test "cluster_bits 200" { bad_header cluster-bits-200; }
@test "l1_size 0xffffffff" { bad_header l1-size-huge; }
@test "l1_size 0x7fffffff" { bad_header l1-size-2g; }
@test "L1 table offset unaligned" { bad_header l1-offset-unaligned; }
@test "L1 table offset past the end of the file" { bad_header l1-offset-past-eof; }
@test "L1 table offset near 2^64" { bad_header l1-offset-huge; }
@test "refcount table offset unaligned" { bad_header rt-offset-unaligned; }
@test "refcount table offset past the end of the file" { bad_header rt-offset-past-eof; }
@test "refcount_table_clusters 0xffffffff" { bad_header rt-clusters-huge; }
@test "refcount_order 7" { bad_header refcount-order-7; }
@test "unknown incompatible feature bit 5" { bad_header incompat-bit-5; }
@test "unknown incompatible feature bit 63" { bad_header incompat-bit-63; }
@test "header_length past the cluster" { bad_header header-length-huge; }
@test "header extension length runs past the cluster" { bad_header ext-len-past-cluster; }
@test "header extension length 0xfffffff8" { bad_header ext-len-huge; }
@test "backing file name of 1100 bytes" { bad_header backing-name-1100; }

@test "L1 entry pointing past EOF: read fails" { bad_mapping l1-entry-past-eof; }
@test "L2 entry pointing into the header: read fails" { bad_mapping l2-entry-into-header; }
@test "L2 entry pointing past EOF: read fails" { bad_mapping l2-entry-past-eof; }

@test "unknown incompatible bit: the error names the problem" {
    python3 "$MKBAD" incompat-bit-5 good.qcow2 bad.qcow2
    run_split "$VIMG" info -f qcow2 bad.qcow2
    assert_one_line_error
    [[ $stderr == *[Ff]eature* ]]
}

@test "backing loop a -> b -> a" {
    qemu-img create -q -f qcow2 -u -b b.qcow2 -F qcow2 a.qcow2 1M
    qemu-img create -q -f qcow2 -u -b a.qcow2 -F qcow2 b.qcow2 1M
    run_split "$VIMG" info --backing-chain a.qcow2
    assert_one_line_error
    run_split "$VIMG" info --backing-chain --output=json a.qcow2
    assert_one_line_error
    run_split "$VIMG_IO" -f qcow2 -c "read 0 64k" a.qcow2
    assert_one_line_error
    run_split "$VIMG_IO" -r -f qcow2 -c "read 0 64k" a.qcow2
    assert_one_line_error
    # Without the chain, info does not follow the loop (qemu-img succeeds).
    run_split "$VIMG" info a.qcow2
    assert_no_crash
}

@test "backing loop: self" {
    qemu-img create -q -f qcow2 s.qcow2 1M
    qemu-img rebase -u -b s.qcow2 -F qcow2 s.qcow2
    run_split "$VIMG" info --backing-chain s.qcow2
    assert_one_line_error
    run_split "$VIMG_IO" -f qcow2 -c "read 0 64k" s.qcow2
    assert_one_line_error
    run_split "$VIMG_IO" -r -f qcow2 -c "read 0 64k" s.qcow2
    assert_one_line_error
    run_split "$VIMG" info s.qcow2
    assert_no_crash
}

@test "backing loop: ancestor (a -> b -> c -> b)" {
    qemu-img create -q -f qcow2 -u -b b.qcow2 -F qcow2 a.qcow2 1M
    qemu-img create -q -f qcow2 -u -b c.qcow2 -F qcow2 b.qcow2 1M
    qemu-img create -q -f qcow2 -u -b b.qcow2 -F qcow2 c.qcow2 1M
    run_split "$VIMG" info --backing-chain a.qcow2
    assert_one_line_error
    run_split "$VIMG_IO" -r -f qcow2 -c "read 0 64k" a.qcow2
    assert_one_line_error
}

@test "a short chain (8 levels) works" {
    python3 "$MKBAD" chain 8 deep
    run_split "$VIMG" info --backing-chain --output=json deep/c0000.qcow2
    assert_success
    [ "$(jq length <<<"$output")" -eq 8 ]
    run_split "$VIMG_IO" -r -f qcow2 -c "read -P 0 0 64k" deep/c0000.qcow2
    assert_success
    refute_output --partial "Pattern verification failed"
}

@test "a very deep chain (1100 levels): clean error" {
    python3 "$MKBAD" chain 1100 deep
    run_split "$VIMG" info --backing-chain deep/c0000.qcow2
    assert_one_line_error
    run_split "$VIMG_IO" -r -f qcow2 -c "read 0 64k" deep/c0000.qcow2
    assert_one_line_error
    run_split "$VIMG_IO" -f qcow2 -c "read 0 64k" deep/c0000.qcow2
    assert_one_line_error
}

@test "missing backing file: reads fail, info works" {
    qemu-img create -q -f qcow2 -u -b gone.qcow2 -F qcow2 top.qcow2 1M
    run_split "$VIMG" info top.qcow2
    assert_success
    run_split "$VIMG_IO" -r -f qcow2 -c "read 0 64k" top.qcow2
    assert_one_line_error
    run_split "$VIMG" info --backing-chain top.qcow2
    assert_one_line_error
}

@test "a directory and a missing file" {
    mkdir d
    run_split "$VIMG" info d
    assert_one_line_error
    run_split "$VIMG_IO" -r -c "read 0 64k" d
    assert_one_line_error
    run_split "$VIMG" info nothere.qcow2
    assert_one_line_error
    run_split "$VIMG_IO" -r -c "read 0 64k" nothere.qcow2
    assert_one_line_error
}

@test "reads past the end of the image fail cleanly" {
    # qemu-io reports a failed command on stdout; only the exit code counts.
    run_split "$VIMG_IO" -r -f qcow2 -c "read 64M 64k" good.qcow2
    assert_equal "$status" 1
    run_split "$VIMG_IO" -r -f qcow2 -c "read $((64 * 1024 * 1024 - 512)) 1024" good.qcow2
    assert_equal "$status" 1
}
