#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg check against qemu-img check (7.2) as the oracle.  Good images of
# every shape qemu makes (v2, v3, cluster sizes, refcount widths 1..64,
# extended L2, external data files, compression, snapshots, bitmaps, a
# lazy-refcounts crash, an overlay) are damaged one thing at a time by
# tests/data/mkdamage.py; both tools must give the same exit code, JSON
# counters and findings, and after vimg's repair qemu-img check must be
# as happy as after its own repair (or happier, where vimg repairs more).

load ../helpers

MKDAMAGE="python3 $VIMG_SRC/tests/data/mkdamage.py"

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq python3
    cp -a "$BATS_FILE_TMPDIR"/img/. .
}

mk() {
    local name=$1
    shift
    qemu-img create -q -f qcow2 "$@" "$name.qcow2" 8M
    qemu-io -c "write -P 0x11 0 192k" -c "write -P 0x22 1M 64k" \
        -c "write -P 0x33 5M 4k" "$name.qcow2" >/dev/null
}

BASES="v3 v2 c512 c2m rc1 rc2 rc4 rc8 rc32 rc64 extl2 df comp compz snap bm
lazy ovl pre"

# The base images and their damaged copies (dmg/BASE/CASE.qcow2), made
# once for the file.
setup_file() {
    command -v qemu-img >/dev/null && command -v python3 >/dev/null ||
        return 0
    mkdir -p "$BATS_FILE_TMPDIR/img"
    cd "$BATS_FILE_TMPDIR/img" || return 1
    mk v3
    mk v2 -o compat=0.10
    mk c512 -o cluster_size=512
    mk c2m -o cluster_size=2M
    local w
    for w in 1 2 4 8 32 64; do mk rc$w -o refcount_bits=$w; done
    mk extl2 -o extended_l2=on
    qemu-img create -q -f qcow2 -o data_file=df.raw df.qcow2 8M
    qemu-io -c "write -P 0x11 0 192k" -c "write 1M 64k" df.qcow2 >/dev/null
    mk src
    qemu-img convert -c -O qcow2 src.qcow2 comp.qcow2
    qemu-img convert -c -O qcow2 -o compression_type=zstd src.qcow2 \
        compz.qcow2
    rm src.qcow2
    mk snap
    qemu-img snapshot -c s1 snap.qcow2
    qemu-io -c "write -P 0x44 64k 64k" -c "write 3M 64k" snap.qcow2 >/dev/null
    qemu-img snapshot -c s2 snap.qcow2
    qemu-io -c "write -P 0x66 1M 4k" snap.qcow2 >/dev/null
    mk bm
    qemu-img bitmap --add bm.qcow2 b0
    qemu-io -c "write 2M 64k" bm.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 8M
    qemu-io -c "write -P 0x11 0 192k" -c "write 1M 64k" -c "sigraise 9" \
        lazy.qcow2 >/dev/null 2>&1 || true
    qemu-img create -q -f qcow2 -b v3.qcow2 -F qcow2 ovl.qcow2
    qemu-io -c "write -P 0x77 0 128k" -c "write 1M 64k" ovl.qcow2 >/dev/null
    mk pre -o preallocation=metadata
    local b
    for b in $BASES; do
        mkdir -p dmg/$b
        $MKDAMAGE all $b.qcow2 dmg/$b
    done
    cp df.raw dmg/df/
    cp v3.qcow2 dmg/ovl/
}

