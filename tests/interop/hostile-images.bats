#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# Hostile images: the list of the reliability reference (header matrix,
# feature bits, extension abuse, L1/refcount/snapshot/bitmap table abuse,
# names of other host files, backing loops and depth), made by
# tests/data/mkhostile.py (which also serves tests/data/mkbad.py's cases).
#
# Each case runs `vimg info`, `vimg check`, `vimg-io -r -c 'read 0 64k'`
# and `vimg convert -O raw` under `timeout 10` and a 512 MiB address-space
# limit, and expects exact exit codes: a refusal is exit 1 with one
# stderr line ("vimg..."), never a crash (>= 128, sanitizer report), a
# hang (124) or an allocation failure.  qemu-img/qemu-io 7.2 run the same
# four steps and their exit codes are asserted too, so every row records
# where we agree with QEMU and where vimg is deliberately stricter.
#
# Untrusted-source rules: `info` opens no backing file without
# --backing-chain and no external data file unless the options name it;
# json: backing names are refused; raw is never probed for a backing file.

load ../helpers

MKHOSTILE=$VIMG_SRC/tests/data/mkhostile.py
MEM=$((512 << 20))

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io python3 jq prlimit
    qemu-img create -q -f qcow2 good.qcow2 64M
    qemu-io -f qcow2 -c "write -q -P 0x5a 0 128k" good.qcow2
}

good_for() {
    case $1 in
    bm-*)
        [ -e bm.qcow2 ] || { cp good.qcow2 bm.qcow2 &&
            qemu-img bitmap --add bm.qcow2 b0; }
        echo bm.qcow2 ;;
    snap-*)
        [ -e snap.qcow2 ] || { cp good.qcow2 snap.qcow2 &&
            qemu-img snapshot -c s1 snap.qcow2; }
        echo snap.qcow2 ;;
    *) echo good.qcow2 ;;
    esac
}

# Run one step bounded in time and memory; sets rc and err.
bounded() {
    local errf=$T/step.err
    rc=0
    timeout 10 prlimit --as=$MEM "$@" >/dev/null 2>"$errf" || rc=$?
    err=$(<"$errf")
}

# Judge one vimg step: exit code as expected, and a refusal is clean.
judge() {
    local what=$1 want=$2 n
    if [[ $err == *Sanitizer* || $err == *"runtime error"* ]]; then
        echo "$what: sanitizer report: $err" >&2
        return 1
    fi
    if [ "$rc" -ne "$want" ]; then
        echo "$what: exit $rc, expected $want; stderr: ${err:0:300}" >&2
        return 1
    fi
    if [ "$rc" -eq 1 ] && [ "$what" != check ]; then
        n=$(printf '%s\n' "$err" | wc -l)
        if [ "$n" -ne 1 ] || ! [[ $err == vimg* || $err =~ ^[a-z_]+\ failed: ]]; then
            echo "$what: not a one-line error: $err" >&2
            return 1
        fi
    fi
}

# hostile CASE "INFO CHECK READ CONVERT" "QEMU-INFO CHECK READ CONVERT"
hostile() {
    local c=$1 img=x.qcow2 g
    local -a want=($2) qwant=($3) got=()
    g=$(good_for "$c")
    python3 "$MKHOSTILE" "$c" "$g" "$img"
    bounded "$VIMG" info -f qcow2 "$img"
    judge info "${want[0]}"
    bounded "$VIMG" check -f qcow2 "$img"
    judge check "${want[1]}"
    bounded "$VIMG_IO" -r -f qcow2 -c "read 0 64k" "$img"
    judge read "${want[2]}"
    bounded "$VIMG" convert -f qcow2 -O raw "$img" out.raw
    judge convert "${want[3]}"
    rm -f out.raw
    # QEMU's answer for the same image.
    bounded qemu-img info -f qcow2 "$img"; got+=($rc)
    bounded qemu-img check -f qcow2 "$img"; got+=($rc)
    bounded qemu-io -r -f qcow2 -c "read 0 64k" "$img"; got+=($rc)
    bounded qemu-img convert -f qcow2 -O raw "$img" out.raw; got+=($rc)
    rm -f out.raw
    # "x" records that QEMU fails there but not always the same way.
    for g in 0 1 2 3; do
        if [ "${qwant[$g]}" = x ] && [ "${got[$g]}" -ne 0 ]; then
            got[$g]=x
        fi
    done
    if [ "${got[*]}" != "${qwant[*]}" ]; then
        echo "qemu: exits ${got[*]}, recorded ${qwant[*]}" >&2
        return 1
    fi
}

