# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-io write: default and -P patterns, -s FILE, -z/-u/-n, -f (FUA),
# -c (compressed, qcow2 whole clusters), option conflicts, range checks.  The raw file
# is read back with od so that the check does not depend on vimg-io.
load ../helpers
bats_require_minimum_version 1.5.0

untime() {
    sed -E 's/^(.*, [0-9]+ ops; ).*$/\1T/'
}

# The bytes of FILE in [OFF, OFF+LEN) as one hex string.
hexat() {
    od -An -v -tx1 -j "$2" -N "$3" "$1" | tr -d ' \n'
}

@test "write uses 0xcd by default and reports 'wrote'" {
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -f raw -c 'write 4k 4k' d.raw
    assert_success
    assert_equal "$(untime <<<"$output")" "wrote 4096/4096 bytes at offset 4096
4 KiB, 1 ops; T"
    assert_equal "$stderr" ""
    assert_equal "$(hexat d.raw 4096 4096 | tr -d c d)" ""
    assert_equal "$(hexat d.raw 4095 1)" "00"
    assert_equal "$(hexat d.raw 8192 1)" "00"
}

@test "write -P writes the pattern byte, exactly over the range" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -f raw -c 'write -P 0x5a 1000 3' d.raw
    assert_success
    assert_equal "$(hexat d.raw 999 5)" "005a5a5a00"
    run "$VIMG_IO" -f raw -c 'write -P 010 0 1' -c 'write -q -P 255 1 1' d.raw
    assert_success
    assert_equal "$(hexat d.raw 0 2)" "08ff"
}

@test "write then read -P round trip; data survives reopening" {
    truncate -s 4M d.raw
    "$VIMG_IO" -f raw -c 'write -P 0x11 0 1M' -c 'write -P 0x22 1M 1M' d.raw
    run "$VIMG_IO" -f raw -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' \
        -c 'read -P 0 2M 2M' d.raw
    assert_success
}

@test "write -z zeroes the range; -u and -f are accepted with it" {
    truncate -s 1M d.raw
    "$VIMG_IO" -f raw -c 'write -P 0xff 0 64k' d.raw
    run "$VIMG_IO" -f raw -c 'write -z 4k 4k' -c 'write -z -u 16k 16k' \
        -c 'write -z -f 60k 1k' d.raw
    assert_success
    assert_equal "$(untime <<<"$output" | head -2)" "wrote 4096/4096 bytes at offset 4096
4 KiB, 1 ops; T"
    run "$VIMG_IO" -f raw -c 'read -q -P 0xff 0 4k' -c 'read -q -P 0 4k 4k' \
        -c 'read -q -P 0xff 8k 8k' -c 'read -q -P 0 16k 16k' \
        -c 'read -q -P 0xff 32k 28k' -c 'read -q -P 0 60k 1k' \
        -c 'read -q -P 0xff 61k 3k' d.raw
    assert_success
    assert_output ""
}

@test "write -f (FUA) writes data" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -f raw -c 'write -f -P 0x33 0 512' d.raw
    assert_success
    assert_equal "$(hexat d.raw 511 2)" "3300"
}

@test "write -s FILE repeats the file's bytes" {
    truncate -s 1M d.raw
    printf 'abc' > pat
    run "$VIMG_IO" -f raw -c 'write -s pat 0 8' d.raw
    assert_success
    assert_equal "$(head -c 8 d.raw)" "abcabcab"
    : > empty
    run --separate-stderr "$VIMG_IO" -f raw -c 'write -s empty 0 8' \
        -c 'write -s nosuch 0 8' d.raw
    assert_failure 1
    assert_equal "$stderr" "empty: file is empty
nosuch: No such file or directory"
}

@test "write -c stores whole qcow2 clusters compressed and reads back" {
    "$VIMG" create -q -f qcow2 d.qcow2 1M
    run --separate-stderr "$VIMG_IO" -f qcow2 -c 'write -c -P 0x5a 0 128k' \
        -c 'read -q -P 0x5a 0 128k' -c 'read -q -P 0 128k 64k' d.qcow2
    assert_success
    assert_equal "$stderr" ""
    run "$VIMG_IO" -f qcow2 -c 'map' d.qcow2
    assert_success
    run "$VIMG_IO" -f qcow2 -c 'read -q -P 0x5a 0 128k' d.qcow2
    assert_success
    assert_output ""
    # 64 KiB of one byte compresses to a few bytes: the file stays small.
    [ "$(stat -c %s d.qcow2)" -lt 400000 ]
}

@test "write -c refuses misaligned requests and formats without compression" {
    "$VIMG" create -q -f qcow2 d.qcow2 1M
    run --separate-stderr "$VIMG_IO" -f qcow2 -c 'write -c 0 4k' d.qcow2
    assert_failure 1
    [[ $stderr == "write failed: Invalid argument"* ]]
    run --separate-stderr "$VIMG_IO" -f qcow2 -c 'write -c 4k 64k' d.qcow2
    assert_failure 1
    [[ $stderr == "write failed: Invalid argument"* ]]
    run "$VIMG_IO" -f qcow2 -c 'read -q -P 0 0 1M' d.qcow2
    assert_success
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -f raw -c 'write -c 0 64k' d.raw
    assert_failure 1
    [[ $stderr == "write failed: Operation not supported"* ]]
    assert_equal "$(hexat d.raw 0 1)" "00"
    run --separate-stderr "$VIMG_IO" -f raw -c 'write -c 1 512' \
        -c 'write -c 0 511' d.raw
    assert_failure 1
    assert_equal "$stderr" "1 is not a sector-aligned value for 'offset'
511 is not a sector-aligned value for 'count'"
}

@test "write option conflicts are refused as by qemu-io" {
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -f raw -c 'write -u 0 1' \
        -c 'write -n 0 1' -c 'write -z -P 1 0 1' -c 'write -f -c 0 512' \
        -c 'write -z -s x 0 1' d.raw
    assert_failure 1
    assert_equal "$stderr" "-u requires -z to be specified
-n requires -z to be specified
Only one of -z, -P, and -s can be specified at the same time
-f and -b or -c cannot be specified at the same time
Only one of -z, -P, and -s can be specified at the same time"
    assert_output ""
    assert_equal "$(hexat d.raw 0 1)" "00"
}

@test "write length limit: more than 2147483136 bytes needs -z -n" {
    truncate -s 4G d.raw
    run --separate-stderr "$VIMG_IO" -f raw -c 'write 0 3G' -c 'write -z 0 3G' d.raw
    assert_failure 1
    assert_equal "$stderr" "length cannot exceed 2147483136 without -n, given 3G
length cannot exceed 2147483136 without -n, given 3G"
}

@test "write past the end fails with Input/output error and writes nothing" {
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -f raw -c 'write 1020k 8k' \
        -c 'write -z 1M 1' d.raw
    assert_failure 1
    assert_equal "$stderr" "write failed: Input/output error
write failed: Input/output error"
    [ "$(stat -c %s d.raw)" -eq 1048576 ]
    assert_equal "$(hexat d.raw 1044480 1)" "00"
}

@test "write usage errors" {
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -f raw -c 'write 0' -c 'write 0 1 2' \
        -c 'w -P' -c 'write 1x 1' d.raw
    assert_failure 1
    assert_equal "$stderr" "bad argument count 1 to write, expected at least 2 arguments
write [-cCfnquz] [-P pattern | -s source_file] off len -- writes a number of bytes at a specified offset
bad argument count 1 to w, expected at least 2 arguments
Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- 1x"
}
