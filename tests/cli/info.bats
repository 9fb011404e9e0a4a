#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg info: output modes, -U, -f, --image-opts, --backing-chain, errors.
# Images are made with qemu-img, so they do not depend on vimg create.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq
}

@test "human output (default and --output=human)" {
    qemu-img create -q -f qcow2 x.qcow2 64M
    local mode
    for mode in "" --output=human; do
        run vimg_t info $mode x.qcow2
        assert_success
        assert_line "image: x.qcow2"
        assert_line "file format: qcow2"
        assert_line "virtual size: 64 MiB (67108864 bytes)"
        assert_line "cluster_size: 65536"
        assert_line --regexp "^disk size: "
        assert_line "Format specific information:"
        assert_line "    compat: 1.1"
        assert_line "    refcount bits: 16"
    done
}

@test "human output of a raw image" {
    qemu-img create -q -f raw r.img 10M
    run vimg_t info r.img
    assert_success
    assert_line "image: r.img"
    assert_line "file format: raw"
    assert_line "virtual size: 10 MiB (10485760 bytes)"
    refute_line --partial "cluster_size"
}

@test "--output=json" {
    qemu-img create -q -f qcow2 -o cluster_size=4k,lazy_refcounts=on x.qcow2 1G
    run vimg_t info --output=json x.qcow2
    assert_success
    assert_equal "$(jq -c '[.filename, .format, .["virtual-size"], .["cluster-size"], .["dirty-flag"], .["format-specific"].type, .["format-specific"].data["lazy-refcounts"]]' <<<"$output")" \
        '["x.qcow2","qcow2",1073741824,4096,false,"qcow2",true]'
    [ "$(jq '.["actual-size"] | type' <<<"$output")" = '"number"' ]
}

@test "--output=json of a raw image" {
    qemu-img create -q -f raw r.img 3M
    run vimg_t info --output=json r.img
    assert_success
    assert_equal "$(jq -c '[.filename, .format, .["virtual-size"], .["dirty-flag"]]' <<<"$output")" \
        '["r.img","raw",3145728,false]'
}

@test "--output with a bad value: one-line error" {
    qemu-img create -q -f qcow2 x.qcow2 1M
    run_split "$VIMG" info --output=xml x.qcow2
    assert_one_line_error
}

@test "-U reads an image that qemu-io holds open read-write" {
    qemu-img create -q -f qcow2 busy.qcow2 64M
    hold_image -f qcow2 busy.qcow2
    run_split "$VIMG" info busy.qcow2
    assert_equal "$status" 1
    [[ $stderr == vimg* ]]
    [[ $stderr == *'Failed to get shared "write" lock'* ]]
    run_split "$VIMG" info -U busy.qcow2
    assert_success
    assert_line "file format: qcow2"
    run_split "$VIMG" info --force-share --output=json busy.qcow2
    assert_success
    assert_equal "$(jq -r .format <<<"$output")" qcow2
}

@test "info without -U works while qemu-io only reads" {
    qemu-img create -q -f qcow2 ro.qcow2 64M
    hold_image -r -f qcow2 ro.qcow2
    run_split "$VIMG" info ro.qcow2
    assert_success
}

@test "info does not lock out a later writer" {
    qemu-img create -q -f qcow2 x.qcow2 64M
    run vimg_t info x.qcow2
    assert_success
    run qemu-io -f qcow2 -c "write -q -P 1 0 4k" x.qcow2
    assert_success
}

@test "-f raw on a qcow2 file shows it as raw" {
    qemu-img create -q -f qcow2 x.qcow2 64M
    run vimg_t info -f raw --output=json x.qcow2
    assert_success
    assert_equal "$(jq -r .format <<<"$output")" raw
    # qemu-img rounds a raw size up to 512 bytes; so must we.
    assert_equal "$(jq -r '.["virtual-size"]' <<<"$output")" \
        "$(qemu-img info -f raw --output=json x.qcow2 | jq -r '.["virtual-size"]')"
}