@test "control: the good image" { hostile none "0 0 0 0" "0 0 0 0"; }

# --- header matrix: vimg "info check read convert" | qemu's -------------
@test "header: empty file" { hostile trunc-0 "1 1 1 1" "1 1 1 1"; }
@test "header: truncated to 48 bytes" { hostile trunc-48 "1 1 1 1" "1 1 1 1"; }
@test "header: v3 truncated to 100 bytes" { hostile trunc-100 "1 1 1 1" "1 1 1 1"; }
@test "header: bad magic" { hostile bad-magic "1 1 1 1" "1 1 1 1"; }
@test "header: version 1" { hostile version-1 "1 1 1 1" "1 1 1 1"; }
@test "header: version 4" { hostile version-4 "1 1 1 1" "1 1 1 1"; }
@test "header: version 2 with a v3 header (usable)" { hostile version-2-long-header "0 0 0 0" "0 0 0 0"; }
@test "header: header_length 72 (< 104)" { hostile header-length-72 "1 1 1 1" "1 1 1 1"; }
# vimg stricter: the spec wants header_length a multiple of 8.
@test "header: header_length 105 (odd)" { hostile header-length-odd "1 1 1 1" "0 0 0 0"; }
@test "header: header_length = cluster size (usable)" { hostile header-length-cluster "0 0 0 0" "0 0 0 0"; }
@test "header: header_length 0xfffffff8" { hostile header-length-huge "1 1 1 1" "1 1 1 1"; }
@test "header: cluster_bits 0" { hostile cluster-bits-0 "1 1 1 1" "1 1 1 1"; }
@test "header: cluster_bits 8" { hostile cluster-bits-8 "1 1 1 1" "1 1 1 1"; }
@test "header: cluster_bits 22" { hostile cluster-bits-22 "1 1 1 1" "1 1 1 1"; }
@test "header: cluster_bits 200" { hostile cluster-bits-200 "1 1 1 1" "1 1 1 1"; }
@test "header: size near 2^63" { hostile size-2p63 "1 1 1 1" "1 1 1 1"; }
@test "header: size 1 PiB with a small L1" { hostile size-1pb "1 1 1 1" "1 1 1 1"; }
@test "header: size not a multiple of 512 (usable)" { hostile size-unaligned "0 0 0 0" "0 0 0 0"; }

# --- L1 table ----------------------------------------------------------
# vimg stricter on reads: L1[0] is the header magic, an L2 offset far
# past EOF; QEMU reads zeroes there, vimg reports the corruption.
@test "L1: table overlapping the header" { hostile l1-overlaps-header "0 2 1 1" "0 2 0 0"; }
@test "L1: l1_size 0" { hostile l1-size-0 "1 1 1 1" "1 1 1 1"; }
# vimg stricter: a 32 MiB L1 must lie inside the file (QEMU reads past EOF).
@test "L1: 32 MiB table past EOF" { hostile l1-size-32m "1 1 1 1" "0 2 0 0"; }
@test "L1: 32 MiB + 8 bytes" { hostile l1-size-32m-plus "1 1 1 1" "1 1 1 1"; }
@test "L1: l1_size 0xffffffff" { hostile l1-size-huge "1 1 1 1" "1 1 1 1"; }
@test "L1: l1_size 0x7fffffff" { hostile l1-size-2g "1 1 1 1" "1 1 1 1"; }
@test "L1: offset unaligned" { hostile l1-offset-unaligned "1 1 1 1" "1 1 1 1"; }
@test "L1: offset past EOF" { hostile l1-offset-past-eof "1 1 1 1" "0 2 0 0"; }
@test "L1: offset near 2^64" { hostile l1-offset-huge "1 1 1 1" "1 1 1 1"; }
@test "L1: entry past EOF" { hostile l1-entry-past-eof "0 2 1 1" "0 2 0 0"; }
@test "L2: entry into the header" { hostile l2-entry-into-header "0 2 1 1" "0 2 1 1"; }
@test "L2: entry past EOF" { hostile l2-entry-past-eof "0 2 1 1" "0 2 0 0"; }

