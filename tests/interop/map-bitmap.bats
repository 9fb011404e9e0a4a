#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg map --bitmap against qemu as the oracle: qemu-io dirties an
# enabled bitmap offline (saved on its clean close), and the dirty
# extents vimg lists are exactly those qemu-nbd -B exports (read with
# qemu-img map over NBD with x-dirty-bitmap, where dirty reads as
# "data": false), for several granularities and image sizes that are not
# a multiple of the granularity.

load ../helpers
load dirty

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io qemu-nbd jq
}

# The writes: first and last sectors, granule-crossing, adjacent, and a
# large run; offsets are clipped into SIZE by the caller.
writes_for() {
    local size=$1 a
    for a in "0 512" "70k 8k" "130k 512" "131k 1k" "1M 300k" \
        "2047k 2k" "$((size / 2)) 64k" "$((size - 4096)) 4k" \
        "$((size - 512)) 512"; do
        set -- $a
        printf -- "-c\nwrite %s %s\n" "$1" "$2"
    done
}

@test "map --bitmap dirty extents equal qemu-nbd -B's, all granularities" {
    local g size img args n=0
    for g in 4k 64k 1M; do
        for size in 16M $((5 * 1048576 + 3 * 512)) $((3 * 1048576 + 65536 + 512)); do
            img="i$n.qcow2"
            n=$((n + 1))
            qemu-img create -q -f qcow2 "$img" "$size"
            qemu-img bitmap --add -g "$g" "$img" b
            qemu-img bitmap --add -g "$g" "$img" clean
            qemu-img bitmap --disable "$img" clean
            mapfile -t args < <(writes_for "$(qemu-img info --output=json "$img" |
                jq '.["virtual-size"]')")
            qemu-io "${args[@]}" "$img" >/dev/null
            want=$(qemu_dirty "$img" b)
            got=$(vimg_dirty "$img" b)
            [ "$want" = "$got" ] ||
                { echo "g=$g size=$size: qemu $want vimg $got" >&2; false; }
            [ "$want" != '[]' ]
            [ "$(qemu_dirty "$img" clean)" = '[]' ]
            [ "$(vimg_dirty "$img" clean)" = '[]' ]
            # The extents cover the whole image.
            "$VIMG" map --bitmap b --output=json "$img" |
                jq -e --argjson s "$(qemu-img info --output=json "$img" |
                    jq '.["virtual-size"]')" \
                    '(map(.length) | add) == $s'
        done
    done
}

@test "map --bitmap after vimg bitmap --merge agrees with qemu-nbd -B" {
    qemu-img create -q -f qcow2 m.qcow2 $((7 * 1048576 + 512))
    qemu-img bitmap --add -g 4k m.qcow2 src
    qemu-io -c 'write 100k 4k' -c 'write 3M 1M' -c 'write 7M 512' \
        m.qcow2 >/dev/null
    "$VIMG" bitmap --add -g 1M --disable m.qcow2 coarse
    "$VIMG" bitmap --merge src m.qcow2 coarse
    for b in src coarse; do
        [ "$(qemu_dirty m.qcow2 $b)" = "$(vimg_dirty m.qcow2 $b)" ]
    done
    [ "$(vimg_dirty m.qcow2 coarse)" = '[[0,1048576],[3145728,1048576],[7340032,512]]' ]
}