@test "-f qcow2 on a raw file: one-line error" {
    qemu-img create -q -f raw r.img 1M
    run_split "$VIMG" info -f qcow2 r.img
    assert_one_line_error
}

@test "-f with an unknown format: one-line error" {
    qemu-img create -q -f raw r.img 1M
    run_split "$VIMG" info -f nosuchfmt r.img
    assert_one_line_error
}

@test "--image-opts driver=qcow2,file.driver=file,file.filename=X" {
    qemu-img create -q -f qcow2 x.qcow2 32M
    run vimg_t info --output=json --image-opts driver=qcow2,file.driver=file,file.filename=x.qcow2
    assert_success
    assert_equal "$(jq -c '[.filename, .format, .["virtual-size"]]' <<<"$output")" \
        '["x.qcow2","qcow2",33554432]'
    run vimg_t info --image-opts driver=raw,file.driver=file,file.filename=x.qcow2
    assert_success
    assert_line "file format: raw"
}

@test "--image-opts with -f: one-line error" {
    qemu-img create -q -f qcow2 x.qcow2 32M
    run_split "$VIMG" info -f qcow2 --image-opts driver=qcow2,file.filename=x.qcow2
    assert_one_line_error
}

@test "--image-opts with an unknown key or driver: one-line error" {
    qemu-img create -q -f qcow2 x.qcow2 32M
    run_split "$VIMG" info --image-opts driver=qcow2,file.driver=file,file.filename=x.qcow2,bogus=1
    assert_one_line_error
    run_split "$VIMG" info --image-opts driver=nosuch,file.filename=x.qcow2
    assert_one_line_error
}

@test "--backing-chain: human lists top first, JSON is an array" {
    mkdir sub
    qemu-img create -q -f raw sub/base.raw 16M
    qemu-img create -q -f qcow2 -b base.raw -F raw sub/mid.qcow2
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 sub/top.qcow2
    run vimg_t info --backing-chain sub/top.qcow2
    assert_success
    assert_equal "$(grep '^image: ' <<<"$output" | tr '\n' ' ')" \
        "image: sub/top.qcow2 image: sub/mid.qcow2 image: sub/base.raw "
    assert_line "backing file: mid.qcow2 (actual path: sub/mid.qcow2)"
    assert_line "backing file format: qcow2"
    run vimg_t info --backing-chain --output=json sub/top.qcow2
    assert_success
    assert_equal "$(jq -c 'map([.filename, .format])' <<<"$output")" \
        '[["sub/top.qcow2","qcow2"],["sub/mid.qcow2","qcow2"],["sub/base.raw","raw"]]'
    # Without --backing-chain: one object.
    run vimg_t info --output=json sub/top.qcow2
    assert_success
    assert_equal "$(jq -r 'type' <<<"$output")" object
    assert_equal "$(jq -r '.["full-backing-filename"]' <<<"$output")" sub/mid.qcow2
}

@test "info of a missing file: exit 1, one line" {
    run_split "$VIMG" info nothere.qcow2
    assert_one_line_error
    [[ $stderr == *nothere.qcow2* ]]
    run_split "$VIMG" info --output=json nothere.qcow2
    assert_one_line_error
    assert_equal "$output" ""
}

@test "info with no file name: error" {
    run_split "$VIMG" info
    assert_equal "$status" 1
}

@test "dirty and corrupt flags show in human output" {
    qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 16M
    local rc=0
    qemu-io -f qcow2 -c "write -P 1 0 64k" -c "sigraise 9" lazy.qcow2 >/dev/null 2>&1 || rc=$?
    assert_equal "$rc" 137
    run vimg_t info lazy.qcow2
    assert_success
    assert_line "cleanly shut down: no"
    run vimg_t info --output=json lazy.qcow2
    assert_equal "$(jq '.["dirty-flag"]' <<<"$output")" true
    qemu-img create -q -f qcow2 c.qcow2 16M
    printf '\002' | dd of=c.qcow2 bs=1 seek=79 conv=notrunc status=none
    run vimg_t info c.qcow2
    assert_success
    assert_line "    corrupt: true"
}
