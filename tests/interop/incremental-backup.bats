#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# Offline incremental backup with vimg convert --bitmap, and convert
# --bitmaps, with qemu as the oracle:
#  - a full backup, writes (by vimg-io and qemu-io), an increment, more
#    writes, a second increment: each increment over its backing chain is
#    identical (qemu-img compare) to a copy of the image taken at that
#    moment, holds exactly the clusters the bitmap marked dirty (qemu-img
#    map, depth 0), and passes qemu-img check; --clear-bitmap leaves the
#    bitmap clean and consistent (qemu-nbd -B).
#  - a failed increment (the NBD target fails its writes) leaves the
#    bitmap with every change.
#  - convert --bitmaps gives the target the same bitmaps, flags and dirty
#    extents as qemu-img convert --bitmaps.

load ../helpers
load dirty

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io qemu-nbd jq
}

# Extents [[start, length], ...] image $1 itself allocates (data or zero
# clusters at depth 0), neighbours merged.
own_extents() {
    qemu-img map --output=json "$1" |
        jq -c '[.[] | select(.depth == 0) | [.start, .length]] |
               reduce .[] as $e ([]; if length > 0 and
                     (.[-1][0] + .[-1][1]) == $e[0]
                 then .[-1][1] += $e[1] else . + [$e] end)'
}

# increment DISK PREVIOUS OUT: back up what DISK's bitmap "nightly" marks,
# checking the result against a copy of DISK taken first.
increment() {
    local disk=$1 prev=$2 out=$3 dirty
    cp "$disk" "moment-$out"
    dirty=$(qemu_dirty "$disk" nightly)
    [ "$dirty" != '[]' ]
    "$VIMG" convert --bitmap nightly --clear-bitmap -B "$prev" -F qcow2 \
        -O qcow2 "$disk" "$out"
    run qemu-img compare "$out" "moment-$out"
    assert_success
    assert_output "Images are identical."
    assert_equal "$(own_extents "$out")" "$dirty"
    assert_qemu_check_clean "$out"
    assert_qemu_check_clean "$disk"
    [ "$(qemu_dirty "$disk" nightly)" = '[]' ]
    run qemu-img info --output=json "$disk"
    assert_equal "$(jq -c '[.["format-specific"].data.bitmaps[].flags]' <<<"$output")" \
        '[["auto"]]'
}

@test "full backup, two increments: each equals its moment, holds only dirty clusters" {
    qemu-img create -q -f qcow2 disk.qcow2 64M
    qemu-io -c 'write -P 1 0 8M' -c 'write -P 2 30M 1M' disk.qcow2 >/dev/null
    "$VIMG" bitmap --add disk.qcow2 nightly
    "$VIMG" convert -O qcow2 disk.qcow2 full.qcow2
    run qemu-img compare full.qcow2 disk.qcow2
    assert_success

    # Writes by vimg: data, zeroes over data, a partial granule, a discard.
    "$VIMG_IO" -c 'write -P 3 1M 64k' -c 'write -z 30M 128k' \
        -c 'write -P 4 40M 100k' -c 'discard 4M 128k' disk.qcow2 >/dev/null
    increment disk.qcow2 full.qcow2 inc1.qcow2

    # Writes by qemu, which keeps the bitmap up to date too.
    qemu-io -c 'write -P 5 50M 4k' -c 'write -P 6 0 512' disk.qcow2 >/dev/null
    increment disk.qcow2 inc1.qcow2 inc2.qcow2

    # The whole chain still reads as the disk does now.
    run qemu-img compare inc2.qcow2 disk.qcow2
    assert_success
    run qemu-img info --backing-chain --output=json inc2.qcow2
    assert_equal "$(jq -c '[.[].filename]' <<<"$output")" \
        '["inc2.qcow2","inc1.qcow2","full.qcow2"]'
}

@test "an increment with nothing dirty is empty; without --clear-bitmap the bitmap stays" {
    qemu-img create -q -f qcow2 disk.qcow2 16M
    "$VIMG" bitmap --add disk.qcow2 nightly
    "$VIMG" convert -O qcow2 disk.qcow2 full.qcow2
    "$VIMG" convert --bitmap nightly -B full.qcow2 -F qcow2 -O qcow2 \
        disk.qcow2 empty.qcow2
    assert_equal "$(own_extents empty.qcow2)" '[]'
    "$VIMG_IO" -c 'write -P 7 2M 64k' disk.qcow2 >/dev/null
    "$VIMG" convert --bitmap nightly -B full.qcow2 -F qcow2 -O qcow2 \
        disk.qcow2 inc.qcow2
    assert_equal "$(own_extents inc.qcow2)" '[[2097152,65536]]'
    [ "$(qemu_dirty disk.qcow2 nightly)" = '[[2097152,65536]]' ]
    run qemu-img compare inc.qcow2 disk.qcow2
    assert_success
}

