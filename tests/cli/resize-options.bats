#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg resize: sizes (absolute, +, -), --shrink, --preallocation, -q,
# and bad input: a one-line error, exit 1, the image untouched.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq
    qemu-img create -q -f qcow2 a.qcow2 16M
    qemu-io -c "write -P 1 0 1M" a.qcow2 >/dev/null
    SUM=$(sha256sum a.qcow2)
}

untouched() { [ "$(sha256sum a.qcow2)" = "$SUM" ]; }
vsize() { qemu-img info -U --output=json "$1" | jq '.["virtual-size"]'; }

@test "resize --help" {
    run_split "$VIMG" resize --help
    [ "$status" -eq 0 ]
    [[ $output == *"--shrink"* ]]
}

@test "resize: absolute, relative, negative, quiet" {
    run_split "$VIMG" resize a.qcow2 32M
    [ "$status" -eq 0 ]
    [ "$output" = "Image resized." ]
    [ "$(vsize a.qcow2)" -eq $((32 * 1024 * 1024)) ]
    run_split "$VIMG" resize a.qcow2 +1G
    [ "$(vsize a.qcow2)" -eq $((1056 * 1024 * 1024)) ]
    run_split "$VIMG" resize --shrink a.qcow2 -1G
    [ "$status" -eq 0 ]
    [ "$(vsize a.qcow2)" -eq $((32 * 1024 * 1024)) ]
    run_split "$VIMG" resize -q a.qcow2 --shrink 8M
    [ "$status" -eq 0 ]
    [ -z "$output" ]
    [ "$(vsize a.qcow2)" -eq $((8 * 1024 * 1024)) ]
    assert_qemu_check_clean a.qcow2
    qemu-io -c "read -P 1 0 1M" a.qcow2 | grep -q "read 1048576/1048576"
}

@test "resize: raw images need -f raw to be written" {
    truncate -s 1M r.raw
    run_split "$VIMG" resize r.raw 2M
    assert_one_line_error
    [ "$(stat -c %s r.raw)" -eq 1048576 ]
    run_split "$VIMG" resize -f raw r.raw 2M
    [ "$status" -eq 0 ]
    [ "$(stat -c %s r.raw)" -eq 2097152 ]
    run_split "$VIMG" resize -f raw --shrink r.raw 1000
    [ "$(stat -c %s r.raw)" -eq 1000 ]
    run_split "$VIMG" resize -f raw --preallocation=full r.raw +1M
    [ "$status" -eq 0 ]
    [ "$(stat -c %s r.raw)" -eq $((1024 + 1048576)) ]
    run_split "$VIMG" resize -f raw --preallocation=metadata r.raw +1M
    assert_one_line_error
}

@test "resize: refusals leave the image untouched" {
    run_split "$VIMG" resize a.qcow2 8M
    assert_one_line_error
    [ "$stderr" = "vimg: resize: Use the --shrink option to perform a shrink operation." ]
    run_split "$VIMG" resize --shrink a.qcow2 -16M
    assert_one_line_error
    [ "$stderr" = "vimg: resize: New image size must be positive" ]
    run_split "$VIMG" resize a.qcow2 0
    assert_one_line_error
    run_split "$VIMG" resize a.qcow2 +1000
    assert_one_line_error
    [ "$stderr" = "vimg: resize: The new size must be a multiple of 512" ]
    run_split "$VIMG" resize --preallocation=full a.qcow2 8M
    assert_one_line_error
    [ "$stderr" = "vimg: resize: Preallocation can only be used for growing images" ]
    run_split "$VIMG" resize --preallocation=foo a.qcow2 32M
    assert_one_line_error
    run_split "$VIMG" resize a.qcow2 12x
    assert_one_line_error
    run_split "$VIMG" resize a.qcow2
    assert_one_line_error
    run_split "$VIMG" resize
    assert_one_line_error
    run_split "$VIMG" resize --bogus a.qcow2 32M
    assert_one_line_error
    untouched
}

@test "resize: missing, wrong-format, locked and read-only targets" {
    run_split "$VIMG" resize missing.qcow2 1G
    assert_one_line_error
    [ ! -e missing.qcow2 ]
    truncate -s 1M r.raw
    run_split "$VIMG" resize -f qcow2 r.raw 2M
    assert_one_line_error
    [ "$(stat -c %s r.raw)" -eq 1048576 ]
    hold_image -f qcow2 -r a.qcow2
    run_split "$VIMG" resize a.qcow2 32M
    assert_one_line_error
    [[ $stderr == *lock* ]]
    untouched
}

@test "resize: a file without write permission" {
    [ "$(id -u)" -ne 0 ] || skip "root ignores file permissions"
    chmod 444 a.qcow2
    run_split "$VIMG" resize a.qcow2 32M
    assert_one_line_error
    untouched
}

@test "resize: an image with internal snapshots cannot shrink" {
    qemu-img snapshot -c s1 a.qcow2
    SUM=$(sha256sum a.qcow2)
    run_split "$VIMG" resize --shrink a.qcow2 8M
    assert_one_line_error
    untouched
    run_split "$VIMG" resize a.qcow2 32M
    [ "$status" -eq 0 ]
    assert_qemu_check_clean a.qcow2
}
