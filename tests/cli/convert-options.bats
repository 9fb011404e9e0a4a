#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg convert: the options (qemu-img convert's), each on a small image.
# qemu-img compare/check/info are the judges.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq
    # s.qcow2: data, written zeroes, a zero cluster, the last cluster.
    qemu-img create -q -f qcow2 s.qcow2 16M
    qemu-io -f qcow2 -c "write -P 0x11 0 3M" -c "write -P 0 1M 256k" \
        -c "write -z 2M 64k" -c "write -P 0x22 7M 100k" \
        -c "write -P 0x33 $((16 * 1048576 - 4096)) 4096" s.qcow2 >/dev/null
    qemu-img convert -f qcow2 -O raw s.qcow2 want.raw
    sha256sum s.qcow2 >s.sum
}

teardown_source_unchanged() { sha256sum -c --quiet s.sum; }

same_as_source() {
    run qemu-img compare -f qcow2 "$@"
    assert_success
}

@test "default: raw output with the source's bytes" {
    run vimg_t convert s.qcow2 o.img
    assert_success
    assert_output ""
    cmp want.raw o.img
    run qemu-img info --output=json o.img
    assert_equal "$(jq -r .format <<<"$output")" raw
    teardown_source_unchanged
}

@test "-O qcow2 -o cluster_size,compat: check clean, same content" {
    run vimg_t convert -f qcow2 -O qcow2 -o cluster_size=4k,compat=0.10 s.qcow2 o.qcow2
    assert_success
    assert_qemu_check_clean o.qcow2
    run qemu-img info --output=json o.qcow2
    assert_equal "$(jq '.["cluster-size"]' <<<"$output")" 4096
    assert_equal "$(jq -r '.["format-specific"].data.compat' <<<"$output")" 0.10
    same_as_source -F qcow2 s.qcow2 o.qcow2
}

@test "-o size= is overridden by the sources' total size (as qemu-img)" {
    run vimg_t convert -O qcow2 -o size=1M s.qcow2 o.qcow2
    assert_success
    run qemu-img info --output=json o.qcow2
    assert_equal "$(jq '.["virtual-size"]' <<<"$output")" 16777216
}

@test "-m 1, -m 16, -W, -m 2 -W all give the same image" {
    local a
    for a in "-m 1" "-m 16" "-W" "-m 2 -W"; do
        # shellcheck disable=SC2086
        run vimg_t convert $a -O qcow2 s.qcow2 o.qcow2
        assert_success
        assert_qemu_check_clean o.qcow2
        same_as_source -F qcow2 s.qcow2 o.qcow2
        # shellcheck disable=SC2086
        run vimg_t convert $a s.qcow2 o.raw
        assert_success
        cmp want.raw o.raw
        rm -f o.qcow2 o.raw
    done
}

@test "-S 0 allocates everything; -S 4k (default) leaves holes" {
    run vimg_t convert -S 0 s.qcow2 full.raw
    assert_success
    cmp want.raw full.raw
    [ $(($(stat -c %b full.raw) * 512)) -ge 16777216 ]
    run vimg_t convert -S 4k s.qcow2 sparse.raw
    assert_success
    cmp want.raw sparse.raw
    [ $(($(stat -c %b sparse.raw) * 512)) -lt $((4 * 1048576)) ]
}

@test "-S 512k keeps zero runs shorter than 512k as data" {
    run vimg_t convert -S 512k s.qcow2 big.raw
    assert_success
    cmp want.raw big.raw
    # The 256k of written zeroes at 1M stay allocated.
    run qemu-img map -f raw --output=json big.raw
    [ "$(jq '[.[] | select(.data and .start <= 1048576 and .start + .length >= 1310720)] | length' <<<"$output")" -eq 1 ]
}

@test "-n writes into an existing target, zeroing what reads zero" {
    qemu-img create -q -f raw t.raw 20M
    qemu-io -f raw -c "write -P 0x77 0 20M" t.raw >/dev/null
    run vimg_t convert -n s.qcow2 t.raw
    assert_success
    cmp -n 16777216 want.raw t.raw
    # Past the source's size the target is untouched.
    run qemu-io -f raw -c "read -P 0x77 16M 4M" t.raw
    refute_output --partial "fail"
}

@test "-n --target-is-zero does not write zero ranges" {
    qemu-img create -q -f raw t.raw 16M
    qemu-io -f raw -c "write -P 0x77 2M 64k" t.raw >/dev/null
    run vimg_t convert -n --target-is-zero s.qcow2 t.raw
    assert_success
    # The zero cluster at 2M was skipped: the old bytes are still there.
    run qemu-io -f raw -c "read -P 0x77 2M 64k" t.raw
    refute_output --partial "fail"
}

