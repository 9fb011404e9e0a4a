# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-io's program options: -r, -U, --image-opts, -f and probing, -c
# versus standard input, -h, -V, bad options, open failures, exit codes.
load ../helpers
bats_require_minimum_version 1.5.0

@test "-r: reads work, write/discard/truncate are refused, file unchanged" {
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -r -f raw -c 'write -P 1 0 1' \
        -c 'discard 0 4k' -c 'w -z 0 1' -c 'truncate 2M' d.raw
    assert_failure 1
    assert_equal "$stderr" "write failed: Block node is read-only
discard failed: Block node is read-only
write failed: Block node is read-only
truncate failed: Block node is read-only"
    assert_equal "$(stat -c %s d.raw)" 1048576
    assert_equal "$(od -An -tx1 -N1 d.raw | tr -d ' ')" "00"
    run "$VIMG_IO" --read-only -f raw -c 'read -q -P 0 0 1M' -c map d.raw
    assert_success
}

@test "-r opens a file without write permission" {
    [ "$(id -u)" -ne 0 ] || skip "root ignores file permissions"
    truncate -s 1M d.raw
    chmod 0444 d.raw
    run "$VIMG_IO" -r -f raw -c 'read -q 0 1' d.raw
    assert_success
    run "$VIMG_IO" -f raw -c 'read -q 0 1' d.raw
    assert_failure 1
    assert_output --regexp "^vimg-io: can't open device d.raw: .*"
    assert_equal "${#lines[@]}" 1
}

@test "-U: read-only with shared permissions" {
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -U -f raw -c 'read -q -P 0 0 1k' \
        -c 'write -q 0 1' d.raw
    assert_failure 1
    assert_equal "$stderr" "write failed: Block node is read-only"
    run "$VIMG_IO" --force-share -f raw -c 'read -q 0 1' d.raw
    assert_success
}

@test "-U reads an image another vimg-io has open for writing" {
    truncate -s 1M d.raw
    "$VIMG_IO" -f raw -c 'write -q -P 0x42 0 4k' d.raw
    start_bg "$VIMG_IO" -f raw -c 'sleep 20000' d.raw
    sleep 0.5
    run "$VIMG_IO" -U -f raw -c 'read -q -P 0x42 0 4k' d.raw
    assert_success
    assert_output ""
}

@test "--image-opts takes a dotted option string" {
    truncate -s 1M d.raw
    run "$VIMG_IO" --image-opts -c 'write -q -P 9 0 512' \
        driver=raw,file.filename=d.raw
    assert_success
    run "$VIMG_IO" --image-opts -r -c 'read -q -P 9 0 512' -c length \
        driver=raw,file.driver=file,file.filename=d.raw
    assert_success
    assert_output "1 MiB"
    run "$VIMG_IO" -f raw -c 'read -q -P 9 0 512' d.raw
    assert_success
}

@test "--image-opts and -f are mutually exclusive; bad option strings fail" {
    truncate -s 1M d.raw
    run "$VIMG_IO" --image-opts -f raw -c 'read 0 1' driver=raw,file.filename=d.raw
    assert_failure 1
    assert_output "vimg-io: --image-opts and -f are mutually exclusive"
    run "$VIMG_IO" --image-opts -c 'read 0 1' driver=nosuch,file.filename=d.raw
    assert_failure 1
    assert_output --regexp "^vimg-io: can't open device driver=nosuch,file.filename=d.raw: .+"
    assert_equal "${#lines[@]}" 1
}

@test "a missing file: one line on stderr, exit 1, no commands run" {
    run --separate-stderr "$VIMG_IO" -f raw -c 'read 0 1' nosuch.raw
    assert_failure 1
    assert_output ""
    assert_equal "${#stderr_lines[@]}" 1
    assert_equal "${stderr_lines[0]}" \
        "vimg-io: can't open device nosuch.raw: Could not open 'nosuch.raw': No such file or directory"
    [ ! -e nosuch.raw ]
}