# --- refcount table ----------------------------------------------------
@test "refcount: table offset 0 (the header)" { hostile rt-offset-0 "0 2 0 0" "0 2 0 0"; }
@test "refcount: table overlapping the L1" { hostile rt-overlaps-l1 "0 1 0 0" "0 1 0 0"; }
@test "refcount: table offset unaligned" { hostile rt-offset-unaligned "1 1 1 1" "1 1 1 1"; }
@test "refcount: table offset past EOF" { hostile rt-offset-past-eof "1 1 1 1" "0 2 0 0"; }
@test "refcount: 0 table clusters" { hostile rt-clusters-0 "1 1 1 1" "1 2 1 1"; }
@test "refcount: 9 MiB table" { hostile rt-clusters-9m "1 1 1 1" "1 1 1 1"; }
@test "refcount: 0xffffffff table clusters" { hostile rt-clusters-huge "1 1 1 1" "1 1 1 1"; }
@test "refcount: refcount_order 7" { hostile refcount-order-7 "1 1 1 1" "1 1 1 1"; }
@test "refcount: refcount_order 63" { hostile refcount-order-63 "1 1 1 1" "1 1 1 1"; }

# --- feature bits ------------------------------------------------------
@test "features: unknown incompatible bit 5" { hostile incompat-bit-5 "1 1 1 1" "1 1 1 1"; }
@test "features: unknown incompatible bit 63" { hostile incompat-bit-63 "1 1 1 1" "1 1 1 1"; }
@test "features: corrupt bit (read-only use allowed)" { hostile corrupt-bit "0 0 0 0" "0 0 0 0"; }
@test "features: dirty bit without lazy refcounts" { hostile dirty-bit "0 0 0 0" "0 0 0 0"; }
@test "features: unknown compatible bit is ignored" { hostile compat-unknown-bit "0 0 0 0" "0 0 0 0"; }
@test "features: unknown autoclear bit is ignored read-only" { hostile autoclear-unknown-bit "0 0 0 0" "0 0 0 0"; }

@test "features: the corrupt bit refuses a read-write open" {
    python3 "$MKHOSTILE" corrupt-bit good.qcow2 x.qcow2
    bounded "$VIMG_IO" -f qcow2 -c "write 0 64k" x.qcow2
    judge write 1
}

# --- header extensions -------------------------------------------------
@test "extensions: length past the header cluster" { hostile ext-len-past-cluster "1 1 1 1" "1 1 1 1"; }
@test "extensions: length 0xfffffff8" { hostile ext-len-huge "1 1 1 1" "1 1 1 1"; }
@test "extensions: length 0xff00 inside a valid list" { hostile ext-unknown-len-past "0 0 0 0" "0 0 0 0"; }
@test "extensions: odd length misaligns the next one" { hostile ext-features-len-odd "1 1 1 1" "1 1 1 1"; }
@test "extensions: unknown extension is ignored" { hostile ext-unknown "0 0 0 0" "0 0 0 0"; }
# vimg stricter: QEMU lets the last duplicate win.
@test "extensions: duplicate feature-name table" { hostile ext-dup-features "1 1 1 1" "0 0 0 0"; }
@test "extensions: duplicate backing format" { hostile ext-dup-backing-fmt "1 1 1 1" "0 1 1 1"; }
@test "extensions: feature names not NUL-terminated" { hostile ext-feature-name-unterminated "0 0 0 0" "0 0 0 0"; }

