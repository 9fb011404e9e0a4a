#!/usr/bin/env bats
# kill -9 during vimg convert at random moments: the source is untouched,
# the half-written target still opens and checks clean or with leaks
# only (qemu-img check exit 0 or 3), and running convert again finishes
# with a target equal to the source.
load ../helpers

setup() {
    T=$(mktemp -d "${BATS_TMPDIR:-/tmp}/vimg-test.XXXXXX")
    BG_PIDS=()
    cd "$T" || return 1
    requires qemu-img qemu-io
}

@test "kill -9 during convert to qcow2, then a rerun" {
    qemu-img create -q -f qcow2 src.qcow2 256M
    qemu-io -f qcow2 -c 'write -P 0x3c 0 96M' -c 'write -P 0x4d 128M 64M' \
        src.qcow2 >/dev/null
    local sum i pid
    sum=$(md5sum <src.qcow2)
    for i in 1 2 3 4; do
        rm -f dst.qcow2
        "$VIMG" convert -O qcow2 -o cluster_size=64k src.qcow2 dst.qcow2 &
        pid=$!
        sleep "0.0$((RANDOM % 9 + 1))"
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        if [ -e dst.qcow2 ]; then
            run qemu-img check dst.qcow2
            # A target killed before its header was written is no image
            # at all (exit 1 "Could not open"); anything else must not be
            # corrupt.
            [ "$status" -eq 0 ] || [ "$status" -eq 3 ] ||
                [[ $output == *"Image is not in qcow2 format"* ]] ||
                fail "check exit $status: $output"
        fi
        [ "$(md5sum <src.qcow2)" = "$sum" ]
    done
    run "$VIMG" convert -O qcow2 src.qcow2 dst.qcow2
    assert_success
    run qemu-img compare src.qcow2 dst.qcow2
    assert_success
    assert_qemu_check_clean dst.qcow2
}

@test "kill -9 during convert -n onto an existing target, then a rerun" {
    qemu-img create -q -f qcow2 src.qcow2 128M
    qemu-io -f qcow2 -c 'write -P 0x5e 0 100M' src.qcow2 >/dev/null
    qemu-img create -q -f qcow2 dst.qcow2 128M
    local i pid
    for i in 1 2 3; do
        "$VIMG" convert -n -O qcow2 src.qcow2 dst.qcow2 &
        pid=$!
        sleep "0.0$((RANDOM % 9 + 1))"
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        run qemu-img check dst.qcow2
        [ "$status" -eq 0 ] || [ "$status" -eq 3 ] ||
            fail "check exit $status: $output"
    done
    run "$VIMG" convert -n -O qcow2 src.qcow2 dst.qcow2
    assert_success
    run qemu-img compare src.qcow2 dst.qcow2
    assert_success
}
