#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg map --bitmap NAME: options, JSON and human shapes, merging of
# neighbouring extents, the --start-offset/--max-length window, and
# errors (one line, exit 1, the image untouched).  Bitmap data is made
# by qemu-io, which records its writes in an enabled bitmap.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq
    qemu-img create -q -f qcow2 a.qcow2 10M
    qemu-img bitmap --add -g 64k a.qcow2 b
    qemu-img bitmap --add -g 4k a.qcow2 f
    qemu-img bitmap --add a.qcow2 empty
    qemu-io -c 'write 1M 100k' -c 'write 5M 4k' -c 'write 8M 4k' \
        -c 'write 8196k 4k' a.qcow2 >/dev/null
    qemu-img bitmap --disable a.qcow2 b
    qemu-img bitmap --disable a.qcow2 f
    qemu-img bitmap --clear a.qcow2 empty
    SUM=$(sha256sum a.qcow2)
}

untouched() { [ "$(sha256sum a.qcow2)" = "$SUM" ]; }

# Extents as [start, length, dirty] lines.
triples() { jq -c '[.[] | [.start, .length, .dirty]]'; }

@test "map --bitmap: --help documents it" {
    run_split "$VIMG" map --help
    [ "$status" -eq 0 ]
    [[ $output == *"--bitmap NAME"* ]]
}

@test "map --bitmap --output=json: exact extents, map's array style" {
    run_split "$VIMG" map --bitmap b --output=json a.qcow2
    [ "$status" -eq 0 ]
    [ "${lines[0]}" = '[{ "start": 0, "length": 1048576, "dirty": false},' ]
    [ "${lines[1]}" = '{ "start": 1048576, "length": 131072, "dirty": true},' ]
    [ "${lines[-1]}" = '{ "start": 8454144, "length": 2031616, "dirty": false}]' ]
    [ "$(triples <<<"$output")" = '[[0,1048576,false],[1048576,131072,true],[1179648,4063232,false],[5242880,65536,true],[5308416,3080192,false],[8388608,65536,true],[8454144,2031616,false]]' ]
    # Contiguous, covering the image, alternating kinds.
    jq -e 'reduce .[] as $e ({end: 0, d: null};
              if $e.start == .end and $e.dirty != .d and $e.length > 0
              then {end: ($e.start + $e.length), d: $e.dirty}
              else error("bad extent \($e)") end) | .end == 10485760' \
        <<<"$output"
    untouched
}

@test "map --bitmap: adjacent dirty granules merge into one extent" {
    # 'write 8M 4k' and 'write 8196k 4k' are neighbours: one extent at 4k.
    run_split "$VIMG" map --bitmap f --output=json a.qcow2
    [ "$status" -eq 0 ]
    [ "$(jq -c '[.[] | select(.dirty) | [.start, .length]]' <<<"$output")" = \
        '[[1048576,102400],[5242880,4096],[8388608,8192]]' ]
    # No two neighbours share a kind.
    jq -e '[range(1; length) as $i | .[$i].dirty != .[$i - 1].dirty] | all' \
        <<<"$output"
    qemu-img bitmap --add -g 4k a.qcow2 g
    qemu-io -c 'write 0 4k' -c 'write 4k 4k' -c 'write 8k 8k' \
        -c 'write 16k 512' a.qcow2 >/dev/null
    run_split "$VIMG" map --bitmap g --output=json a.qcow2
    [ "$status" -eq 0 ]
    [ "$(triples <<<"$output")" = '[[0,20480,true],[20480,10465280,false]]' ]
}

@test "map --bitmap: human output is an Offset/Length/Dirty table" {
    run_split "$VIMG" map --bitmap b a.qcow2
    [ "$status" -eq 0 ]
    [ "${lines[0]}" = "Offset          Length          Dirty" ]
    [ "${lines[1]}" = "0               0x100000        no" ]
    [ "${lines[2]}" = "0x100000        0x20000         yes" ]
    [ "${lines[-1]}" = "0x810000        0x1f0000        no" ]
    [ "${#lines[@]}" -eq 8 ]
    run_split "$VIMG" map --bitmap b --output=human a.qcow2
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 8 ]
}