@test "-n -O qcow2 into an existing qcow2" {
    qemu-img create -q -f qcow2 t.qcow2 16M
    run vimg_t convert -n -O qcow2 s.qcow2 t.qcow2
    assert_success
    assert_qemu_check_clean t.qcow2
    same_as_source -F qcow2 s.qcow2 t.qcow2
}

@test "several sources are concatenated" {
    run vimg_t convert s.qcow2 want.raw s.qcow2 cat.raw
    assert_success
    assert_equal "$(stat -c %s cat.raw)" $((3 * 16777216))
    cat want.raw want.raw want.raw | cmp - cat.raw
}

@test "-B BACKING -F FMT: backing recorded, content equal" {
    qemu-img convert -O qcow2 s.qcow2 base.qcow2
    run vimg_t convert -O qcow2 -B base.qcow2 -F qcow2 s.qcow2 o.qcow2
    assert_success
    assert_qemu_check_clean o.qcow2
    same_as_source -F qcow2 s.qcow2 o.qcow2
    run qemu-img info --output=json o.qcow2
    assert_equal "$(jq -r '.["backing-filename"]' <<<"$output")" base.qcow2
    # Identical to the backing file: nothing allocated on top.
    run qemu-img map --output=json o.qcow2
    assert_equal "$(jq '[.[] | select(.depth == 0 and .present)] | length' <<<"$output")" 0
}

@test "-c writes compressed clusters" {
    run vimg_t convert -c -O qcow2 s.qcow2 c.qcow2
    assert_success
    assert_qemu_check_clean c.qcow2
    run qemu-img check --output=json c.qcow2
    [ "$(jq '.["compressed-clusters"] // 0' <<<"$output")" -gt 0 ]
    same_as_source -F qcow2 s.qcow2 c.qcow2
}

@test "-p prints qemu-img's percent lines up to 100%; -q prints nothing" {
    run_split "$VIMG" convert -p s.qcow2 o.raw
    assert_equal "$status" 0
    [[ ${lines[0]} == "    (0.00/100%)" ]]
    [[ ${lines[-1]} == "    (100.00/100%)" ]]
    run_split "$VIMG" convert -q -p s.qcow2 o2.raw
    assert_equal "$status" 0
    assert_equal "$output" ""
    assert_equal "$stderr" ""
}

@test "SIGUSR1 prints the progress once without -p" {
    # A big enough copy: 64 MiB of data, one worker.
    qemu-img create -q -f qcow2 big.qcow2 64M
    qemu-io -f qcow2 -c "write -P 0x5a 0 64M" big.qcow2 >/dev/null
    "$VIMG" convert -m 1 -S 0 big.qcow2 big.raw >usr1.out 2>&1 &
    local pid=$! i
    # The handler is in place once the target exists.
    for ((i = 0; i < 500; i++)); do
        [ -e big.raw ] && break
        sleep 0.01
    done
    while kill -USR1 "$pid" 2>/dev/null; do sleep 0.01; done
    wait "$pid"
    grep -q '^    ([0-9.]*/100%)' usr1.out
}

@test "-t and -T accept qemu's cache modes" {
    local m
    for m in none writeback writethrough directsync unsafe; do
        run vimg_t convert -t "$m" -T "$m" s.qcow2 o.raw
        assert_success
        cmp want.raw o.raw
        rm o.raw
    done
}

@test "no fsync by default (cache=unsafe); -t writeback flushes" {
    requires strace
    if grep -q __asan_init "$VIMG"; then
        skip "sanitizer builds do not run under strace"
    fi
    run strace -f -e trace=fsync,fdatasync -o trace.txt "$VIMG" convert s.qcow2 o.raw
    assert_success
    run grep -c 'sync(' trace.txt
    assert_output 0
    rm o.raw
    run strace -f -e trace=fsync,fdatasync -o trace.txt "$VIMG" convert -t writeback s.qcow2 o.raw
    assert_success
    grep -q 'fdatasync(' trace.txt
}

@test "--image-opts source and --target-image-opts target (-n)" {
    qemu-img create -q -f raw t.raw 16M
    run vimg_t convert --image-opts --target-image-opts -n \
        driver=qcow2,file.filename=s.qcow2 driver=raw,file.filename=t.raw
    assert_success
    cmp want.raw t.raw
}

@test "-U converts an image another process holds open for writing" {
    hold_image -f qcow2 s.qcow2
    run_split "$VIMG" convert s.qcow2 o.raw
    assert_one_line_error
    run vimg_t convert -U s.qcow2 o.raw
    assert_success
    cmp want.raw o.raw
}

@test "--help prints the usage" {
    run vimg_t convert --help
    assert_success
    assert_output --partial "Usage: vimg convert"
}
