# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-io's other commands on raw images: discard, flush, sleep, map,
# alloc, length, truncate, help, quit, and unknown commands.
load ../helpers
bats_require_minimum_version 1.5.0

untime() {
    sed -E 's/^(.*, [0-9]+ ops; ).*$/\1T/'
}

@test "discard reports like qemu-io and leaves the rest alone" {
    truncate -s 1M d.raw
    "$VIMG_IO" -f raw -c 'write -P 0xee 0 1M' d.raw
    run --separate-stderr "$VIMG_IO" -f raw -c 'discard 64k 64k' d.raw
    assert_success
    assert_equal "$(untime <<<"$output")" "discard 65536/65536 bytes at offset 65536
64 KiB, 1 ops; T"
    run "$VIMG_IO" -f raw -c 'd -q 0 4k' -c 'discard -C 4k 4k' d.raw
    assert_success
    assert_output --regexp '^4096,1,0:00:[0-9.]+,[0-9.]+,[0-9.]+$'
    # A raw file may keep the data (discard is a hint); it must still be
    # the old data or zeroes, and nothing outside the range changes.
    run "$VIMG_IO" -f raw -c 'read -q -P 0xee 128k 896k' d.raw
    assert_success
}

@test "discard errors: past the end, bad arguments" {
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -f raw -c 'discard 1M 1' \
        -c 'discard 0' -c 'discard -x 0 1' -c 'discard 0 3G' d.raw
    assert_failure 1
    assert_equal "${stderr_lines[0]}" "discard failed: Input/output error"
    assert_equal "${stderr_lines[1]}" "bad argument count 1 to discard, expected at least 2 arguments"
    assert_equal "${stderr_lines[3]}" "discard [-Cq] off len -- discards a number of bytes at a specified offset"
    assert_equal "${stderr_lines[4]}" "length cannot exceed 2147483136, given 3G"
}

@test "flush succeeds silently and takes no arguments" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -f raw -c 'write -q 0 1' -c flush -c f d.raw
    assert_success
    assert_output ""
    run "$VIMG_IO" -f raw -c 'flush 1' d.raw
    assert_failure 1
    assert_output "bad argument count 1 to flush, expected 0 arguments"
}

@test "sleep waits the given milliseconds and rejects bad numbers" {
    truncate -s 1M d.raw
    start=$(date +%s%N)
    run "$VIMG_IO" -f raw -c 'sleep 300' -c 'sleep 0x64' d.raw
    end=$(date +%s%N)
    assert_success
    [ $(( (end - start) / 1000000 )) -ge 400 ]
    run --separate-stderr "$VIMG_IO" -f raw -c 'sleep 1k' -c 'sleep -1' \
        -c 'sleep' d.raw
    assert_failure 1
    assert_equal "$stderr" "1k is not a valid number
-1 is not a valid number
bad argument count 0 to sleep, expected 1 arguments"
}

@test "map on a raw image: all allocated, one line" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -f raw -c map d.raw
    assert_success
    assert_output "1 MiB (0x100000) bytes     allocated at offset 0 bytes (0x0)"
}

@test "alloc and length on a raw image" {
    truncate -s 3M d.raw
    run "$VIMG_IO" -f raw -c 'alloc 0' -c 'alloc 1k 64k' -c 'alloc 2M 2M' \
        -c 'alloc 3M' -c length -c l d.raw
    assert_success
    assert_output "512/512 bytes allocated at offset 0 bytes
65536/65536 bytes allocated at offset 1 KiB
1048576/1048576 bytes allocated at offset 2 MiB
0/0 bytes allocated at offset 3 MiB
3 MiB
3 MiB"
}

@test "truncate changes the size" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -f raw -c 'truncate 2M' -c length -c 'read -q -P 0 1M 1M' d.raw
    assert_success
    assert_output "2 MiB"
    [ "$(stat -c %s d.raw)" -eq 2097152 ]
}

@test "help lists the commands; help CMD shows details" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -f raw -c help d.raw
    assert_success
    for c in alloc discard flush help length map quit read sleep truncate write; do
        assert_line --regexp "^$c .*-- "
    done
    assert_line "Use 'help commandname' for extended help."
    run "$VIMG_IO" -f raw -c 'help read' d.raw
    assert_success
    assert_line --index 0 "read [-Cqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a specified offset"
    assert_line " -P, -- use a pattern to verify read data"
    run "$VIMG_IO" -f raw -c 'help w' d.raw
    assert_line --index 0 --partial "w [-cCfnquz] [-P pattern | -s source_file] off len -- "
    run "$VIMG_IO" -f raw -c 'help nosuch' d.raw
    assert_failure 1
    assert_output 'command "nosuch" not found'
}

@test "unknown command fails, the others still run" {
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -f raw -c 'frobnicate 1' \
        -c 'write -q -P 7 0 1' d.raw
    assert_failure 1
    assert_equal "$stderr" 'command "frobnicate" not found'
    run "$VIMG_IO" -f raw -c 'read -q -P 7 0 1' d.raw
    assert_success
}

@test "quit stops before the remaining commands" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -f raw -c 'write -q -P 1 0 1' -c quit -c 'write -q -P 2 0 1' d.raw
    assert_success
    run "$VIMG_IO" -f raw -c 'q' -c 'read -q -P 0 0 1' -c 'read -q -P 1 0 1' d.raw
    assert_success
    assert_output ""
}

@test "empty commands and extra blanks are fine" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -f raw -c '' -c '   write   -q	-P 3  0   1  ' -c 'read -q -P 3 0 1' d.raw
    assert_success
    assert_output ""
}