@test "map --bitmap: an empty bitmap is one clean extent" {
    run_split "$VIMG" map --bitmap empty --output=json a.qcow2
    [ "$status" -eq 0 ]
    [ "$output" = '[{ "start": 0, "length": 10485760, "dirty": false}]' ]
}

@test "map --bitmap: --start-offset and --max-length clip the extents" {
    run_split "$VIMG" map --bitmap b --output=json --start-offset 1100k \
        --max-length 2M a.qcow2
    [ "$status" -eq 0 ]
    [ "$(triples <<<"$output")" = '[[1126400,53248,true],[1179648,2043904,false]]' ]
    run_split "$VIMG" map --bitmap b --output=json -s 5M -l 4k a.qcow2
    [ "$status" -eq 0 ]
    [ "$output" = '[{ "start": 5242880, "length": 4096, "dirty": true}]' ]
    run_split "$VIMG" map --bitmap b --output=json -s 9M -l 100M a.qcow2
    [ "$status" -eq 0 ]
    [ "$(triples <<<"$output")" = '[[9437184,1048576,false]]' ]
    # Empty windows: an empty list, an empty table.
    run_split "$VIMG" map --bitmap b --output=json -l 0 a.qcow2
    [ "$status" -eq 0 ]
    [ "$output" = '[]' ]
    run_split "$VIMG" map --bitmap b --output=json -s 10M a.qcow2
    [ "$output" = '[]' ]
    run_split "$VIMG" map --bitmap b -s 100M a.qcow2
    [ "$status" -eq 0 ]
    [ "$output" = "Offset          Length          Dirty" ]
}

@test "map --bitmap: an image size not a multiple of the granularity" {
    qemu-img create -q -f qcow2 odd.qcow2 $((3 * 1048576 + 1536))
    qemu-img bitmap --add -g 1M odd.qcow2 m
    qemu-io -c 'write 3M 512' odd.qcow2 >/dev/null
    run_split "$VIMG" map --bitmap m --output=json odd.qcow2
    [ "$status" -eq 0 ]
    [ "$(triples <<<"$output")" = '[[0,3145728,false],[3145728,1536,true]]' ]
}

@test "map --bitmap: missing bitmap, raw image, bad usage" {
    run_split "$VIMG" map --bitmap nope a.qcow2
    assert_one_line_error
    [ "$stderr" = "vimg: map: Dirty bitmap 'nope' not found" ]
    run_split "$VIMG" map --bitmap nope --output=json a.qcow2
    assert_one_line_error
    [ -z "$output" ]
    truncate -s 1M r.raw
    run_split "$VIMG" map --bitmap b -f raw r.raw
    assert_one_line_error
    [[ $stderr == "vimg: map: "*"'b' not found"*raw* ]]
    run_split "$VIMG" map a.qcow2 --bitmap
    assert_one_line_error
    run_split "$VIMG" map --bitmap b --output=xml a.qcow2
    assert_one_line_error
    run_split "$VIMG" map --bitmap b -s foo a.qcow2
    assert_one_line_error
    untouched
}

@test "map --bitmap: a bitmap left in use by a crash is refused" {
    qemu-img bitmap --add a.qcow2 live
    qemu-io -c 'write 0 64k' -c 'sigraise 9' a.qcow2 >/dev/null 2>&1 || true
    SUM=$(sha256sum a.qcow2)
    run_split "$VIMG" map --bitmap live a.qcow2
    assert_one_line_error
    [ "$stderr" = "vimg: map: Bitmap 'live' is inconsistent and cannot be used" ]
    run_split "$VIMG" map --bitmap live --output=json -U a.qcow2
    assert_one_line_error
    untouched
}
