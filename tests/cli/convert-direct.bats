#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg convert -t none / -T none (and directsync): target and sources are
# opened with O_DIRECT, as qemu-img does with cache.direct=on.  strace
# shows the open flags; qemu-img compare/check judge the result.  Runs
# in a folder whose file system takes O_DIRECT (/var/tmp when the
# test's temp folder is on a tmpfs that refuses it).

load ../helpers

eval "helpers_$(declare -f setup)"
eval "helpers_$(declare -f teardown)"

# Does folder $1 take O_DIRECT writes?
direct_ok() {
    local r=0
    dd if=/dev/zero of="$1/.direct-probe" bs=4096 count=1 oflag=direct \
        status=none 2>/dev/null || r=1
    rm -f "$1/.direct-probe"
    return "$r"
}

setup() {
    helpers_setup
    requires qemu-img qemu-io
    D=
    if ! direct_ok .; then
        D=$(mktemp -d /var/tmp/vimg-direct.XXXXXX)
        cd "$D" || return 1
        direct_ok . || skip "no file system here takes O_DIRECT"
    fi
    head -c 3M /dev/urandom >s.raw
    qemu-io -f raw -c "write -z 1M 512k" -c "write -P 0x5a 2M 1000" \
        s.raw >/dev/null
}

teardown() {
    [ -z "$D" ] || rm -rf "$D"
    helpers_teardown
}

# strace, or skip where it cannot run the tools.
requires_strace() {
    requires strace
    if grep -q __asan_init "$VIMG"; then
        skip "sanitizer builds do not run under strace"
    fi
}

# The flags FILE was opened with last, from strace output trace.txt.
open_flags() {
    grep -E "openat\(AT_FDCWD, \"$1\"" trace.txt | tail -1 |
        sed -E 's/.*", ([A-Z_|]+).*/\1/'
}

@test "raw to raw with -t none -T none: O_DIRECT on both, same content" {
    requires_strace
    run strace -f -e trace=openat -o trace.txt "$VIMG" convert \
        -t none -T none -f raw -O raw s.raw o.raw
    assert_success
    [[ $(open_flags o.raw) == *O_DIRECT* ]]
    [[ $(open_flags s.raw) == *O_DIRECT* ]]
    run qemu-img compare -f raw -F raw s.raw o.raw
    assert_success
}

@test "directsync is direct too; writeback and the default are not" {
    requires_strace
    local m
    for m in directsync writeback unsafe; do
        run strace -f -e trace=openat -o trace.txt "$VIMG" convert \
            -t "$m" -T "$m" -f raw -O raw s.raw o.raw
        assert_success
        if [ "$m" = directsync ]; then
            [[ $(open_flags o.raw) == *O_DIRECT* ]]
            [[ $(open_flags s.raw) == *O_DIRECT* ]]
        else
            [[ $(open_flags o.raw) != *O_DIRECT* ]]
            [[ $(open_flags s.raw) != *O_DIRECT* ]]
        fi
        cmp s.raw o.raw
        rm o.raw
    done
}

@test "raw to qcow2 with -t none: check clean, same content" {
    requires_strace
    run strace -f -e trace=openat -o trace.txt "$VIMG" convert \
        -t none -f raw -O qcow2 s.raw o.qcow2
    assert_success
    [[ $(open_flags o.qcow2) == *O_DIRECT* ]]
    assert_qemu_check_clean o.qcow2
    run qemu-img compare -f raw -F qcow2 s.raw o.qcow2
    assert_success
}

@test "qcow2 over a backing file to qcow2, -t none -T none: the chain is read direct" {
    requires_strace
    qemu-img create -q -f qcow2 -b s.raw -F raw top.qcow2
    qemu-io -f qcow2 -c "write -P 0x77 100k 70k" -c "write -z 2M 4k" \
        top.qcow2 >/dev/null
    run strace -f -e trace=openat -o trace.txt "$VIMG" convert \
        -t none -T none -O qcow2 -o cluster_size=4k top.qcow2 o.qcow2
    assert_success
    [[ $(open_flags top.qcow2) == *O_DIRECT* ]]
    [[ $(open_flags s.raw) == *O_DIRECT* ]]
    [[ $(open_flags o.qcow2) == *O_DIRECT* ]]
    assert_qemu_check_clean o.qcow2
    run qemu-img compare -f qcow2 -F qcow2 top.qcow2 o.qcow2
    assert_success
}

