#!/usr/bin/env bats
# Persistent bitmaps made by qemu-img survive a vimg write: vimg does not
# track writes in bitmaps yet (the bitmaps issue), so it marks them
# in-use (inconsistent) before its first write, as QEMU does for images
# it opens read-write, and keeps the extension and its clusters valid.
load ../helpers

@test "a vimg write marks qemu's bitmaps in-use and check stays clean" {
    requires qemu-img qemu-io jq
    qemu-img create -q -f qcow2 b.qcow2 16M
    qemu-img bitmap --add b.qcow2 bm0
    qemu-img bitmap --add --disable -g 128k b.qcow2 bm1
    qemu-io -f qcow2 -c 'write -P 1 0 1M' b.qcow2 >/dev/null

    run "$VIMG_IO" -f qcow2 -c 'write -P 2 64k 64k' b.qcow2
    assert_success

    assert_qemu_check_clean b.qcow2
    run qemu-img info --output=json b.qcow2
    assert_success
    assert_equal "$(jq -c '[.["format-specific"].data.bitmaps[] | [.name, .flags]]' <<<"$output")" \
        '[["bm0",["in-use","auto"]],["bm1",["in-use"]]]'
    # vimg reports the same.
    run "$VIMG" info --output=json b.qcow2
    assert_equal "$(jq -c '[.["format-specific"].data.bitmaps[] | [.name, .flags]]' <<<"$output")" \
        '[["bm0",["in-use","auto"]],["bm1",["in-use"]]]'
    # An inconsistent bitmap can still be removed by qemu-img.
    run qemu-img bitmap --remove b.qcow2 bm0
    assert_success
    assert_qemu_check_clean b.qcow2
    run qemu-io -r -f qcow2 -c 'read -P 2 64k 64k' -c 'read -P 1 128k 64k' b.qcow2
    assert_success
    refute_output --partial "Pattern verification failed"
}

@test "reading does not touch the bitmaps" {
    requires qemu-img jq
    qemu-img create -q -f qcow2 b.qcow2 16M
    qemu-img bitmap --add b.qcow2 bm0
    run "$VIMG_IO" -f qcow2 -c 'read 0 64k' b.qcow2
    assert_success
    run qemu-img info --output=json b.qcow2
    assert_equal "$(jq -c '.["format-specific"].data.bitmaps[0].flags' <<<"$output")" '["auto"]'
}
