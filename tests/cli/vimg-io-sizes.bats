# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-io's number syntax for offsets and lengths, as qemu-io's cvtnum
# (qemu_strtosz) takes it: decimal, 0x hex, one binary suffix
# b/k/m/g/t/p/e (either case), fractions only with a suffix.  The parsed
# value is shown by "read OFFSET 0", which echoes the offset.
load ../helpers
bats_require_minimum_version 1.5.0

# Check that vimg-io parses $1 as $2 bytes.
parses_as() {
    run --separate-stderr "$VIMG_IO" -f raw -c "read $1 0" d.raw
    if [ "$status" -ne 0 ] || [ "${lines[0]}" != "read 0/0 bytes at offset $2" ]; then
        echo "'$1': expected $2, got status $status: ${lines[0]} $stderr" >&2
        return 1
    fi
}

# Check that vimg-io rejects $1 with the "non-numeric" (EINVAL) message,
# or with "too large" when $2 is "large".
rejects() {
    local msg="Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- $1"
    [ "${2:-}" = large ] && msg="Parsing error: argument too large -- $1"
    run --separate-stderr "$VIMG_IO" -f raw -c "read $1 0" d.raw
    if [ "$status" -ne 1 ] || [ "$stderr" != "$msg" ] || [ -n "$output" ]; then
        echo "'$1': expected '$msg', got status $status: $output $stderr" >&2
        return 1
    fi
}

@test "plain decimal, leading zeros and + sign" {
    truncate -s 1T d.raw
    parses_as 0 0
    parses_as 512 512
    parses_as 010 10
    parses_as +5 5
    parses_as 1099511627776 1099511627776
}

@test "binary suffixes in either case, with an optional b" {
    truncate -s 1T d.raw
    parses_as 1b 1
    parses_as 7B 7
    parses_as 64k 65536
    parses_as 64K 65536
    parses_as 1m 1048576
    parses_as 3M 3145728
    parses_as 2g 2147483648
    parses_as 1G 1073741824
    parses_as 1t 1099511627776
    parses_as 1T 1099511627776
}

@test "p and e suffixes parse (beyond this image: Input/output error)" {
    truncate -s 1T d.raw
    run --separate-stderr "$VIMG_IO" -f raw -c 'read 1p 0' -c 'read 1E 0' d.raw
    assert_failure 1
    assert_equal "$stderr" "read failed: Input/output error
read failed: Input/output error"
}

@test "fractions need a suffix" {
    truncate -s 1T d.raw
    parses_as 1.5k 1536
    parses_as 0.5k 512
    parses_as 1.25K 1280
    parses_as 1.1k 1126
    parses_as 1.5m 1572864
    parses_as 1.k 1024
    parses_as 1.0 1
    rejects 1.5
    rejects 1.5b
    rejects .5k
    rejects 1.5e3
}

@test "hex numbers" {
    truncate -s 1T d.raw
    parses_as 0x10000 65536
    parses_as 0X10 16
    parses_as 0x1b 27
    rejects 0x
    rejects 00x10
    rejects 0x1.5k
}

@test "hex with a suffix is accepted with a deprecation warning" {
    truncate -s 1T d.raw
    run --separate-stderr "$VIMG_IO" -f raw -c 'read 0x1k 0' d.raw
    assert_success
    assert_line "read 0/0 bytes at offset 1024"
    assert_equal "$stderr" "vimg-io: warning: Using a multiplier suffix on hex numbers is deprecated: 0x1k"
}

@test "junk, negative numbers and long suffixes are rejected" {
    truncate -s 1T d.raw
    rejects 5x
    rejects 1kB
    rejects 1KiB
    rejects 1e3
    run --separate-stderr "$VIMG_IO" -f raw -c 'read -- -1 0' d.raw
    assert_failure 1
    assert_equal "$stderr" "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- -1"
    rejects abc
    rejects k
}

@test "values above INT64_MAX are too large" {
    truncate -s 1T d.raw
    rejects 9223372036854775808 large
    rejects 18446744073709551615 large
    rejects 18446744073709551616 large
    rejects 8e large
    rejects 16E large
    rejects 0x8000000000000000 large
    run --separate-stderr "$VIMG_IO" -f raw -c 'read 9223372036854775807 0' \
        -c 'read 0x7fffffffffffffff 0' d.raw
    assert_equal "$stderr" "read failed: Input/output error
read failed: Input/output error"
}

@test "suffixes work for lengths too" {
    truncate -s 1M d.raw
    run "$VIMG_IO" -f raw -c 'write -P 0x77 0.5k 1.5k' d.raw
    assert_success
    assert_line "wrote 1536/1536 bytes at offset 512"
    run "$VIMG_IO" -f raw -c 'read -q -P 0x77 512 0x600' -c 'read -q -P 0 2k 1022K' d.raw
    assert_success
}