# --- bitmap directory --------------------------------------------------
@test "bitmaps: nb_bitmaps 0" { hostile bm-nb-0 "1 1 1 1" "1 1 1 1"; }
@test "bitmaps: nb_bitmaps 65536" { hostile bm-nb-65536 "1 1 1 1" "1 1 1 1"; }
@test "bitmaps: reserved field set" { hostile bm-reserved "1 1 1 1" "1 1 1 1"; }
@test "bitmaps: extension too short" { hostile bm-ext-short "1 1 1 1" "1 1 1 1"; }
@test "bitmaps: directory size 1 TiB" { hostile bm-dir-size-huge "1 1 1 1" "1 1 1 1"; }
@test "bitmaps: directory size 0" { hostile bm-dir-size-0 "1 1 1 1" "1 1 1 1"; }
@test "bitmaps: directory at offset 0 (the header)" { hostile bm-dir-offset-0 "1 1 1 1" "1 1 1 1"; }
@test "bitmaps: directory offset unaligned" { hostile bm-dir-offset-unaligned "1 1 1 1" "1 1 1 1"; }
@test "bitmaps: directory past EOF" { hostile bm-dir-offset-past-eof "1 1 1 1" "1 1 1 1"; }
@test "bitmaps: directory offset near 2^64" { hostile bm-dir-offset-huge "1 1 1 1" "1 1 1 1"; }

# --- snapshot table ----------------------------------------------------
@test "snapshots: nb_snapshots 0xffffffff" { hostile snap-nb-huge "1 1 1 1" "1 1 1 1"; }
@test "snapshots: nb_snapshots 65537" { hostile snap-nb-65537 "1 1 1 1" "1 1 1 1"; }
# vimg stricter below: a broken snapshot table refuses the open; QEMU
# opens, and its check reports the corruption (rc 2).
@test "snapshots: a second entry past EOF" { hostile snap-nb-2 "1 1 1 1" "0 2 0 0"; }
@test "snapshots: table past EOF" { hostile snap-offset-past-eof "1 1 1 1" "0 2 0 0"; }
@test "snapshots: table offset unaligned" { hostile snap-offset-unaligned "1 1 1 1" "1 1 1 1"; }
@test "snapshots: table at offset 0 (the header)" { hostile snap-offset-0 "0 2 0 0" "0 2 0 0"; }
@test "snapshots: snapshot L1 past EOF" { hostile snap-l1-offset-past-eof "1 1 1 1" "0 2 0 0"; }
@test "snapshots: snapshot L1 unaligned" { hostile snap-l1-offset-unaligned "1 1 1 1" "0 2 0 0"; }
@test "snapshots: snapshot l1_size 0xffffffff" { hostile snap-l1-size-huge "1 1 1 1" "0 2 0 0"; }
@test "snapshots: id length 0xffff" { hostile snap-id-len-huge "0 2 0 0" "0 2 0 0"; }
@test "snapshots: extra data 0xfffffff0 bytes" { hostile snap-extra-huge "1 1 1 1" "1 1 1 1"; }

# --- backing files -----------------------------------------------------
@test "backing: name of 1100 bytes" { hostile backing-name-1100 "1 1 1 1" "1 1 1 1"; }
# QEMU follows json: names and probes /etc/passwd as raw; vimg refuses both.
@test "backing: json: name" { hostile 'backing:json:{"driver":"file","filename":"/etc/passwd"}' "0 0 1 1" "0 0 0 0"; }
@test "backing: /etc/passwd without a format" { hostile backing:/etc/passwd "0 0 1 1" "0 0 0 0"; }
# QEMU recurses through the loop until it runs out of file descriptors
# (exit 1) or, under the memory cap, aborts (134).
@test "backing: itself" { hostile backing-self "0 0 1 1" "0 x x x"; }

@test "backing: a 100-deep chain is usable" {
    python3 "$VIMG_SRC/tests/data/mkbad.py" chain 100 deep
    bounded "$VIMG" info --backing-chain --output=json deep/c0000.qcow2
    judge info 0
    [ "$("$VIMG" info --backing-chain --output=json deep/c0000.qcow2 | jq length)" -eq 100 ]
    bounded "$VIMG_IO" -r -f qcow2 -c "read -P 0 0 64k" deep/c0000.qcow2
    judge read 0
    bounded "$VIMG" convert -f qcow2 -O raw deep/c0000.qcow2 out.raw
    judge convert 0
    bounded qemu-img info --backing-chain deep/c0000.qcow2
    [ "$rc" -eq 0 ]
}

