# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-io read: report lines, pattern verification (-P, -s, -l), hex dump
# (-v), quiet (-q), terse statistics (-C), range and argument errors.
load ../helpers
bats_require_minimum_version 1.5.0

# Replace the timing part of qemu-io's statistics line with "T".
untime() {
    sed -E 's/^(.*, [0-9]+ ops; ).*$/\1T/'
}

raw_with_ab() {
    truncate -s 1M d.raw
    printf '\xab%.0s' $(seq 65536) | dd of=d.raw conv=notrunc status=none
}

@test "read prints qemu-io's two report lines" {
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -f raw -c 'read 512 1k' d.raw
    assert_success
    assert_equal "${lines[0]}" "read 1024/1024 bytes at offset 512"
    [[ "${lines[1]}" =~ ^1\ KiB,\ 1\ ops\;\ [0-9][0-9]\.[0-9][0-9]\ sec\ \(.*/sec\ and\ [0-9.]+\ ops/sec\)$ ]]
    assert_equal "${#lines[@]}" 2
    assert_equal "$stderr" ""
}

@test "read -P with the right pattern succeeds" {
    raw_with_ab
    run "$VIMG_IO" -f raw -c 'read -P 0xab 0 64k' -c 'read -P 171 1k 1k' \
        -c 'read -P 0 64k 64k' d.raw
    assert_success
    assert_equal "$(untime <<<"$output")" "read 65536/65536 bytes at offset 0
64 KiB, 1 ops; T
read 1024/1024 bytes at offset 1024
1 KiB, 1 ops; T
read 65536/65536 bytes at offset 65536
64 KiB, 1 ops; T"
}

@test "read -P mismatch: message on stderr, report still printed, exit 1" {
    raw_with_ab
    run --separate-stderr "$VIMG_IO" -f raw -c 'read -P 0xac 512 1k' d.raw
    assert_failure 1
    assert_equal "$stderr" "Pattern verification failed at offset 512, 1024 bytes"
    assert_equal "${lines[0]}" "read 1024/1024 bytes at offset 512"
}

@test "read -P: one wrong byte at the end of the range is found" {
    raw_with_ab
    run "$VIMG_IO" -f raw -c 'read -P 0xab 1 65536' d.raw
    assert_failure 1
    assert_line "Pattern verification failed at offset 1, 65536 bytes"
}

@test "read -P -s -l verifies only the given range" {
    raw_with_ab
    # [64k-100, 64k) is 0xab, the rest of the read is zeroes.
    run "$VIMG_IO" -f raw -c 'read -P 0xab -s 0 -l 100 65436 1k' d.raw
    assert_success
    run "$VIMG_IO" -f raw -c 'read -P 0 -s 100 65436 1k' d.raw
    assert_success
    run --separate-stderr "$VIMG_IO" -f raw -c 'read -P 0 -s 99 65436 1k' d.raw
    assert_failure 1
    assert_equal "$stderr" "Pattern verification failed at offset 65535, 925 bytes"
}

@test "read -s/-l without -P and a range past the read are refused" {
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -f raw -c 'read -s 1 0 2' d.raw
    assert_failure 1
    assert_equal "$stderr" "read [-Cqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a specified offset"
    run --separate-stderr "$VIMG_IO" -f raw -c 'read -P 1 -l 3 0 2' d.raw
    assert_failure 1
    assert_equal "$stderr" "pattern verification range exceeds end of read data"
}

@test "read -v dumps like qemu-io (isalnum, short last line)" {
    truncate -s 1M d.raw
    printf 'AB. z9\x01' | dd of=d.raw bs=1 seek=1000 conv=notrunc status=none
    run "$VIMG_IO" -f raw -c 'read -v 995 22' d.raw
    assert_success
    assert_equal "$(untime <<<"$output")" \
"000003e3:  00 00 00 00 00 41 42 2e 20 7a 39 01 00 00 00 00  .....AB..z9.....
000003f3:  00 00 00 00 00 00  ......
read 22/22 bytes at offset 995
22 bytes, 1 ops; T"
}

@test "read -q prints nothing; -C prints the terse line" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -f raw -c 'read -q 0 4k' d.raw
    assert_success
    assert_output ""
    run "$VIMG_IO" -f raw -c 'read -C 0 4k' d.raw
    assert_success
    assert_output --regexp '^4096,1,0:00:[0-9][0-9]\.[0-9][0-9],[0-9.]+,[0-9.]+$'
}

@test "read -q still reports a pattern mismatch" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -f raw -c 'read -q -P 1 0 4k' d.raw
    assert_failure 1
    assert_output "Pattern verification failed at offset 0, 4096 bytes"
}

@test "read past the end fails with Input/output error" {
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -f raw -c 'read 1M 1' -c 'read 2M 0' \
        -c 'read 1020k 8k' d.raw
    assert_failure 1
    assert_equal "$stderr" "read failed: Input/output error
read failed: Input/output error
read failed: Input/output error"
    run "$VIMG_IO" -f raw -c 'read 1M 0' d.raw
    assert_success
    assert_line "read 0/0 bytes at offset 1048576"
}

@test "read length limit and argument errors" {
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -f raw -c 'read 0 2147483137' d.raw
    assert_failure 1
    assert_equal "$stderr" "length cannot exceed 2147483136, given 2147483137"
    run --separate-stderr "$VIMG_IO" -f raw -c 'read 0' d.raw
    assert_failure 1
    assert_equal "$stderr" "bad argument count 1 to read, expected at least 2 arguments"
    run --separate-stderr "$VIMG_IO" -f raw -c 'read 0 1 2' d.raw
    assert_failure 1
    assert_equal "$stderr" "read [-Cqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a specified offset"
    run --separate-stderr "$VIMG_IO" -f raw -c 'read -P 256 0 1' \
        -c 'read -P abc 0 1' -c 'read -P -1 0 1' d.raw
    assert_failure 1
    assert_equal "$stderr" "256 is not a valid pattern byte
abc is not a valid pattern byte
-1 is not a valid pattern byte"
    run "$VIMG_IO" -f raw -c 'read -x 0 1' d.raw
    assert_failure 1
    assert_line --partial "invalid option -- 'x'"
}

@test "read -P takes strtol numbers: 010 is octal 8" {
    truncate -s 1M d.raw
    printf '\x08' | dd of=d.raw conv=notrunc status=none
    run "$VIMG_IO" -f raw -c 'read -q -P 010 0 1' -c 'r -q -P 0x8 0 1' d.raw
    assert_success
    run "$VIMG_IO" -f raw -c 'read -q -P 10 0 1' d.raw
    assert_failure 1
}

@test "a failing command does not stop the next ones" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -f raw -c 'read -q -P 1 0 1' -c 'write -q -P 1 0 1' \
        -c 'read -q -P 1 0 1' d.raw
    assert_failure 1
    assert_output "Pattern verification failed at offset 0, 1 bytes"
    run "$VIMG_IO" -f raw -c 'read -q -P 1 0 1' d.raw
    assert_success
}
