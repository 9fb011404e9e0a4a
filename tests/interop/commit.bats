#!/usr/bin/env bats
# vimg commit against qemu-img as the oracle: the base ends up reading
# what the top read, the top is emptied unless -d, images stay clean,
# and the result matches qemu-img commit's on a copy of the same chain.
load ../helpers

setup() {
    T=$(mktemp -d "${BATS_TMPDIR:-/tmp}/vimg-test.XXXXXX")
    BG_PIDS=()
    cd "$T" || return 1
    requires qemu-img qemu-io jq
}

# base.qcow2 <- top.qcow2 with overlapping data, a zero write over base
# data and a write past nothing.
make_chain() {
    local size=${1:-8M}
    qemu-img create -q -f qcow2 base.qcow2 8M
    qemu-io -f qcow2 -c 'write -P 0x11 0 1M' -c 'write -P 0x22 3M 1M' \
        base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 "$size"
    qemu-io -f qcow2 -c 'write -P 0x33 512k 1M' -c 'write -z 3M 64k' \
        -c 'write -P 0x44 5M 100k' top.qcow2 >/dev/null
    qemu-img convert -O raw top.qcow2 before.raw
}

@test "commit copies the top into its backing file and empties the top" {
    make_chain
    run "$VIMG" commit top.qcow2
    assert_success
    assert_output "Image committed."
    run qemu-img compare -f qcow2 -F raw base.qcow2 before.raw
    assert_success
    run qemu-img compare -f qcow2 -F raw top.qcow2 before.raw
    assert_success
    # Emptied: nothing is allocated in the top any more.
    [ "$(qemu-img map --output=json top.qcow2 | jq '[.[] | select(.depth == 0)] | length')" -eq 0 ]
    assert_qemu_check_clean base.qcow2
    assert_qemu_check_clean top.qcow2
}

@test "commit gives the same base as qemu-img commit" {
    make_chain
    mkdir q && cp base.qcow2 top.qcow2 q/
    (cd q && qemu-img commit -q top.qcow2)
    run "$VIMG" commit -q top.qcow2
    assert_success
    assert_output ""
    run qemu-img compare base.qcow2 q/base.qcow2
    assert_success
}

@test "commit -d keeps the top's data" {
    make_chain
    run "$VIMG" commit -q -d top.qcow2
    assert_success
    run qemu-img compare -f qcow2 -F raw base.qcow2 before.raw
    assert_success
    [ "$(qemu-img map --output=json top.qcow2 | jq '[.[] | select(.depth == 0)] | length')" -gt 0 ]
    assert_qemu_check_clean top.qcow2
}

@test "commit -b into the bottom of a 3-deep chain" {
    make_chain
    mv top.qcow2 mid.qcow2
    qemu-img rebase -q -u -b base.qcow2 -F qcow2 mid.qcow2
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
    qemu-io -f qcow2 -c 'write -P 0x55 6M 64k' -c 'write -P 0x66 0 4k' \
        top.qcow2 >/dev/null
    qemu-img convert -O raw top.qcow2 before.raw
    run "$VIMG" commit -q -b base.qcow2 top.qcow2
    assert_success
    run qemu-img compare -f qcow2 -F raw base.qcow2 before.raw
    assert_success
    # -b implies -d: the top still holds its data and reads the same.
    run qemu-img compare -f qcow2 -F raw top.qcow2 before.raw
    assert_success
    assert_qemu_check_clean base.qcow2
}

@test "commit grows a base smaller than the top" {
    make_chain 12M
    run "$VIMG" commit -q top.qcow2
    assert_success
    [ "$(qemu-img info --output=json base.qcow2 | jq '.["virtual-size"]')" -eq $((12 << 20)) ]
    run qemu-img compare -f qcow2 -F raw base.qcow2 before.raw
    assert_success
    assert_qemu_check_clean base.qcow2
}

@test "commit errors: no backing file, base not in chain, missing file" {
    qemu-img create -q -f qcow2 lone.qcow2 1M
    run_split "$VIMG" commit lone.qcow2
    assert_one_line_error
    assert_equal "$stderr" "vimg: commit: Image does not have a backing file"
    make_chain
    cp base.qcow2 base.orig
    run_split "$VIMG" commit -b nosuch.qcow2 top.qcow2
    assert_one_line_error
    [[ $stderr == *"Did not find 'nosuch.qcow2'"* ]]
    cmp base.qcow2 base.orig
    run_split "$VIMG" commit nosuch.qcow2
    assert_one_line_error
}

@test "commit is refused while another process uses the base" {
    make_chain
    start_bg qemu-io -f qcow2 -c 'sleep 5000' base.qcow2
    sleep 0.5
    run_split "$VIMG" commit top.qcow2
    assert_one_line_error
    [[ $stderr == *'lock'* ]]
}

@test "kill -9 during commit leaves valid images, and a rerun finishes" {
    qemu-img create -q -f qcow2 base.qcow2 256M
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    qemu-io -f qcow2 -c 'write -P 0x11 0 128M' -c 'write -z 64M 1M' \
        top.qcow2 >/dev/null
    qemu-img convert -O raw top.qcow2 before.raw
    local i
    for i in 1 2 3; do
        "$VIMG" commit -q top.qcow2 &
        local pid=$!
        sleep "0.0$((RANDOM % 9 + 1))"
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        run qemu-img check base.qcow2
        [ "$status" -eq 0 ] || [ "$status" -eq 3 ]
        run qemu-img check top.qcow2
        [ "$status" -eq 0 ] || [ "$status" -eq 3 ]
        run qemu-img compare -f qcow2 -F raw top.qcow2 before.raw
        assert_success
    done
    run "$VIMG" commit -q top.qcow2
    assert_success
    run qemu-img compare -f qcow2 -F raw base.qcow2 before.raw
    assert_success
}
