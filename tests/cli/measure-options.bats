#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg measure: output shapes, option handling and bad input.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq
}

@test "measure --help" {
    run_split "$VIMG" measure --help
    [ "$status" -eq 0 ]
    [[ $output == *"--size"* ]]
}

@test "measure: human and json output" {
    run_split "$VIMG" measure --size 1G
    [ "$status" -eq 0 ]
    [ "${lines[0]}" = "required size: 1073741824" ]
    [ "${lines[1]}" = "fully allocated size: 1073741824" ]
    run_split "$VIMG" measure -O qcow2 --size 1G --output=json
    [ "$status" -eq 0 ]
    jq -e '. == {"required": 393216, "fully-allocated": 1074135040}' <<<"$output"
    # -o may be repeated.
    run_split "$VIMG" measure -O qcow2 -o cluster_size=4k -o refcount_bits=1 \
        --output=json --size 1G
    [ "$status" -eq 0 ]
    [ "$(jq '.required' <<<"$output")" -gt 0 ]
}

@test "measure: a source image, bitmaps field for qcow2 v3 only" {
    qemu-img create -q -f qcow2 s.qcow2 64M
    qemu-io -c "write -P 1 0 1M" s.qcow2 >/dev/null
    SUM=$(sha256sum s.qcow2)
    run_split "$VIMG" measure -O qcow2 --output=json s.qcow2
    [ "$status" -eq 0 ]
    jq -e 'has("bitmaps") and .bitmaps == 0' <<<"$output"
    run_split "$VIMG" measure -O qcow2 -o compat=0.10 --output=json s.qcow2
    jq -e 'has("bitmaps") | not' <<<"$output"
    run_split "$VIMG" measure --output=json s.qcow2
    jq -e '. == {"required": 67108864, "fully-allocated": 67108864}' <<<"$output"
    [ "$(sha256sum s.qcow2)" = "$SUM" ]
}

@test "measure: bad input gives one-line errors" {
    qemu-img create -q -f qcow2 s.qcow2 64M
    run_split "$VIMG" measure
    assert_one_line_error
    run_split "$VIMG" measure --size 1G s.qcow2
    assert_one_line_error
    run_split "$VIMG" measure --size foo
    assert_one_line_error
    run_split "$VIMG" measure --size -1
    assert_one_line_error
    run_split "$VIMG" measure missing.qcow2
    assert_one_line_error
    run_split "$VIMG" measure -f raw -O qcow2 -o cluster_size=3k s.qcow2
    assert_one_line_error
    run_split "$VIMG" measure -O foo --size 1G
    assert_one_line_error
    [ "$stderr" = "vimg: measure: Unknown file format 'foo'" ]
    run_split "$VIMG" measure -O qcow2 -o bogus=1 --size 1G
    assert_one_line_error
    run_split "$VIMG" measure -O qcow2 -o compat=0.10,refcount_bits=8 --size 1G
    assert_one_line_error
    run_split "$VIMG" measure -O qcow2 -o cluster_size=512 --size 16T
    assert_one_line_error
    run_split "$VIMG" measure -O qcow2 -o preallocation=foo --size 1G
    assert_one_line_error
    run_split "$VIMG" measure --output=xml --size 1G
    assert_one_line_error
    run_split "$VIMG" measure -f qcow2 --size 1G x y
    assert_one_line_error
}