# check_same IMG [check options...]: vimg check and qemu-img check give
# the same exit code and the same JSON; with -r each repairs its own copy
# (q.qcow2, v.qcow2).
check_same() {
    local img=$1 q v qrc=0 vrc=0 qi=$1 vi=$1
    shift
    if [ $# -gt 0 ]; then
        cp "$img" q.qcow2
        cp "$img" v.qcow2
        qi=q.qcow2 vi=v.qcow2
    fi
    q=$(qemu-img check --output=json "$@" $qi 2>q.err) || qrc=$?
    v=$(timeout 20 "$VIMG" check --output=json "$@" $vi 2>v.err) ||
        vrc=$?
    # Same keys in the same order: only the file name differs.
    q=$(grep -v '"filename"' <<<"$q")
    v=$(grep -v '"filename"' <<<"$v")
    if [ "$qrc" != "$vrc" ] || [ "$q" != "$v" ]; then
        echo "check $* $img differs (< qemu-img rc=$qrc, > vimg rc=$vrc):" >&2
        diff <(echo "$q") <(echo "$v") >&2
        cat v.err >&2
        return 1
    fi
}

# The findings on stderr, without the final "Check failed" line.
findings() {
    grep -v -e '^qemu-img: ' -e '^vimg: ' "$1"
}

@test "good images: same result as qemu-img (snapshot sharing is fine)" {
    local b
    for b in $BASES; do
        check_same $b.qcow2
        [ "$b" = lazy ] || [ ! -s v.err ] ||
            { cat v.err; false; }
    done
}

@test "damage cases on a v3 image: same counters and findings" {
    local d
    for d in dmg/v3/*.qcow2; do
        check_same $d
        diff <(findings q.err) <(findings v.err)
    done
}

@test "damage matrix: every shape, every case, plain check" {
    local d n=0
    for d in dmg/*/*.qcow2; do
        check_same $d
        n=$((n + 1))
    done
    [ "$n" -gt 200 ]
}

@test "the issue's cases: exit codes and findings" {
    run_split "$VIMG" check dmg/v3/leak.qcow2
    [ "$status" -eq 3 ]
    [[ $stderr == *"Leaked cluster 10 refcount=1 reference=0"* ]]
    run_split "$VIMG" check dmg/v3/refcount-zero.qcow2
    [ "$status" -eq 2 ]
    [[ $stderr == *"ERROR cluster 5 refcount=0 reference=1"* ]]
    [[ $stderr == *"ERROR OFLAG_COPIED data cluster: l2_entry=8000000000050000 refcount=0"* ]]
    run_split "$VIMG" check dmg/v3/l2-into-l1.qcow2
    [ "$status" -eq 2 ]
    [[ $stderr == *"ERROR cluster 3 refcount=1 reference=2"* ]]
}

@test "-r leaks: same result as qemu-img's repair" {
    local d
    for d in dmg/{v3,rc1,comp,snap,df}/*.qcow2; do
        check_same $d -r leaks
    done
}

@test "-r all: same result as qemu-img's repair, and qemu-img agrees after" {
    local d rc
    for d in dmg/{v3,v2,rc1,rc64,comp,snap,bm,extl2,df,lazy}/*.qcow2; do
        case $d in *l2-past-eof* | *reftable-reserved*) continue ;; esac
        check_same $d -r all
        # vimg's repaired copy is as good for qemu as qemu's own.
        rc=0
        qemu-img check q.qcow2 >/dev/null 2>&1 || rc=$?
        run qemu-img check v.qcow2
        [ "$status" -eq "$rc" ] || {
            echo "$d: qemu-img check after vimg -r all: $status" \
                "(after qemu-img -r all: $rc)"
            false
        }
    done
}

@test "-r all repairs what qemu-img cannot: L2 past EOF, bad reftable" {
    local b c
    for b in v3 v2 rc1 extl2 comp snap; do
        for c in l2-past-eof reftable-reserved; do
            [ -f dmg/$b/$c.qcow2 ] || continue
            cp dmg/$b/$c.qcow2 d.qcow2
            run_split "$VIMG" check -r all d.qcow2
            [ "$status" -eq 0 ] || { echo "$b/$c: $stderr"; false; }
            assert_qemu_check_clean d.qcow2
        done
    done
    # The lost cluster now reads as zeroes; everything else is intact.
    cp dmg/v3/l2-past-eof.qcow2 d.qcow2
    "$VIMG" check -r all d.qcow2 >/dev/null 2>&1
    run qemu-io -r -c "read -P 0x11 0 64k" -c "read -P 0 64k 64k" \
        -c "read -P 0x11 128k 64k" -c "read -P 0x22 1M 64k" d.qcow2
    assert_success
    refute_output --partial "failed"
    [ "$(grep -c '^read ' <<<"$output")" -eq 4 ]
}

@test "repairs keep the guest data" {
    local c
    for c in leak leak-corrupt refcount-zero refcount-zero-l2 copied-clear \
        reftable-reserved corrupt; do
        cp dmg/snap/$c.qcow2 d.qcow2
        "$VIMG" check -r all d.qcow2 >/dev/null 2>&1
        qemu-img compare snap.qcow2 d.qcow2 >/dev/null
        run qemu-img snapshot -l d.qcow2
        assert_line --partial s1
    done
}

@test "a corrupt image is repaired and its corrupt bit cleared" {
    cp dmg/v3/corrupt.qcow2 d.qcow2
    run qemu-img info --output=json d.qcow2
    [ "$(jq '.["format-specific"].data.corrupt' <<<"$output")" = true ]
    run_split "$VIMG" check d.qcow2
    [ "$status" -eq 0 ]
    run_split "$VIMG" check -r all d.qcow2
    [ "$status" -eq 0 ]
    run qemu-img info --output=json d.qcow2
    [ "$(jq '.["format-specific"].data.corrupt' <<<"$output")" = false ]
}

@test "lazy-refcounts crash: read-only check changes nothing, -r all fixes" {
    local sum
    cp lazy.qcow2 d.qcow2
    sum=$(md5sum <d.qcow2)
    check_same d.qcow2
    grep -q "ERROR cluster" v.err
    cp lazy.qcow2 d.qcow2
    "$VIMG" check d.qcow2 >/dev/null 2>&1 || true
    [ "$(md5sum <d.qcow2)" = "$sum" ]
    run qemu-img info --output=json d.qcow2
    [ "$(jq '.["dirty-flag"]' <<<"$output")" = true ]
    check_same d.qcow2 -r all
    run qemu-img info --output=json v.qcow2
    [ "$(jq '.["dirty-flag"]' <<<"$output")" = false ]
    assert_qemu_check_clean v.qcow2
    # A read-write open repairs it too (the same code).
    cp lazy.qcow2 w.qcow2
    "$VIMG_IO" -c "write -P 0x99 2M 64k" w.qcow2 >/dev/null
    assert_qemu_check_clean w.qcow2
    run qemu-io -r -c "read -P 0x11 0 192k" -c "read -P 0x99 2M 64k" w.qcow2
    assert_success
    refute_output --partial "failed"
}
