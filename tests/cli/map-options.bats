#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg map: options, output shapes, exit codes and bad input (one-line
# errors, exit 1, the image untouched).

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq python3
    qemu-img create -q -f qcow2 a.qcow2 64M
    qemu-io -c "write -P 1 0 64k" -c "write -z 1M 64k" -c "write -P 2 3M 1M" \
        a.qcow2 >/dev/null
    SUM=$(sha256sum a.qcow2)
}

untouched() { [ "$(sha256sum a.qcow2)" = "$SUM" ]; }

@test "map --help" {
    run_split "$VIMG" map --help
    [ "$status" -eq 0 ]
    [[ $output == *"--start-offset"* ]]
}

@test "map --output=json: contiguous extents covering the image" {
    run_split "$VIMG" map --output=json a.qcow2
    [ "$status" -eq 0 ]
    [ "$(jq 'length' <<<"$output")" -ge 4 ]
    # Each extent starts where the previous one ended; the last one ends
    # at the virtual size.
    jq -e 'reduce .[] as $e (0; if $e.start == . then . + $e.length
                                else error("gap") end) == 67108864' <<<"$output"
    jq -e '.[0] == {"start":0,"length":65536,"depth":0,"present":true,
                    "zero":false,"data":true,"offset":327680}' <<<"$output"
    untouched
}

@test "map: human output lists data areas only" {
    run_split "$VIMG" map a.qcow2
    [ "$status" -eq 0 ]
    [ "${lines[0]}" = "Offset          Length          Mapped to       File" ]
    [ "${lines[1]}" = "0               0x10000         0x50000         a.qcow2" ]
    [ "${#lines[@]}" -eq 3 ]
    [[ ${lines[2]} == 0x300000* ]]
}

@test "map: --start-offset, --max-length, -s, -l" {
    run_split "$VIMG" map --output=json --start-offset 3M --max-length 512k a.qcow2
    [ "$status" -eq 0 ]
    jq -e '. == [{"start":3145728,"length":524288,"depth":0,"present":true,
                  "zero":false,"data":true,"offset":393216}]' <<<"$output"
    run_split "$VIMG" map --output=json -s 100M a.qcow2
    [ "$status" -eq 0 ]
    jq -e '.[0].length == 0 and .[0].start == 104857600' <<<"$output"
    run_split "$VIMG" map --output=json -l 0 a.qcow2
    [ "$status" -eq 0 ]
    jq -e 'length == 1 and .[0].length == 0' <<<"$output"
}

@test "map: compressed data fails in human form only" {
    qemu-img convert -c -O qcow2 a.qcow2 c.qcow2
    run_split "$VIMG" map c.qcow2
    assert_one_line_error
    [[ $stderr == "vimg: map: File contains external, encrypted or compressed clusters." ]]
    run_split "$VIMG" map --output=json c.qcow2
    [ "$status" -eq 0 ]
    jq -e '.[0].data and (.[0] | has("offset") | not)' <<<"$output"
}

@test "map: bad options and arguments" {
    run_split "$VIMG" map --output=xml a.qcow2
    assert_one_line_error
    run_split "$VIMG" map --start-offset foo a.qcow2
    assert_one_line_error
    run_split "$VIMG" map --max-length -5 a.qcow2
    assert_one_line_error
    run_split "$VIMG" map
    assert_one_line_error
    run_split "$VIMG" map a.qcow2 a.qcow2
    assert_one_line_error
    run_split "$VIMG" map --bogus a.qcow2
    assert_one_line_error
    run_split "$VIMG" map -f qcow2 --image-opts driver=qcow2,file.filename=a.qcow2
    assert_one_line_error
    untouched
}

@test "map: missing files, wrong formats, damaged images" {
    run_split "$VIMG" map missing.qcow2
    assert_one_line_error
    [[ $stderr == *missing.qcow2* ]]
    truncate -s 1M r.raw
    run_split "$VIMG" map -f qcow2 r.raw
    assert_one_line_error
    run_split "$VIMG" map -f vmdk a.qcow2
    assert_one_line_error
    # a.qcow2 as raw: the bytes of the file.
    run_split "$VIMG" map -f raw --output=json a.qcow2
    [ "$status" -eq 0 ]
    python3 "$VIMG_SRC/tests/data/mkbad.py" l1-entry-past-eof a.qcow2 bad.qcow2
    run_split "$VIMG" map --output=json bad.qcow2
    assert_one_line_error
    [[ $stderr == "vimg: map: Could not read file metadata: "* ]]
    untouched
}

@test "map: a missing backing file fails; locks and -U" {
    qemu-img create -q -f qcow2 -b gone.qcow2 -F qcow2 -u top.qcow2 64M
    run_split "$VIMG" map top.qcow2
    assert_one_line_error
    hold_image -f qcow2 a.qcow2
    run_split "$VIMG" map a.qcow2
    assert_one_line_error
    [[ $stderr == *'"write" lock'* ]]
    run_split "$VIMG" map -U --output=json a.qcow2
    [ "$status" -eq 0 ]
}