@test "compressed and small-cluster qcow2 targets (unaligned metadata) with -t none" {
    run "$VIMG" convert -t none -T none -c -f raw -O qcow2 s.raw c.qcow2
    assert_success
    assert_qemu_check_clean c.qcow2
    run qemu-img compare -f raw -F qcow2 s.raw c.qcow2
    assert_success
    run "$VIMG" convert -t none -T none -f qcow2 -O qcow2 \
        -o cluster_size=512 c.qcow2 o.qcow2
    assert_success
    assert_qemu_check_clean o.qcow2
    run qemu-img compare -f qcow2 -F qcow2 c.qcow2 o.qcow2
    assert_success
}

@test "odd-sized raw source with -t none: same size as without, same bytes" {
    head -c 1000001 /dev/urandom >odd.raw
    run "$VIMG" convert -t none -T none -f raw -O raw odd.raw o.raw
    assert_success
    "$VIMG" convert -f raw -O raw odd.raw buffered.raw
    qemu-img convert -f raw -O raw odd.raw qemu.raw
    [ "$(stat -c %s o.raw)" = "$(stat -c %s buffered.raw)" ]
    [ "$(stat -c %s o.raw)" = "$(stat -c %s qemu.raw)" ]
    cmp o.raw qemu.raw
    run qemu-img compare -f raw -F raw odd.raw o.raw
    assert_success
}

@test "odd-sized raw window with -n -t none: the file keeps its exact size" {
    head -c 1000001 /dev/urandom >odd.raw
    head -c 1000001 /dev/zero >o.raw
    run "$VIMG" convert -n -t none -T none --image-opts \
        --target-image-opts driver=raw,size=1000001,file.filename=odd.raw \
        driver=raw,size=1000001,file.filename=o.raw
    assert_success
    [ "$(stat -c %s o.raw)" = 1000001 ]
    cmp odd.raw o.raw
}

@test "--image-opts: an explicit cache.direct=off wins over -T none" {
    requires_strace
    run strace -f -e trace=openat -o trace.txt "$VIMG" convert -T none \
        --image-opts driver=raw,file.filename=s.raw,file.cache.direct=off \
        o.raw
    assert_success
    [[ $(open_flags s.raw) != *O_DIRECT* ]]
    cmp s.raw o.raw
}

@test "a file system that refuses O_DIRECT: one line naming the file" {
    local f=/proc/version
    if dd if=$f of=/dev/null bs=4096 count=1 iflag=direct status=none \
        2>/dev/null; then
        skip "procfs takes O_DIRECT here"
    fi
    run_split "$VIMG" convert -T none -f raw $f o.raw
    assert_one_line_error
    assert_equal "$stderr" \
        "vimg: convert: Could not open '$f': filesystem does not support O_DIRECT"
    [ ! -e o.raw ]
    # qemu-img says the same (twice over).
    run qemu-img convert -T none -f raw $f q.raw
    assert_failure
    [[ $output == *"Could not open '$f': filesystem does not support O_DIRECT"* ]]
}

@test "a target on /dev/shm without O_DIRECT: one line, target removed" {
    [ -d /dev/shm ] || skip "no /dev/shm"
    if direct_ok /dev/shm; then
        skip "tmpfs takes O_DIRECT on this kernel"
    fi
    local o
    o=$(mktemp -u /dev/shm/vimg-direct.XXXXXX)
    run_split "$VIMG" convert -t none -f raw -O raw s.raw "$o"
    assert_one_line_error
    assert_equal "$stderr" \
        "vimg: convert: Could not open '$o': filesystem does not support O_DIRECT"
    [ ! -e "$o" ]
}
