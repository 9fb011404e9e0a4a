#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg bitmap against qemu-img as the oracle: the same operations give
# the same bitmaps in `qemu-img info`, `qemu-img check` stays clean, each
# tool handles the other's bitmaps, and bitmap data (dirtied by qemu-io,
# merged by vimg) reads back through qemu-nbd -B.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq
}

bitmaps() {
    qemu-img info --output=json "$1" |
        jq -c '[.["format-specific"].data.bitmaps // [] | .[] |
                [.name, .granularity, .flags]]'
}

@test "each operation matches qemu-img bitmap, check stays clean" {
    qemu-img create -q -f qcow2 v.qcow2 16M
    qemu-img create -q -f qcow2 q.qcow2 16M
    qemu-img create -q -f qcow2 other.qcow2 16M
    qemu-img bitmap --add other.qcow2 o
    qemu-io -c 'write 3M 64k' other.qcow2 >/dev/null
    while read -r args; do
        name=${args##* }
        set -- ${args% *}
        "$VIMG" bitmap "$@" v.qcow2 "$name" ||
            { echo "vimg bitmap $args" >&2; false; }
        qemu-img bitmap "$@" q.qcow2 "$name"
        assert_qemu_check_clean v.qcow2
        [ "$(bitmaps v.qcow2)" = "$(bitmaps q.qcow2)" ] ||
            { echo "after $args: $(bitmaps v.qcow2) vs $(bitmaps q.qcow2)" >&2; false; }
    done <<'LIST'
--add b1
--add -g 512 --disable b2
--add -g 2M b3
--disable b1
--enable b2
--merge b2 b1
--merge o -b other.qcow2 -F qcow2 b3
--clear b1
--remove b3
--remove b1
--remove b2
LIST
    [ "$(bitmaps v.qcow2)" = '[]' ]
    # With no bitmap left, the extension and autoclear bit 0 are gone.
    run qemu-img info --output=json v.qcow2
    [[ $output != *bitmaps* ]]
    [ "$(od -An -tx1 -j 95 -N 1 v.qcow2 | tr -d ' ')" = 00 ]
}

@test "qemu-img removes and clears what vimg made, and vice versa" {
    qemu-img create -q -f qcow2 a.qcow2 16M
    "$VIMG" bitmap --add a.qcow2 x
    "$VIMG" bitmap --add -g 4k a.qcow2 y
    qemu-io -c 'write 1M 1M' a.qcow2 >/dev/null
    "$VIMG" bitmap --merge y a.qcow2 x
    qemu-img bitmap --clear a.qcow2 x
    assert_qemu_check_clean a.qcow2
    qemu-img bitmap --remove a.qcow2 y
    assert_qemu_check_clean a.qcow2
    qemu-img bitmap --add a.qcow2 z
    qemu-io -c 'write 0 64k' a.qcow2 >/dev/null
    "$VIMG" bitmap --remove a.qcow2 z
    "$VIMG" bitmap --clear a.qcow2 x
    assert_qemu_check_clean a.qcow2
    [ "$(bitmaps a.qcow2)" = '[["x",65536,["auto"]]]' ]
    "$VIMG" bitmap --remove a.qcow2 x
    assert_qemu_check_clean a.qcow2
    [ "$(bitmaps a.qcow2)" = '[]' ]
}

# Dirty extents of bitmap NAME of IMG, read through qemu-nbd -B.
dirty_map() {
    local sock="$T/nbd.sock" pid out i
    qemu-nbd -r -k "$sock" -f qcow2 -B "$2" "$1" &
    pid=$!
    BG_PIDS+=("$pid")
    for i in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
    out=$(qemu-img map --output=json --image-opts \
        "driver=nbd,server.type=unix,server.path=$sock,x-dirty-bitmap=qemu:dirty-bitmap:$2")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -f "$sock"
    # In this mapping, dirty areas read as "data": false.
    jq -c '[.[] | select(.data == false) | [.start, .length]]' <<<"$out"
}

@test "bitmap data merged by vimg reads back through qemu-nbd -B" {
    requires qemu-nbd
    qemu-img create -q -f qcow2 d.qcow2 16M
    qemu-img bitmap --add d.qcow2 src
    # qemu-io records its writes in the enabled bitmap and stores it.
    qemu-io -c 'write 1M 128k' -c 'write 5M 4k' -c 'write 15M 1M' \
        d.qcow2 >/dev/null
    [ "$(dirty_map d.qcow2 src)" = '[[1048576,131072],[5242880,65536],[15728640,1048576]]' ]
    "$VIMG" bitmap --add -g 4k --disable d.qcow2 fine
    "$VIMG" bitmap --add -g 1M --disable d.qcow2 coarse
    "$VIMG" bitmap --merge src --merge src d.qcow2 fine
    "$VIMG" bitmap --merge fine d.qcow2 coarse
    assert_qemu_check_clean d.qcow2
    [ "$(dirty_map d.qcow2 fine)" = '[[1048576,131072],[5242880,65536],[15728640,1048576]]' ]
    [ "$(dirty_map d.qcow2 coarse)" = '[[1048576,1048576],[5242880,1048576],[15728640,1048576]]' ]
    # An all-dirty bitmap (all-one clusters) is accepted by qemu too.
    qemu-img create -q -f qcow2 -o cluster_size=512 f.qcow2 8M
    qemu-img bitmap --add -g 512 f.qcow2 all
    qemu-io -c 'write 0 8M' f.qcow2 >/dev/null
    "$VIMG" bitmap --add -g 512 f.qcow2 copy
    "$VIMG" bitmap --merge all f.qcow2 copy
    assert_qemu_check_clean f.qcow2
    [ "$(dirty_map f.qcow2 copy)" = '[[0,8388608]]' ]
    # qemu-img merges vimg's bitmap data the same way.
    qemu-img bitmap --add -g 64k d.qcow2 q
    qemu-img bitmap --merge fine d.qcow2 q
    [ "$(dirty_map d.qcow2 q)" = '[[1048576,131072],[5242880,65536],[15728640,1048576]]' ]
    "$VIMG" bitmap --clear d.qcow2 fine
    assert_qemu_check_clean d.qcow2
    [ "$(dirty_map d.qcow2 fine)" = '[]' ]
}

@test "a bitmap left in use by a killed qemu-io is only removable" {
    qemu-img create -q -f qcow2 k.qcow2 16M
    "$VIMG" bitmap --add k.qcow2 b
    qemu-io -c 'write 0 64k' -c 'sigraise 9' k.qcow2 >/dev/null 2>&1 || true
    [ "$(bitmaps k.qcow2)" = '[["b",65536,["in-use","auto"]]]' ]
    run_split "$VIMG" bitmap --clear k.qcow2 b
    [ "$status" -eq 1 ]
    [[ $stderr == *"Bitmap 'b' is inconsistent and cannot be used"* ]]
    "$VIMG" bitmap --remove k.qcow2 b
    assert_qemu_check_clean k.qcow2
    [ "$(bitmaps k.qcow2)" = '[]' ]
}
