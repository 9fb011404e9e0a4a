#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg bitmap: syntax, qemu-img 7.2's messages, and all-or-nothing
# application of several actions.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img jq
    qemu-img create -q -f qcow2 img.qcow2 8M
}

bitmaps() {
    qemu-img info --output=json "$1" |
        jq -c '[.["format-specific"].data.bitmaps // [] | .[] |
                [.name, .granularity, .flags]]'
}

@test "usage errors use qemu-img's messages" {
    run_split "$VIMG" bitmap img.qcow2 b
    assert_one_line_error
    [[ $stderr == *"Need at least one of --add, --remove, --clear, --enable, --disable, or --merge" ]]
    run_split "$VIMG" bitmap --add img.qcow2
    assert_one_line_error
    [[ $stderr == *"Expecting filename and bitmap name" ]]
    run_split "$VIMG" bitmap --remove -g 1M img.qcow2 b
    assert_one_line_error
    [[ $stderr == *"granularity only supported with --add" ]]
    run_split "$VIMG" bitmap --merge a -F qcow2 img.qcow2 b
    assert_one_line_error
    [[ $stderr == *"-F only supported with -b" ]]
    run_split "$VIMG" bitmap --add -b img.qcow2 img.qcow2 b
    assert_one_line_error
    [[ $stderr == *"Merge bitmap source file only supported with --merge" ]]
    run_split "$VIMG" bitmap --frob img.qcow2 b
    assert_one_line_error
    run_split "$VIMG" bitmap --help
    [ "$status" -eq 0 ]
    [[ $output == Usage:* ]]
}

@test "add: default granularity, -g, --disable, bad values" {
    run_split "$VIMG" bitmap --add img.qcow2 b0
    [ "$status" -eq 0 ]
    run_split "$VIMG" bitmap --add -g 512 --disable img.qcow2 b1
    [ "$status" -eq 0 ]
    [ "$(bitmaps img.qcow2)" = '[["b0",65536,["auto"]],["b1",512,[]]]' ]
    for g in 1000 256 4G; do
        run_split "$VIMG" bitmap --add -g $g img.qcow2 b2
        assert_one_line_error
        [[ $stderr == *"Operation add on bitmap b2 failed: Granularity must be power of 2 and at least 512" ]]
    done
    run_split "$VIMG" bitmap --add -g abc img.qcow2 b2
    [ "$status" -eq 1 ]
    [[ $stderr == *"Invalid granularity specified"* ]]
    run_split "$VIMG" bitmap --add img.qcow2 b0
    assert_one_line_error
    [[ $stderr == *"Operation add on bitmap b0 failed: Bitmap already exists: b0" ]]
    run_split "$VIMG" bitmap --add img.qcow2 ""
    assert_one_line_error
    [[ $stderr == *"Bitmap name cannot be empty" ]]
    run_split "$VIMG" bitmap --add img.qcow2 "$(printf 'x%.0s' $(seq 1024))"
    assert_one_line_error
    [[ $stderr == *"Name length exceeds maximum (1023 characters)" ]]
    [ "$(bitmaps img.qcow2)" = '[["b0",65536,["auto"]],["b1",512,[]]]' ]
}

@test "default granularity follows the cluster size within 4k..64k" {
    for cs in 512:4096 4096:4096 2M:65536; do
        qemu-img create -q -f qcow2 -o cluster_size=${cs%:*} g.qcow2 8M
        "$VIMG" bitmap --add g.qcow2 b
        [ "$(bitmaps g.qcow2)" = "[[\"b\",${cs#*:},[\"auto\"]]]" ]
    done
}

@test "missing bitmaps, v2 images and raw images are refused" {
    for op in --remove --clear --enable --disable "--merge x"; do
        run_split "$VIMG" bitmap $op img.qcow2 nope
        assert_one_line_error
        [[ $stderr == *"failed: Dirty bitmap '"*"' not found" ]]
    done
    qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 8M
    run_split "$VIMG" bitmap --add v2.qcow2 b
    assert_one_line_error
    [[ $stderr == *"Cannot store dirty bitmaps in qcow2 v2 files" ]]
    qemu-img create -q -f raw r.raw 1M
    run_split "$VIMG" bitmap --add -f raw r.raw b
    assert_one_line_error
    run_split "$VIMG" bitmap --add nonexistent.qcow2 b
    assert_one_line_error
}

@test "several actions apply in order" {
    run_split "$VIMG" bitmap --add --disable --enable --clear img.qcow2 b
    [ "$status" -eq 0 ]
    [ "$(bitmaps img.qcow2)" = '[["b",65536,["auto"]]]' ]
    run_split "$VIMG" bitmap --remove --add -g 1M --disable img.qcow2 b
    [ "$status" -eq 0 ]
    [ "$(bitmaps img.qcow2)" = '[["b",1048576,[]]]' ]
    run_split "$VIMG" bitmap --add --remove img.qcow2 c
    [ "$status" -eq 0 ]
    [ "$(bitmaps img.qcow2)" = '[["b",1048576,[]]]' ]
    assert_qemu_check_clean img.qcow2
}

@test "a failing later action leaves the image byte-identical" {
    "$VIMG" bitmap --add img.qcow2 a
    cp img.qcow2 before.qcow2
    run_split "$VIMG" bitmap --add --clear --merge nope img.qcow2 b
    assert_one_line_error
    [[ $stderr == *"Operation merge on bitmap b failed: Dirty bitmap 'nope' not found" ]]
    cmp img.qcow2 before.qcow2
    run_split "$VIMG" bitmap --remove --remove img.qcow2 a
    assert_one_line_error
    cmp img.qcow2 before.qcow2
    run_split "$VIMG" bitmap --disable --add img.qcow2 a
    assert_one_line_error
    [[ $stderr == *"Bitmap already exists: a" ]]
    cmp img.qcow2 before.qcow2
}

@test "an in-use bitmap only accepts --remove" {
    requires qemu-io
    "$VIMG" bitmap --add img.qcow2 a
    "$VIMG" bitmap --add img.qcow2 b
    # A vimg-io killed after a write leaves the bitmaps in use.
    "$VIMG_IO" -f qcow2 -c 'write 0 64k' -c 'sigraise 9' img.qcow2 \
        >/dev/null 2>&1 || true
    for op in --clear --enable --disable "--merge b"; do
        run_split "$VIMG" bitmap $op img.qcow2 a
        [ "$status" -eq 1 ]
        name=${op#--}
        [[ $stderr == *"Operation ${name%% *} on bitmap a failed: Bitmap 'a' is inconsistent and cannot be used"*"Try block-dirty-bitmap-remove to delete this bitmap from disk" ]]
    done
    run_split "$VIMG" bitmap --remove img.qcow2 a
    [ "$status" -eq 0 ]
    [ "$(bitmaps img.qcow2)" = '[["b",65536,["in-use","auto"]]]' ]
    assert_qemu_check_clean img.qcow2
}

@test "vimg info lists the bitmaps as qemu-img does" {
    "$VIMG" bitmap --add img.qcow2 a
    "$VIMG" bitmap --add -g 128k --disable img.qcow2 b
    assert_info_json_equal img.qcow2
}
