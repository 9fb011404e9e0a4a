# SPDX-License-Identifier: LGPL-2.1-or-later
# The "inject" fault-injection filter through vimg-io --image-opts: an
# injected failure is one error line, bad option values are refused with
# one line, and a failed flush under qcow2 makes later writes and flushes
# fail while reads work and the image stays valid.
load ../helpers
bats_require_minimum_version 1.5.0

inj() { # inj FILE [OPTIONS...]: a qcow2 node over an inject filter
    local o="driver=qcow2,file.driver=inject,file.file.driver=file"
    o+=",file.file.filename=$1"
    shift
    for a in "$@"; do o+=",file.$a"; done
    printf '%s\n' "$o"
}

@test "an injected write failure is one error line" {
    "$VIMG" create -q -f qcow2 x.qcow2 1M
    run_split "$VIMG_IO" --image-opts -c 'write -q -P 1 0 64k' \
        "$(inj x.qcow2 fail-op=write fail-nth=1 errno=ENOSPC)"
    assert_one_line_error
    assert_equal "$stderr" "write failed: No space left on device (x.qcow2: injected write error at offset 262144: No space left on device)"
}

@test "fail-nth counts requests; once=on fails only the Nth" {
    truncate -s 1M d.raw
    local o="driver=inject,file.driver=file,file.filename=d.raw"
    run_split "$VIMG_IO" --image-opts -c 'write -q 0 4k' -c 'write -q 4k 4k' \
        -c 'write -q 8k 4k' "$o,fail-op=write,fail-nth=2"
    assert_one_line_error
    [[ $stderr == "write failed: Input/output error ("*"at offset 4096"* ]]
    run_split "$VIMG_IO" --image-opts -c 'read -q 0 4k' -c 'read -q 0 4k' \
        -c 'read -q 0 4k' "$o,fail-op=read,fail-nth=2,once=off"
    assert_failure 1
    assert_equal "$(printf '%s\n' "$stderr" | grep -c '^read failed: ')" 2
}

@test "bad option values are refused with one line" {
    truncate -s 1M d.raw
    local o="driver=inject,file.driver=file,file.filename=d.raw"
    for bad in fail-op=fsync errno=EPERM fail-nth=0 once=maybe \
        short-write=on colour=red log=/nonexistent/x/log; do
        run_split "$VIMG_IO" --image-opts -c 'read -q 0 1' "$o,$bad"
        assert_one_line_error
    done
    run_split "$VIMG_IO" --image-opts -c 'read -q 0 1' "$o,fail-op=fsync"
    assert_equal "$stderr" "vimg-io: can't open device $o,fail-op=fsync: inject: fail-op must be read, write, flush, discard, zero or truncate, not 'fsync'"
}

@test "a short write stores half of its bytes, then fails" {
    truncate -s 1M d.raw
    run_split "$VIMG_IO" --image-opts -c 'write -q -P 0xab 0 4k' \
        "driver=inject,file.driver=file,file.filename=d.raw,fail-op=write,short-write=on"
    assert_one_line_error
    assert_equal "$(od -An -tx1 -j 2047 -N2 d.raw | tr -d ' ')" "ab00"
}

@test "the log has W lines with checksums and F after each flush" {
    "$VIMG" create -q -f qcow2 x.qcow2 1M
    run vimg_io_t --image-opts -c 'write -q -P 1 0 64k' -c flush \
        "$(inj x.qcow2 log=w.log)"
    assert_success
    grep -Eq '^W 262144 65536 [0-9a-f]{16}$' w.log
    assert_equal "$(tail -n1 w.log)" "F"
    ! grep -Evq '^(W [0-9]+ [0-9]+ [0-9a-f]{16}|Z [0-9]+ [0-9]+|D [0-9]+ [0-9]+|T [0-9]+|F)$' w.log
}

@test "after a failed flush writes and flushes fail, reads work" {
    requires qemu-img
    "$VIMG" create -q -f qcow2 x.qcow2 1M
    # A vimg-io flush of this image is 4 flushes of the file: the 5th is
    # the first of the second flush command.
    run_split "$VIMG_IO" --image-opts -c 'write -q -P 1 0 64k' -c flush \
        -c 'write -q -P 2 64k 64k' -c flush -c 'write -q -P 3 0 64k' \
        -c 'write -q -z 128k 64k' -c 'discard -q 0 64k' \
        -c 'read -q -P 1 0 64k' -c flush \
        "$(inj x.qcow2 fail-op=flush fail-nth=5)"
    assert_failure 1
    assert_equal "$stderr" "flush failed: Input/output error (x.qcow2: injected flush error: Input/output error)
write failed: Input/output error (x.qcow2: an earlier flush failed; data may be lost)
write failed: Input/output error (x.qcow2: an earlier flush failed; data may be lost)
discard failed: Input/output error (x.qcow2: an earlier flush failed; data may be lost)
flush failed: Input/output error (x.qcow2: an earlier flush failed; data may be lost)
vimg-io: close failed: x.qcow2: an earlier flush failed; data may be lost"
    # No corruption (leaked clusters at most); flushed data is there.
    run qemu-img check x.qcow2
    [ "$status" -eq 0 ] || [ "$status" -eq 3 ]
    refute_output --partial ERROR
    run qemu-io -r -c 'read -P 1 0 64k' x.qcow2
    assert_success
    refute_output --partial 'verification failed'
}
