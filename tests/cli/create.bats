#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg create: the command line itself (qemu-img create's syntax).
# qemu-img info/check serve as the independent judges of the result.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img jq
}

vsize() {
    qemu-img info -U --output=json "$1" | jq '.["virtual-size"]'
}

@test "size suffixes: none, k, K, M, G, T (qcow2)" {
    local spec want
    for spec in 512:512 1k:1024 1K:1024 64M:67108864 2G:2147483648 \
        1T:1099511627776 1536k:1572864; do
        run vimg_t create -q -f qcow2 x.qcow2 "${spec%%:*}"
        assert_success
        want=${spec#*:}
        assert_equal "$(vsize x.qcow2)" "$want"
    done
    assert_qemu_check_clean x.qcow2
}

@test "size suffixes (raw): the file has exactly that size" {
    local spec
    for spec in 1k:1024 3M:3145728 1G:1073741824 2T:2199023255552; do
        run vimg_t create -q -f raw r.img "${spec%%:*}"
        assert_success
        assert_equal "$(stat -c %s r.img)" "${spec#*:}"
        rm -f r.img
    done
}

@test "-o size= gives the size" {
    run vimg_t create -q -f qcow2 -o size=2M x.qcow2
    assert_success
    assert_equal "$(vsize x.qcow2)" 2097152
}

@test "bad sizes: one-line error" {
    local s
    for s in abc 12Q 1k5 ''; do
        echo "size '$s'"
        run_split "$VIMG" create -q -f qcow2 x.qcow2 "$s"
        assert_one_line_error
    done
}

@test "no size and no backing file: one-line error" {
    run_split "$VIMG" create -q -f qcow2 x.qcow2
    assert_one_line_error
}

@test "no file name: error" {
    run_split "$VIMG" create -q -f qcow2
    assert_equal "$status" 1
}

@test "raw create makes a sparse file of the right size" {
    run vimg_t create -q -f raw sparse.img 1G
    assert_success
    assert_equal "$(stat -c %s sparse.img)" 1073741824
    [ $(($(stat -c %b sparse.img) * $(stat -c %B sparse.img))) -lt $((1024 * 1024)) ]
    run qemu-img info --output=json sparse.img
    assert_success
    assert_equal "$(jq -r .format <<<"$output")" raw
}

@test "default format is raw" {
    run vimg_t create -q d.img 1M
    assert_success
    run qemu-img info --output=json d.img
    assert_equal "$(jq -r .format <<<"$output")" raw
    assert_equal "$(stat -c %s d.img)" 1048576
}

@test "qcow2 defaults: v3, 64k clusters, 16-bit refcounts, check clean" {
    run vimg_t create -q -f qcow2 q.qcow2 100M
    assert_success
    run qemu-img info --output=json q.qcow2
    assert_success
    assert_equal "$(jq -c '[.["cluster-size"], .["format-specific"].data.compat, .["format-specific"].data["refcount-bits"], .["format-specific"].data["lazy-refcounts"], .["format-specific"].data["extended-l2"], .["format-specific"].data["compression-type"]]' <<<"$output")" \
        '[65536,"1.1",16,false,false,"zlib"]'
    assert_qemu_check_clean q.qcow2
}

@test "-b without -F is an error" {
    qemu-img create -q -f qcow2 base.qcow2 32M
    run_split "$VIMG" create -q -f qcow2 -b base.qcow2 top.qcow2
    assert_one_line_error
    [[ $stderr == *"Backing file specified without backing format"* ]]
}

@test "-o backing_file without backing_fmt is an error too" {
    qemu-img create -q -f qcow2 base.qcow2 32M
    run_split "$VIMG" create -q -f qcow2 -o backing_file=base.qcow2 top.qcow2
    assert_one_line_error
}

@test "size defaults to the backing file's (qcow2 and raw bases)" {
    qemu-img create -q -f qcow2 base.qcow2 32M
    run vimg_t create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    assert_success
    assert_equal "$(vsize top.qcow2)" 33554432
    qemu-img create -q -f raw base.raw 5M
    run vimg_t create -q -f qcow2 -b base.raw -F raw top2.qcow2
    assert_success
    assert_equal "$(vsize top2.qcow2)" 5242880
    run qemu-img info --output=json top2.qcow2
    assert_equal "$(jq -r '.["backing-filename"] + " " + .["backing-filename-format"]' <<<"$output")" "base.raw raw"
    assert_qemu_check_clean top.qcow2
    assert_qemu_check_clean top2.qcow2
}

@test "-o backing_file,backing_fmt works like -b -F" {
    qemu-img create -q -f qcow2 base.qcow2 32M
    run vimg_t create -q -f qcow2 -o backing_file=base.qcow2,backing_fmt=qcow2 top.qcow2
    assert_success
    run qemu-img info --output=json top.qcow2
    assert_equal "$(jq -r '.["backing-filename"] + " " + .["backing-filename-format"] + " " + (.["virtual-size"] | tostring)' <<<"$output")" "base.qcow2 qcow2 33554432"
}

@test "an explicit size larger than the backing file is allowed" {
    qemu-img create -q -f qcow2 base.qcow2 32M
    run vimg_t create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 64M
    assert_success
    assert_equal "$(vsize top.qcow2)" 67108864
}

@test "relative backing name is relative to the new image's folder" {
    mkdir sub
    qemu-img create -q -f qcow2 sub/base.qcow2 8M
    run vimg_t create -q -f qcow2 -b base.qcow2 -F qcow2 sub/top.qcow2
    assert_success
    run qemu-img info --output=json sub/top.qcow2
    assert_success
    assert_equal "$(jq -r '.["backing-filename"] + " " + .["full-backing-filename"] + " " + (.["virtual-size"] | tostring)' <<<"$output")" "base.qcow2 sub/base.qcow2 8388608"
}

@test "missing backing file without -u: one-line error" {
    run_split "$VIMG" create -q -f qcow2 -b missing.qcow2 -F qcow2 top.qcow2 16M
    assert_one_line_error
}

@test "-u with a missing backing file needs an explicit size" {
    run_split "$VIMG" create -q -f qcow2 -u -b missing.qcow2 -F qcow2 top.qcow2
    assert_one_line_error
    run vimg_t create -q -f qcow2 -u -b missing.qcow2 -F qcow2 top.qcow2 16M
    assert_success
    run qemu-img info --output=json top.qcow2
    assert_success
    assert_equal "$(jq -r '.["backing-filename"] + " " + .["backing-filename-format"] + " " + (.["virtual-size"] | tostring)' <<<"$output")" "missing.qcow2 qcow2 16777216"
}

@test "bad -o keys and values: one-line errors" {
    local o
    for o in foo=bar cluster_size=1000 cluster_size=256 cluster_size=4M \
        refcount_bits=3 refcount_bits=128 compat=v4 preallocation=bogus \
        compat=0.10,lazy_refcounts=on compat=0.10,extended_l2=on \
        extended_l2=on,cluster_size=4k compression_type=lz4 \
        lazy_refcounts=maybe data_file_raw=on; do
        echo "-o $o"
        run_split "$VIMG" create -q -f qcow2 -o "$o" x.qcow2 1M
        assert_one_line_error
    done
}

@test "qcow2-only options on raw: one-line error" {
    run_split "$VIMG" create -q -f raw -o cluster_size=64k r.img 1M
    assert_one_line_error
}

@test "unknown format: one-line error" {
    run_split "$VIMG" create -q -f vmdk9 x.img 1M
    assert_one_line_error
}

@test "-q prints nothing; without -q a Formatting line" {
    run_split "$VIMG" create -q -f qcow2 q.qcow2 1M
    assert_success
    assert_equal "$output" ""
    assert_equal "$stderr" ""
    run_split "$VIMG" create -f qcow2 n.qcow2 1M
    assert_success
    [[ $output == "Formatting 'n.qcow2', fmt=qcow2 "* ]]
}

@test "create over an existing image replaces it" {
    qemu-img create -q -f qcow2 x.qcow2 64M
    qemu-io -f qcow2 -c "write -q -P 0x11 0 1M" x.qcow2
    run vimg_t create -q -f qcow2 x.qcow2 2M
    assert_success
    assert_equal "$(vsize x.qcow2)" 2097152
    assert_qemu_check_clean x.qcow2
    run qemu-io -r -f qcow2 -c "read -P 0 0 1M" x.qcow2
    assert_success
    refute_output --partial "Pattern verification failed"
}

@test "every preallocation mode gives a clean image of the right size" {
    local p
    for p in off metadata falloc full; do
        echo "preallocation=$p"
        run vimg_t create -q -f qcow2 -o preallocation=$p "p-$p.qcow2" 8M
        assert_success
        assert_qemu_check_clean "p-$p.qcow2"
        assert_equal "$(vsize "p-$p.qcow2")" 8388608
    done
    for p in off falloc full; do
        run vimg_t create -q -f raw -o preallocation=$p "p-$p.raw" 8M
        assert_success
        assert_equal "$(stat -c %s "p-$p.raw")" 8388608
    done
    run_split "$VIMG" create -q -f raw -o preallocation=metadata p.raw 8M
    assert_one_line_error
}