@test "a failed increment leaves every change in the bitmap" {
    requires nbdkit
    qemu-img create -q -f qcow2 disk.qcow2 16M
    "$VIMG" bitmap --add disk.qcow2 nightly
    "$VIMG_IO" -c 'write -P 7 2M 64k' -c 'write -P 8 9M 1M' disk.qcow2 >/dev/null
    cp disk.qcow2 before.qcow2
    # An NBD target whose writes all fail with EIO.
    start_bg nbdkit -f -U "$T/err.sock" --filter=error memory 16M \
        error=EIO error-pwrite-rate=100%
    for _ in $(seq 100); do [ -S "$T/err.sock" ] && break; sleep 0.05; done
    run_split "$VIMG" convert -n --bitmap nightly --clear-bitmap disk.qcow2 \
        "nbd+unix:///?socket=$T/err.sock"
    [ "$status" -eq 1 ]
    assert_one_line_error
    [[ $stderr == *"Input/output error"* ]]
    [ "$(qemu_dirty disk.qcow2 nightly)" = '[[2097152,65536],[9437184,1048576]]' ]
    cmp disk.qcow2 before.qcow2
    # A target that cannot be created: the same.
    run_split "$VIMG" convert --bitmap nightly --clear-bitmap -O qcow2 \
        disk.qcow2 "$T/no/such/dir/inc.qcow2"
    [ "$status" -eq 1 ]
    assert_one_line_error
    cmp disk.qcow2 before.qcow2
}

@test "convert --bitmaps copies what qemu-img convert --bitmaps copies" {
    qemu-img create -q -f qcow2 src.qcow2 20M
    qemu-img bitmap --add src.qcow2 a
    qemu-img bitmap --add -g 512k src.qcow2 b
    qemu-img bitmap --add -g 4k --disable src.qcow2 c
    qemu-io -c 'write -P 1 0 70k' -c 'write 5M 1M' -c 'write -z 19M 4k' \
        src.qcow2 >/dev/null
    qemu-img bitmap --disable src.qcow2 b
    qemu-io -c 'write 12M 64k' src.qcow2 >/dev/null
    qemu-img bitmap --merge a src.qcow2 c
    qemu-img convert --bitmaps -O qcow2 src.qcow2 q.qcow2
    "$VIMG" convert --bitmaps -O qcow2 src.qcow2 v.qcow2
    assert_qemu_check_clean v.qcow2
    run qemu-img compare v.qcow2 q.qcow2
    assert_success
    bitmaps_of() {
        qemu-img info --output=json "$1" |
            jq -c '.["format-specific"].data.bitmaps'
    }
    assert_equal "$(bitmaps_of v.qcow2)" "$(bitmaps_of q.qcow2)"
    for b in a b c; do
        want=$(qemu_dirty q.qcow2 $b)
        [ "$want" != '[]' ]
        assert_equal "$(qemu_dirty v.qcow2 $b)" "$want"
    done
    # Into an existing target (-n), as qemu-img does.
    qemu-img create -q -f qcow2 n.qcow2 20M
    "$VIMG" convert -n --bitmaps -O qcow2 src.qcow2 n.qcow2
    assert_equal "$(bitmaps_of n.qcow2)" "$(bitmaps_of q.qcow2)"
    assert_equal "$(qemu_dirty n.qcow2 c)" "$(qemu_dirty q.qcow2 c)"
}

@test "convert --bitmaps: inconsistent bitmaps stop it or are skipped, as with qemu-img" {
    qemu-img create -q -f qcow2 src.qcow2 4M
    qemu-img bitmap --add src.qcow2 good
    "$VIMG_IO" -c 'write 0 64k' -c flush -c 'sigraise 9' src.qcow2 \
        >/dev/null 2>&1 || true
    qemu-img bitmap --add src.qcow2 later
    run_split "$VIMG" convert --bitmaps -O qcow2 src.qcow2 v.qcow2
    [ "$status" -eq 1 ]
    [[ $stderr == *"Cannot copy inconsistent bitmap 'good'"* ]]
    [ ! -e v.qcow2 ]
    run_split "$VIMG" convert --bitmaps --skip-broken-bitmaps -O qcow2 \
        src.qcow2 v.qcow2
    [ "$status" -eq 0 ]
    [[ $stderr == *"warning: Skipping inconsistent bitmap 'good'"* ]]
    qemu-img convert --bitmaps --skip-broken-bitmaps -O qcow2 src.qcow2 \
        q.qcow2 2>/dev/null
    assert_equal "$(qemu-img info --output=json v.qcow2 | jq -c '.["format-specific"].data.bitmaps')" \
        "$(qemu-img info --output=json q.qcow2 | jq -c '.["format-specific"].data.bitmaps')"
    assert_qemu_check_clean v.qcow2
}
