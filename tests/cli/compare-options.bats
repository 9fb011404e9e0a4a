#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg compare: exit codes (0 identical, 1 different or bad usage, 2 open
# error, 3 allocation error, 4 read error), messages, -q, -s, -U, and
# the images untouched.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io python3
    qemu-img create -q -f qcow2 a.qcow2 16M
    qemu-io -c "write -P 1 0 64k" -c "write -P 2 5M 1M" a.qcow2 >/dev/null
    qemu-img convert -O raw a.qcow2 a.raw
    SUM=$(sha256sum a.qcow2 a.raw)
}

untouched() { [ "$(sha256sum a.qcow2 a.raw)" = "$SUM" ]; }

# After run_split: exit status $1 and exactly one stderr line "vimg: ...".
assert_status_one_line() {
    [ "$status" -eq "$1" ] || { echo "exit $status, want $1: $stderr" >&2; return 1; }
    [ "$(printf '%s\n' "$stderr" | wc -l)" -eq 1 ]
    [[ $stderr == "vimg: compare: "* ]]
}

@test "compare --help" {
    run_split "$VIMG" compare --help
    [ "$status" -eq 0 ]
    [[ $output == *"Exit status"* ]]
}

@test "compare: identical, different, quiet" {
    run_split "$VIMG" compare a.qcow2 a.raw
    [ "$status" -eq 0 ]
    [ "$output" = "Images are identical." ]
    run_split "$VIMG" compare -f qcow2 -F raw a.qcow2 a.raw
    [ "$status" -eq 0 ]
    cp a.raw b.raw
    printf 'x' | dd of=b.raw bs=1 seek=$((5 * 1024 * 1024 + 1000)) conv=notrunc status=none
    run_split "$VIMG" compare a.qcow2 b.raw
    [ "$status" -eq 1 ]
    [ "$output" = "Content mismatch at offset 5243392!" ]
    [ -z "$stderr" ]
    run_split "$VIMG" compare -q a.qcow2 b.raw
    [ "$status" -eq 1 ]
    [ -z "$output" ]
    run_split "$VIMG" compare -p a.qcow2 a.raw
    [ "$status" -eq 0 ]
    untouched
}

@test "compare: sizes and strict mode" {
    qemu-img create -q -f qcow2 big.qcow2 32M
    qemu-io -c "write -P 1 0 64k" -c "write -P 2 5M 1M" big.qcow2 >/dev/null
    run_split "$VIMG" compare a.qcow2 big.qcow2
    [ "$status" -eq 0 ]
    [ "${lines[0]}" = "Warning: Image size mismatch!" ]
    [ "${lines[1]}" = "Images are identical." ]
    run_split "$VIMG" compare -s a.qcow2 big.qcow2
    [ "$status" -eq 1 ]
    [ "$output" = "Strict mode: Image size mismatch!" ]
    run_split "$VIMG" compare -s a.qcow2 a.raw
    [ "$status" -eq 1 ]
    [[ $output == "Strict mode: Offset "*" block status mismatch!" ]]
    qemu-io -c "write -P 3 20M 1" big.qcow2 >/dev/null
    run_split "$VIMG" compare big.qcow2 a.qcow2
    [ "$status" -eq 1 ]
    [ "${lines[1]}" = "Content mismatch at offset 20971520!" ]
}

@test "compare: usage errors exit 1" {
    run_split "$VIMG" compare a.qcow2
    assert_status_one_line 1
    run_split "$VIMG" compare a.qcow2 a.raw a.raw
    assert_status_one_line 1
    run_split "$VIMG" compare --bogus a.qcow2 a.raw
    assert_status_one_line 1
}

@test "compare: open errors exit 2" {
    run_split "$VIMG" compare a.qcow2 missing.raw
    assert_status_one_line 2
    run_split "$VIMG" compare missing.raw a.qcow2
    assert_status_one_line 2
    run_split "$VIMG" compare -F qcow2 a.qcow2 a.raw
    assert_status_one_line 2
    run_split "$VIMG" compare -f vmdk a.qcow2 a.raw
    assert_status_one_line 2
    hold_image -f qcow2 a.qcow2
    run_split "$VIMG" compare a.qcow2 a.raw
    assert_status_one_line 2
    run_split "$VIMG" compare -U a.qcow2 a.raw
    [ "$status" -eq 0 ]
}

@test "compare: damaged metadata exits 3" {
    python3 "$VIMG_SRC/tests/data/mkbad.py" l1-entry-past-eof a.qcow2 bad.qcow2
    run_split "$VIMG" compare bad.qcow2 a.raw
    assert_status_one_line 3
    [[ $stderr == "vimg: compare: Sector allocation test failed for bad.qcow2"* ]]
    untouched
}
