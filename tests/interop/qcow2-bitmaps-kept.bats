#!/usr/bin/env bats
# Persistent bitmaps made by qemu-img through vimg writes: the enabled
# ones record the writes, the disabled ones do not change, a clean close
# leaves them consistent (no in-use flag) and qemu-img check clean; a
# crash after a write leaves them in use, as QEMU does, and they stay
# removable.  Reading, or opening read-write without writing, does not
# touch them.
load ../helpers

@test "a vimg write is tracked in qemu's bitmaps and check stays clean" {
    requires qemu-img qemu-io jq
    qemu-img create -q -f qcow2 b.qcow2 16M
    qemu-img bitmap --add b.qcow2 bm0
    qemu-img bitmap --add --disable -g 128k b.qcow2 bm1
    qemu-io -f qcow2 -c 'write -P 1 0 1M' b.qcow2 >/dev/null

    run "$VIMG_IO" -f qcow2 -c 'write -P 2 4M 64k' b.qcow2
    assert_success

    assert_qemu_check_clean b.qcow2
    run qemu-img info --output=json b.qcow2
    assert_success
    assert_equal "$(jq -c '[.["format-specific"].data.bitmaps[] | [.name, .flags]]' <<<"$output")" \
        '[["bm0",["auto"]],["bm1",[]]]'
    run "$VIMG" info --output=json b.qcow2
    assert_equal "$(jq -c '[.["format-specific"].data.bitmaps[] | [.name, .flags]]' <<<"$output")" \
        '[["bm0",["auto"]],["bm1",[]]]'
    # qemu's own writes and vimg's are both in bm0; bm1 saw none.
    run "$VIMG" map --bitmap bm0 --output=json b.qcow2
    assert_equal "$(jq -c '[.[] | select(.dirty) | [.start, .length]]' <<<"$output")" \
        '[[0,1048576],[4194304,65536]]'
    run "$VIMG" map --bitmap bm1 --output=json b.qcow2
    assert_equal "$(jq -c '[.[] | select(.dirty)]' <<<"$output")" '[]'
    run qemu-io -r -f qcow2 -c 'read -P 1 0 1M' -c 'read -P 2 4M 64k' b.qcow2
    assert_success
    refute_output --partial "Pattern verification failed"
}

@test "a crash after a vimg write leaves qemu's bitmaps in use, removable" {
    requires qemu-img jq
    qemu-img create -q -f qcow2 b.qcow2 16M
    qemu-img bitmap --add b.qcow2 bm0
    qemu-img bitmap --add --disable b.qcow2 bm1
    "$VIMG_IO" -f qcow2 -c 'write -P 2 64k 64k' -c flush -c 'sigraise 9' b.qcow2 \
        >/dev/null 2>&1 || true
    assert_qemu_check_clean b.qcow2
    run qemu-img info --output=json b.qcow2
    assert_equal "$(jq -c '[.["format-specific"].data.bitmaps[] | [.name, .flags]]' <<<"$output")" \
        '[["bm0",["in-use","auto"]],["bm1",["in-use"]]]'
    run "$VIMG" info --output=json b.qcow2
    assert_equal "$(jq -c '[.["format-specific"].data.bitmaps[] | [.name, .flags]]' <<<"$output")" \
        '[["bm0",["in-use","auto"]],["bm1",["in-use"]]]'
    # The next writer keeps them in use rather than trusting them.
    run "$VIMG_IO" -f qcow2 -c 'write -P 3 1M 64k' b.qcow2
    assert_success
    run qemu-img info --output=json b.qcow2
    assert_equal "$(jq -c '[.["format-specific"].data.bitmaps[] | .flags]' <<<"$output")" \
        '[["in-use","auto"],["in-use"]]'
    run qemu-img bitmap --remove b.qcow2 bm0
    assert_success
    assert_qemu_check_clean b.qcow2
    run qemu-io -r -f qcow2 -c 'read -P 2 64k 64k' -c 'read -P 3 1M 64k' b.qcow2
    assert_success
    refute_output --partial "Pattern verification failed"
}

@test "reading, or opening read-write without writing, does not touch the bitmaps" {
    requires qemu-img jq
    qemu-img create -q -f qcow2 b.qcow2 16M
    qemu-img bitmap --add b.qcow2 bm0
    cp b.qcow2 before.qcow2
    run "$VIMG_IO" -f qcow2 -c 'read 0 64k' b.qcow2
    assert_success
    "$VIMG_IO" -f qcow2 -c 'read 0 64k' -c 'sigraise 9' b.qcow2 >/dev/null 2>&1 || true
    run qemu-img info --output=json b.qcow2
    assert_equal "$(jq -c '.["format-specific"].data.bitmaps[0].flags' <<<"$output")" '["auto"]'
    cmp b.qcow2 before.qcow2
}
