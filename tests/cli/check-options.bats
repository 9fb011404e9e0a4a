#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg check: options, exit codes and bad input (missing file, wrong
# format, raw images, bad option values).  Images are made with qemu-img
# and damaged with tests/data/mkdamage.py.

load ../helpers

MKDAMAGE="python3 $VIMG_SRC/tests/data/mkdamage.py"

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io python3
    qemu-img create -q -f qcow2 good.qcow2 8M
    qemu-io -c "write -P 0x11 0 192k" -c "write 1M 64k" good.qcow2 >/dev/null
}

@test "exit codes: 0 clean, 3 leaks, 2 corruptions, 63 raw" {
    run_split "$VIMG" check good.qcow2
    [ "$status" -eq 0 ]
    [ -z "$stderr" ]
    $MKDAMAGE leak good.qcow2 leak.qcow2
    run_split "$VIMG" check leak.qcow2
    [ "$status" -eq 3 ]
    $MKDAMAGE refcount-zero good.qcow2 zero.qcow2
    run_split "$VIMG" check zero.qcow2
    [ "$status" -eq 2 ]
    $MKDAMAGE leak-corrupt good.qcow2 both.qcow2
    run_split "$VIMG" check both.qcow2
    [ "$status" -eq 2 ]
    qemu-img create -q -f raw r.img 1M
    run_split "$VIMG" check r.img
    [ "$status" -eq 63 ]
    [ "$stderr" = "vimg: check: r.img: This image format does not support checks" ]
}

@test "-f qcow2, -f raw and --image-opts" {
    run_split "$VIMG" check -f qcow2 good.qcow2
    [ "$status" -eq 0 ]
    run_split "$VIMG" check -f raw good.qcow2
    [ "$status" -eq 63 ]
    run_split "$VIMG" check --image-opts \
        driver=qcow2,file.driver=file,file.filename=good.qcow2
    [ "$status" -eq 0 ]
    assert_line -p "No errors were found on the image."
    run_split "$VIMG" check --image-opts -f qcow2 good.qcow2
    assert_one_line_error
}

@test "-r leaks fixes leaks only; -r all fixes corruptions" {
    $MKDAMAGE leak-corrupt good.qcow2 d.qcow2
    run_split "$VIMG" check -r leaks d.qcow2
    [ "$status" -eq 1 ] # the refcount structure needs a rebuild
    run_split "$VIMG" check d.qcow2
    [ "$status" -eq 2 ]
    run_split "$VIMG" check -r all d.qcow2
    [ "$status" -eq 0 ]
    run_split "$VIMG" check d.qcow2
    [ "$status" -eq 0 ]
    $MKDAMAGE leak good.qcow2 l.qcow2
    run_split "$VIMG" check --repair=leaks l.qcow2
    [ "$status" -eq 0 ]
    run_split "$VIMG" check l.qcow2
    [ "$status" -eq 0 ]
    run qemu-img check l.qcow2
    assert_success
}

@test "a plain check never writes, even to a dirty or corrupt image" {
    local c sum
    for c in dirty corrupt leak refcount-zero; do
        $MKDAMAGE $c good.qcow2 d.qcow2
        sum=$(md5sum <d.qcow2)
        "$VIMG" check d.qcow2 >/dev/null 2>&1 || true
        "$VIMG" check -U d.qcow2 >/dev/null 2>&1 || true
        [ "$(md5sum <d.qcow2)" = "$sum" ] || { echo "$c changed"; false; }
    done
}

@test "a corrupt image opens for -r all only" {
    $MKDAMAGE corrupt good.qcow2 d.qcow2
    run_split "$VIMG_IO" -c "write 0 4k" d.qcow2
    [ "$status" -ne 0 ]
    run_split "$VIMG" check -r all d.qcow2
    [ "$status" -eq 0 ]
    run_split "$VIMG_IO" -c "write 0 4k" d.qcow2
    [ "$status" -eq 0 ]
}

@test "-q prints nothing on stdout but keeps the exit code" {
    $MKDAMAGE leak good.qcow2 l.qcow2
    run_split "$VIMG" check -q l.qcow2
    [ "$status" -eq 3 ]
    [ -z "$output" ]
    run_split "$VIMG" check -q --output=json l.qcow2
    [ "$status" -eq 3 ]
    [ -z "$output" ]
}

@test "-U: check while another process writes the image" {
    hold_image good.qcow2
    run_split "$VIMG" check good.qcow2
    assert_one_line_error
    [[ $stderr == *"lock"* ]]
    run_split "$VIMG" check -U good.qcow2
    [ "$status" -eq 0 ]
}

@test "bad input: one line, exit 1" {
    run_split "$VIMG" check missing.qcow2
    assert_one_line_error
    run_split "$VIMG" check -r some good.qcow2
    assert_one_line_error
    run_split "$VIMG" check --output=xml good.qcow2
    assert_one_line_error
    run_split "$VIMG" check -U -r all good.qcow2
    assert_one_line_error
    run_split "$VIMG" check
    assert_one_line_error
    run_split "$VIMG" check good.qcow2 good.qcow2
    assert_one_line_error
    run_split "$VIMG" check --bogus good.qcow2
    assert_one_line_error
    python3 "$VIMG_SRC/tests/data/mkbad.py" bad-magic good.qcow2 bad.qcow2
    run_split "$VIMG" check -f qcow2 bad.qcow2
    assert_one_line_error
    printf 'hello' >tiny.qcow2
    run_split "$VIMG" check -f qcow2 tiny.qcow2
    assert_one_line_error
}

@test "--help" {
    run "$VIMG" check --help
    assert_success
    assert_output --partial "Usage: vimg check"
    assert_output --partial "-r leaks"
}