@test "-f names the format; an unknown format fails to open" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -f raw -c 'read -q 0 1' d.raw
    assert_success
    run "$VIMG_IO" --format=raw -c 'read -q 0 1' d.raw
    assert_success
    run "$VIMG_IO" -f vmdkx -c 'read -q 0 1' d.raw
    assert_failure 1
    assert_output --regexp "^vimg-io: can't open device d.raw: .*vmdkx"
    run "$VIMG_IO" -f qcow2 -c 'read -q 0 1' d.raw
    assert_failure 1
    assert_output --regexp "^vimg-io: can't open device d.raw: "
}

@test "a probed raw image opens read-only with a warning, not for writing" {
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -r -c 'read -q 0 1' d.raw
    assert_success
    assert_equal "${stderr_lines[0]}" "WARNING: Image format was not specified for 'd.raw' and probing guessed raw."
    run --separate-stderr "$VIMG_IO" -c 'write -q 0 1' d.raw
    assert_failure 1
    assert_equal "${#stderr_lines[@]}" 1
    assert_equal "${stderr_lines[0]:0:36}" "vimg-io: can't open device d.raw: d."
    assert_equal "$(od -An -tx1 -N1 d.raw | tr -d ' ')" "00"
}

@test "commands from standard input, one a line, until EOF or quit" {
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -f raw d.raw <<'EOF'
write -q -P 0x61 0 512

   read   -q   -P 0x61   0   512   
read -P 0x62 0 512
nosuch
quit
write -q -P 0x63 0 512
EOF
    assert_failure 1
    assert_equal "$stderr" 'Pattern verification failed at offset 0, 512 bytes
command "nosuch" not found'
    assert_line --index 0 "read 512/512 bytes at offset 0"
    assert_equal "$(head -c 512 d.raw | tr -d a)" ""
    run "$VIMG_IO" -f raw d.raw < /dev/null
    assert_success
    assert_output ""
    run "$VIMG_IO" -f raw d.raw <<<'read -q -P 0x61 0 512'
    assert_success
    printf 'read -q -P 0x61 0 1' > nonl
    run "$VIMG_IO" -f raw d.raw < nonl
    assert_success
}

@test "-c commands take precedence over standard input" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -f raw -c 'read -q -P 0 0 1' d.raw <<<'write -q -P 1 0 1'
    assert_success
    run "$VIMG_IO" -f raw -c 'read -q -P 0 0 1' d.raw
    assert_success
}

@test "-h and -V" {
    run "$VIMG_IO" -h
    assert_success
    assert_line --index 0 "Usage: vimg-io [OPTIONS]... [-c STRING]... FILE"
    assert_line --partial "--image-opts"
    run "$VIMG_IO" --help
    assert_success
    run "$VIMG_IO" -V
    assert_success
    assert_output --regexp '^vimg-io version [0-9]+\.[0-9]+'
    run "$VIMG_IO" --version
    assert_success
}

@test "bad options and arguments exit 1 with a message on stderr" {
    truncate -s 1M d.raw
    run --separate-stderr "$VIMG_IO" -x d.raw
    assert_failure 1
    assert_output ""
    assert_equal "${stderr_lines[1]}" "Try 'vimg-io --help' for more information."
    run --separate-stderr "$VIMG_IO" --no-such-option d.raw
    assert_failure 1
    run --separate-stderr "$VIMG_IO" -f raw
    assert_failure 1
    assert_equal "${stderr_lines[0]}" "vimg-io: no image file given"
    run --separate-stderr "$VIMG_IO" -f raw d.raw d.raw
    assert_failure 1
    assert_equal "${stderr_lines[0]}" "vimg-io: only one image file may be given"
    run --separate-stderr "$VIMG_IO" -f raw -c
    assert_failure 1
    run --separate-stderr "$VIMG_IO" -s -f raw d.raw
    assert_failure 1
    assert_equal "$stderr" "vimg-io: option '-s' is not supported"
}

@test "qemu-io's cache and aio options are accepted and ignored" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -n -t writeback -i threads -k -d unmap -f raw \
        -c 'write -q 0 1' d.raw
    assert_success
}

@test "exit status: 0 when all commands succeed, 1 when any fails" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -f raw -c 'read -q 0 1' -c flush d.raw
    assert_success
    run "$VIMG_IO" -f raw -c 'read -q 0 1' -c 'read -q 1M 1' -c flush d.raw
    assert_failure 1
    run "$VIMG_IO" -f raw -c 'read -q 1M 1' -c 'read -q 0 1' d.raw
    assert_failure 1
}
