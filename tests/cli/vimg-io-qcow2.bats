# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-io on qcow2 images: data round trips, map/alloc of the top layer
# only, reads through a backing file, zeroes and discard, and a cross
# check against qemu-io when it is installed.
load ../helpers
bats_require_minimum_version 1.5.0

# Create a qcow2 image: mkqcow2 FILE SIZE [BACKING].  vimg create first;
# qemu-img only when vimg create cannot do it.
mkqcow2() {
    local b=()
    [ -n "${3:-}" ] && b=(-b "$3" -F qcow2)
    if "$VIMG" create -q -f qcow2 "${b[@]}" "$1" "$2" >/dev/null 2>&1 &&
       [ -s "$1" ]; then
        return 0
    fi
    rm -f "$1"
    requires qemu-img
    qemu-img create -q -f qcow2 "${b[@]}" "$1" "$2"
}

@test "qcow2: a new image reads as zeroes and maps as unallocated" {
    mkqcow2 d.qcow2 64M
    run "$VIMG_IO" -f qcow2 -c 'read -q -P 0 0 1M' -c 'read -q -P 0 63M 1M' \
        -c map -c length d.qcow2
    assert_success
    assert_output "64 MiB (0x4000000) bytes not allocated at offset 0 bytes (0x0)
64 MiB"
}

@test "qcow2: written data reads back, also after reopening" {
    mkqcow2 d.qcow2 64M
    run "$VIMG_IO" -f qcow2 -c 'write -P 0xab 0 64k' -c 'read -P 0xab 0 64k' \
        -c 'write -q -P 0x5c 1000 3000' d.qcow2
    assert_success
    assert_line --index 0 "wrote 65536/65536 bytes at offset 0"
    assert_line --index 2 "read 65536/65536 bytes at offset 0"
    run "$VIMG_IO" -r -f qcow2 -c 'read -q -P 0xab 0 1000' \
        -c 'read -q -P 0x5c 1000 3000' -c 'read -q -P 0xab 4000 61536' \
        -c 'read -q -P 0 64k 1M' d.qcow2
    assert_success
    assert_output ""
    run "$VIMG_IO" -r -c 'read -q -P 0xab 0 512' d.qcow2
    assert_success
}

@test "qcow2: pattern mismatch is reported and exits 1" {
    mkqcow2 d.qcow2 1M
    "$VIMG_IO" -f qcow2 -c 'write -q -P 1 0 4k' d.qcow2
    run --separate-stderr "$VIMG_IO" -f qcow2 -c 'read -P 2 0 4k' d.qcow2
    assert_failure 1
    assert_equal "$stderr" "Pattern verification failed at offset 0, 4096 bytes"
}

@test "qcow2: map merges allocated clusters and shows holes" {
    mkqcow2 d.qcow2 64M
    "$VIMG_IO" -f qcow2 -c 'write -q 0 64k' -c 'write -q 64k 64k' \
        -c 'write -q 1M 100k' d.qcow2
    run "$VIMG_IO" -f qcow2 -c map d.qcow2
    assert_success
    assert_output "128 KiB (0x20000) bytes     allocated at offset 0 bytes (0x0)
896 KiB (0xe0000) bytes not allocated at offset 128 KiB (0x20000)
128 KiB (0x20000) bytes     allocated at offset 1 MiB (0x100000)
62.875 MiB (0x3ee0000) bytes not allocated at offset 1.125 MiB (0x120000)"
}

@test "qcow2: alloc counts allocated bytes of the range" {
    mkqcow2 d.qcow2 4M
    "$VIMG_IO" -f qcow2 -c 'write -q 64k 64k' d.qcow2
    run "$VIMG_IO" -f qcow2 -c 'alloc 0 256k' -c 'alloc 64k' -c 'alloc 0' \
        -c 'alloc 3M 2M' d.qcow2
    assert_success
    assert_output "65536/262144 bytes allocated at offset 0 bytes
512/512 bytes allocated at offset 64 KiB
0/512 bytes allocated at offset 0 bytes
0/1048576 bytes allocated at offset 3 MiB"
}

@test "qcow2 overlay: reads see the backing file, map shows the top only" {
    mkqcow2 base.qcow2 4M
    "$VIMG_IO" -f qcow2 -c 'write -q -P 0x11 0 1M' base.qcow2
    mkqcow2 top.qcow2 4M base.qcow2
    run "$VIMG_IO" -f qcow2 -c 'write -q -P 0x22 512k 64k' \
        -c 'read -q -P 0x11 0 512k' -c 'read -q -P 0x22 512k 64k' \
        -c 'read -q -P 0x11 576k 448k' -c 'read -q -P 0 1M 3M' -c map top.qcow2
    assert_success
    assert_output "512 KiB (0x80000) bytes not allocated at offset 0 bytes (0x0)
64 KiB (0x10000) bytes     allocated at offset 512 KiB (0x80000)
3.438 MiB (0x370000) bytes not allocated at offset 576 KiB (0x90000)"
    # The backing file is unchanged.
    run "$VIMG_IO" -r -f qcow2 -c 'read -q -P 0x11 0 1M' base.qcow2
    assert_success
}

@test "qcow2 overlay: a partial-cluster write keeps the backing data around it" {
    mkqcow2 base.qcow2 1M
    "$VIMG_IO" -f qcow2 -c 'write -q -P 0x33 0 1M' base.qcow2
    mkqcow2 top.qcow2 1M base.qcow2
    run "$VIMG_IO" -f qcow2 -c 'write -q -P 0x44 1000 10' \
        -c 'read -q -P 0x33 0 1000' -c 'read -q -P 0x44 1000 10' \
        -c 'read -q -P 0x33 1010 1047566' top.qcow2
    assert_success
    assert_output ""
}