# --- the untrusted-source rules ----------------------------------------
# Files vimg opened (strace), for: opened_files CMD...
opened_files() {
    strace -f -qq -e trace=openat,open -o "$T/trace" "$@" >/dev/null 2>&1 || true
    grep -o '"[^"]*"' "$T/trace" | tr -d '"'
}

@test "untrusted: info opens no backing file without --backing-chain" {
    requires strace
    echo secret >victim.raw
    python3 "$MKHOSTILE" backing-raw:victim.raw good.qcow2 x.qcow2
    run opened_files "$VIMG" info x.qcow2
    assert_output --partial x.qcow2
    refute_output --partial victim.raw
    run opened_files "$VIMG" info --output=json x.qcow2
    refute_output --partial victim.raw
    # qemu-img info does not open it either.
    run opened_files qemu-img info x.qcow2
    refute_output --partial victim.raw
    # With --backing-chain the (format-recorded) backing file is opened.
    run opened_files "$VIMG" info --backing-chain x.qcow2
    assert_output --partial victim.raw
    # The info fields match qemu-img's.
    assert_info_json_equal x.qcow2
}

@test "untrusted: info opens no external data file; --image-opts may name it" {
    requires strace
    echo secret >victim.data
    python3 "$MKHOSTILE" data-file:victim.data good.qcow2 x.qcow2
    run opened_files "$VIMG" info x.qcow2
    assert_output --partial x.qcow2
    refute_output --partial victim.data
    run opened_files "$VIMG" info --backing-chain --output=json x.qcow2
    refute_output --partial victim.data
    run opened_files qemu-img info x.qcow2
    refute_output --partial victim.data
    # The name is still shown, as qemu-img shows it.
    run_split "$VIMG" info --output=json x.qcow2
    assert_success
    [ "$(jq -r '."format-specific".data."data-file"' <<<"$output")" = victim.data ]
    assert_info_json_equal x.qcow2
    # An explicit option is followed.
    run opened_files "$VIMG" info --image-opts \
        driver=qcow2,file.filename=x.qcow2,data-file.filename=victim.data
    assert_output --partial victim.data
}

@test "untrusted: a data-file name pointing at /etc/passwd" {
    # info never opens it; check only reads qcow2 metadata (leaks: the
    # data clusters GOOD had are no longer referenced by the data file).
    hostile data-file:/etc/passwd "0 3 0 0" "0 3 1 1"
}

@test "untrusted: json: backing names are refused with a clear message" {
    python3 "$MKHOSTILE" 'backing:json:{"driver":"file","filename":"victim.raw"}' \
        good.qcow2 x.qcow2
    echo secret >victim.raw
    run_split "$VIMG" info --backing-chain x.qcow2
    assert_one_line_error
    [[ $stderr == *"json: backing file name"* ]]
    run_split "$VIMG_IO" -r -f qcow2 -c "read 0 64k" x.qcow2
    assert_one_line_error
    [[ $stderr == *"json: backing file name"* ]]
    run opened_files "$VIMG" info --backing-chain x.qcow2
    refute_output --partial victim.raw
    # Without --backing-chain info works and shows the name.
    run_split "$VIMG" info x.qcow2
    assert_success
    assert_output --partial "backing file: json:"
}

@test "untrusted: loops a -> b -> a and self are clean errors" {
    qemu-img create -q -f qcow2 -u -b b.qcow2 -F qcow2 a.qcow2 1M
    qemu-img create -q -f qcow2 -u -b a.qcow2 -F qcow2 b.qcow2 1M
    bounded "$VIMG" info --backing-chain a.qcow2
    judge info 1
    bounded "$VIMG" info a.qcow2
    judge info 0
    bounded "$VIMG" convert -f qcow2 -O raw a.qcow2 out.raw
    judge convert 1
    bounded qemu-img info --backing-chain a.qcow2
    [ "$rc" -eq 1 ]
}