@test "qcow2: write -z and discard make ranges read as zeroes" {
    mkqcow2 d.qcow2 4M
    "$VIMG_IO" -f qcow2 -c 'write -q -P 0x55 0 1M' d.qcow2
    run "$VIMG_IO" -f qcow2 -c 'write -q -z 64k 64k' -c 'write -q -z -u 256k 128k' \
        -c 'write -q -z 1000 24' -c 'discard -q 512k 64k' d.qcow2
    assert_success
    run "$VIMG_IO" -f qcow2 -c 'read -q -P 0x55 0 1000' -c 'read -q -P 0 1000 24' \
        -c 'read -q -P 0x55 1024 64512' -c 'read -q -P 0 64k 64k' \
        -c 'read -q -P 0x55 128k 128k' -c 'read -q -P 0 256k 128k' \
        -c 'read -q -P 0x55 384k 128k' -c 'read -q -P 0 512k 64k' \
        -c 'read -q -P 0x55 576k 448k' d.qcow2
    assert_success
    assert_output ""
}

@test "qcow2: writes past the virtual size fail; write -c needs whole clusters" {
    mkqcow2 d.qcow2 1M
    run --separate-stderr "$VIMG_IO" -f qcow2 -c 'write 1M 512' -c 'write -c 0 4k' d.qcow2
    assert_failure 1
    assert_equal "$stderr" "write failed: Input/output error
write failed: Invalid argument (compressed writes must cover whole clusters (65536 bytes))"
    run "$VIMG_IO" -f qcow2 -c map d.qcow2
    assert_output "1 MiB (0x100000) bytes not allocated at offset 0 bytes (0x0)"
}

@test "qcow2: probed without -f, also for writing; --image-opts works" {
    mkqcow2 d.qcow2 1M
    run --separate-stderr "$VIMG_IO" -c 'write -q -P 7 0 4k' d.qcow2
    assert_success
    assert_equal "$stderr" ""
    run "$VIMG_IO" --image-opts -c 'read -q -P 7 0 4k' \
        driver=qcow2,file.filename=d.qcow2
    assert_success
}

@test "qcow2: -r and -U refuse writes and leave the image alone" {
    mkqcow2 d.qcow2 1M
    cp d.qcow2 orig.qcow2
    run "$VIMG_IO" -r -f qcow2 -c 'write 0 4k' d.qcow2
    assert_failure 1
    run "$VIMG_IO" -U -f qcow2 -c 'discard 0 4k' -c 'read -q 0 4k' d.qcow2
    assert_failure 1
    cmp d.qcow2 orig.qcow2
}

@test "qcow2: qemu-io reads what vimg-io wrote, and the reverse" {
    requires qemu-io qemu-img
    mkqcow2 d.qcow2 8M
    "$VIMG_IO" -f qcow2 -c 'write -q -P 0x61 0 96k' -c 'write -q -P 0x62 3M 5000' d.qcow2
    assert_qemu_check_clean d.qcow2
    run qemu-io -f qcow2 -c 'read -q -P 0x61 0 96k' -c 'read -q -P 0x62 3M 5000' \
        -c 'read -q -P 0 96k 2976k' -c 'write -q -P 0x63 5M 1M' d.qcow2
    assert_success
    assert_output ""
    run "$VIMG_IO" -f qcow2 -c 'read -q -P 0x63 5M 1M' -c 'read -q -P 0x61 0 96k' \
        -c 'write -q -z 0 64k' -c 'discard -q 3M 64k' d.qcow2
    assert_success
    assert_output ""
    assert_qemu_check_clean d.qcow2
    run qemu-io -r -f qcow2 -c 'read -q -P 0 0 64k' -c 'read -q -P 0x61 64k 32k' \
        -c 'read -q -P 0 3M 64k' d.qcow2
    assert_success
    assert_output ""
}

@test "qcow2: map and alloc output equal qemu-io's" {
    requires qemu-io
    mkqcow2 d.qcow2 16M
    "$VIMG_IO" -f qcow2 -c 'write -q 0 10k' -c 'write -q 200k 300k' \
        -c 'write -q 4M 1M' -c 'write -q 16320k 64k' d.qcow2
    run "$VIMG_IO" -r -f qcow2 -c map -c 'alloc 0 1M' -c 'alloc 100k' \
        -c length d.qcow2
    assert_success
    expected=$(qemu-io -r -f qcow2 -c map -c 'alloc 0 1M' -c 'alloc 100k' \
        -c length d.qcow2)
    assert_equal "$output" "$expected"
}

@test "qcow2: truncate grows the image; the new tail reads as zeroes" {
    mkqcow2 d.qcow2 1M
    run "$VIMG_IO" -f qcow2 -c 'write -q -P 5 0 1M' -c 'truncate 3M' -c length \
        -c 'read -q -P 5 0 1M' -c 'read -q -P 0 1M 2M' d.qcow2
    assert_success
    assert_output "3 MiB"
    run "$VIMG_IO" -r -f qcow2 -c length -c map d.qcow2
    assert_output "3 MiB
1 MiB (0x100000) bytes     allocated at offset 0 bytes (0x0)
2 MiB (0x200000) bytes not allocated at offset 1 MiB (0x100000)"
}
