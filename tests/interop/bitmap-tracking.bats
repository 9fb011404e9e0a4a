#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# Write tracking in persistent qcow2 bitmaps, with QEMU as the oracle.
# Twin images (same qemu-img create and qemu-img bitmap --add) get the
# same writes, one through qemu-io or qemu-img, the other through vimg-io
# or vimg; the dirty extents that `qemu-nbd -r -B NAME` exports (read
# with nbdinfo --map=qemu:dirty-bitmap:NAME) must then be identical.
# Covered: write, write -z, discard (partial clusters too, also as the
# first request), writes
# crossing granules, first and last sector, sizes that are not a
# multiple of the granularity, granularities 512/4k/64k/1M; writes by
# convert -n, commit (into the base's bitmap), stream-local (against
# qemu-img rebase -b ''), and resize then writing past the old end.  A
# disabled bitmap stays clean, qemu-img check is clean and no bitmap is
# left in use after a clean exit; a crash after a write leaves them in
# use (--clear refused, --remove works); after a --clear only the later
# writes are dirty.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io qemu-nbd nbdinfo jq
}

# Dirty extents of bitmap $2 of image $1 per qemu-nbd -B, one
# "start length" line each, neighbours merged.
qemu_dirty() {
    local sock="$T/nbd.sock" pidf="$T/nbd.pid" pid out rc=0
    qemu-nbd -r --fork --pid-file="$pidf" -k "$sock" -f qcow2 -B "$2" "$1" ||
        return 1
    pid=$(<"$pidf")
    BG_PIDS+=("$pid")
    out=$(nbdinfo --map="qemu:dirty-bitmap:$2" "nbd+unix:///?socket=$sock") ||
        rc=$?
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$sock" "$pidf"
    [ "$rc" -eq 0 ] || return 1
    awk '$3 == 1 { if (n && s + l == $1) l += $2;
                   else { if (n) print s, l; s = $1; l = $2; n = 1 } }
         END { if (n) print s, l }' <<<"$out"
}

# twins SIZE GRAN [create -o opts]: q.qcow2 (qemu's) and v.qcow2 (vimg's)
# with enabled bitmap "b" and disabled bitmap "off" of granularity GRAN.
twins() {
    local i
    for i in q v; do
        qemu-img create -q -f qcow2 ${3:+-o "$3"} "$i.qcow2" "$1"
        qemu-img bitmap --add -g "$2" "$i.qcow2" b
        qemu-img bitmap --add -g "$2" --disable "$i.qcow2" off
    done
}

# Both images of the twins: the qemu-io command list "$@" on q.qcow2 and
# the same through vimg-io on v.qcow2.
both_io() {
    local args=() c
    for c in "$@"; do args+=(-c "$c"); done
    qemu-io -f qcow2 "${args[@]}" q.qcow2 >/dev/null
    vimg_io_t -f qcow2 "${args[@]}" v.qcow2 >/dev/null
}

# A consistent image: qemu-img check clean, no bitmap in use.
assert_consistent() {
    assert_qemu_check_clean "$1"
    qemu-img info --output=json "$1" |
        jq -e '[.["format-specific"].data.bitmaps[]?.flags[] |
                select(. == "in-use")] == []' >/dev/null ||
        { echo "$1: a bitmap is left in use" >&2; return 1; }
}

# Bitmap $1 (default b) holds the same dirty extents in q.qcow2 and
# v.qcow2, not none; "off" stays clean in both; both are consistent.
assert_twins_agree() {
    local want got
    want=$(qemu_dirty q.qcow2 "${1:-b}") && got=$(qemu_dirty v.qcow2 "${1:-b}") ||
        return 1
    if [ "$want" != "$got" ]; then
        echo "dirty extents differ (< qemu, > vimg):" >&2
        diff <(echo "$want") <(echo "$got") >&2
        return 1
    fi
    [ -n "$want" ] || { echo "nothing dirty" >&2; return 1; }
    if qemu-img info --output=json q.qcow2 | jq -e '.["format-specific"].data.bitmaps[] |
                                                   select(.name == "off")' >/dev/null; then
        [ -z "$(qemu_dirty q.qcow2 off)" ] && [ -z "$(qemu_dirty v.qcow2 off)" ] ||
            { echo "disabled bitmap got dirty" >&2; return 1; }
    fi
    assert_consistent q.qcow2 && assert_consistent v.qcow2
}

vsize() { qemu-img info --output=json "$1" | jq '.["virtual-size"]'; }

@test "write, write -z and discard mark the same granules as qemu-io" {
    local g size s
    for g in 512 4k 64k 1M; do
        for size in 16M $((5 * 1048576 + 3 * 512)) $((3 * 1048576 + 65536 + 512)); do
            rm -f q.qcow2 v.qcow2
            twins "$size" "$g"
            s=$(vsize q.qcow2)
            both_io "write 0 512" "write -P 7 70k 8k" "write 130k 1k" \
                "write -z 200k 4k" "write -z 300k 130k" "write -z -u 1M 64k" \
                "write 2047k 2k" "discard 1100k 64k" "discard 2500k 3k" \
                "write -z $((s / 2 + 512)) 1536" "discard $((s / 2 + 65536)) 200k" \
                "write $((s - 4096)) 4k" "write $((s - 512)) 512"
            assert_twins_agree ||
                { echo "granularity $g, size $size" >&2; return 1; }
        done
    done
}

@test "a partial-cluster discard as the very first request is tracked" {
    twins 4M 4k
    both_io "discard 70k 8k"
    assert_twins_agree
}

@test "the same writes on a 4k-cluster image, and a zero write over data" {
    twins 8M 64k cluster_size=4096
    qemu-io -f qcow2 -c 'write -P 1 0 1M' q.qcow2 >/dev/null
    qemu-io -f qcow2 -c 'write -P 1 0 1M' v.qcow2 >/dev/null
    for i in q v; do qemu-img bitmap --clear "$i.qcow2" b; done
    both_io "write -z -u 4k 4k" "discard 200k 6k" "write -z 2M 4k" \
        "discard 3M 1M" "write $((8 * 1048576 - 512)) 512"
    assert_twins_agree
}

@test "convert -n into a target with an enabled bitmap" {
    twins 8M 64k
    # Old data in the targets, written before the bitmaps saw anything.
    for i in q v; do
        qemu-io -f qcow2 -c 'write -P 9 1M 256k' -c 'write -P 9 6M 64k' \
            "$i.qcow2" >/dev/null
        qemu-img bitmap --clear "$i.qcow2" b
    done
    qemu-img create -q -f raw src.raw 8M
    qemu-io -f raw -c 'write -P 1 0 64k' -c 'write -P 2 3M 200k' \
        -c "write -P 3 $((8 * 1048576 - 4096)) 4k" src.raw >/dev/null
    qemu-img convert -n -f raw -O qcow2 src.raw q.qcow2
    vimg_t convert -n -f raw -O qcow2 src.raw v.qcow2
    assert_twins_agree
    qemu-img compare -f qcow2 -F qcow2 q.qcow2 v.qcow2
}

@test "commit marks the committed ranges in the base's bitmap" {
    local i
    for i in q v; do
        mkdir "$i"
        qemu-img create -q -f qcow2 "$i/base.qcow2" 8M
        qemu-io -f qcow2 -c 'write -P 1 0 4M' "$i/base.qcow2" >/dev/null
        qemu-img bitmap --add -g 64k "$i/base.qcow2" b
        qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$i/top.qcow2"
        qemu-img bitmap --add "$i/top.qcow2" tb
        qemu-io -f qcow2 -c 'write -P 2 64k 64k' -c 'write -P 3 1M 100k' \
            -c 'write -z 3M 64k' -c 'write -P 4 7M 4k' "$i/top.qcow2" >/dev/null
        qemu-img bitmap --clear "$i/top.qcow2" tb
    done
    qemu-img commit -q q/top.qcow2
    vimg_t commit -q v/top.qcow2
    # Emptying the top is no guest write: its bitmap stays clean.
    [ -z "$(qemu_dirty q/top.qcow2 tb)" ] && [ -z "$(qemu_dirty v/top.qcow2 tb)" ]
    assert_consistent v/top.qcow2
    mv q/base.qcow2 q.qcow2 && mv v/base.qcow2 v.qcow2
    assert_twins_agree
    qemu-img compare -f qcow2 -F qcow2 q.qcow2 v.qcow2
}

@test "stream-local marks what it copies, like qemu-img rebase -b ''" {
    local i
    for i in q v; do
        mkdir "$i"
        qemu-img create -q -f qcow2 "$i/base.qcow2" 8M
        # Whole clusters, so that rebase (which writes only the sectors
        # that differ) and stream (whole clusters) write the same.
        qemu-io -f qcow2 -c 'write -P 1 0 128k' -c 'write -P 2 2M 64k' \
            -c "write -P 3 $((8 * 1048576 - 65536)) 64k" "$i/base.qcow2" >/dev/null
        qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$i/top.qcow2"
        qemu-img bitmap --add -g 64k "$i/top.qcow2" b
        qemu-io -f qcow2 -c 'write -P 4 64k 64k' -c 'write -P 5 5M 64k' \
            "$i/top.qcow2" >/dev/null
    done
    qemu-img rebase -q -f qcow2 -b '' q/top.qcow2
    vimg_t stream-local -q v/top.qcow2
    mv q/top.qcow2 q.qcow2 && mv v/top.qcow2 v.qcow2
    assert_twins_agree
    qemu-img compare -f qcow2 -F qcow2 q.qcow2 v.qcow2
}

@test "resize grows the bitmaps; writes past the old end are tracked" {
    twins $((5 * 1048576 + 512)) 64k
    both_io "write 1M 4k"
    qemu-img resize -q q.qcow2 9M
    vimg_t resize -q v.qcow2 9M
    both_io "write 5M 64k" "write 8M 4k" "write $((9 * 1048576 - 512)) 512"
    assert_twins_agree
    [ "$(vsize v.qcow2)" -eq $((9 * 1048576)) ]
}

@test "growing within one vimg-io session, then writing past the old end" {
    twins $((3 * 1048576 + 1024)) 4k
    both_io "write 0 4k" "truncate 6M" "write 3M 8k" "write $((6 * 1048576 - 4096)) 4k"
    assert_twins_agree
}

@test "a crash after a write leaves the bitmaps in use: remove only" {
    qemu-img create -q -f qcow2 v.qcow2 8M
    qemu-img bitmap --add v.qcow2 b
    qemu-img bitmap --add --disable v.qcow2 off
    vimg_io_t -f qcow2 -c 'write 64k 64k' -c flush -c 'sigraise 9' v.qcow2 \
        >/dev/null 2>&1 || true
    assert_qemu_check_clean v.qcow2
    run qemu-img info --output=json v.qcow2
    assert_equal "$(jq -c '[.["format-specific"].data.bitmaps[] | .flags]' <<<"$output")" \
        '[["in-use","auto"],["in-use"]]'
    # qemu-img's two-line message: inconsistent, try remove.
    run_split "$VIMG" bitmap --clear v.qcow2 b
    [ "$status" -eq 1 ]
    [[ $stderr == "vimg: bitmap: "*"'b' is inconsistent"*remove* ]]
    run_split "$VIMG" bitmap --remove v.qcow2 b
    assert_success
    run_split "$VIMG" bitmap --remove v.qcow2 off
    assert_success
    run qemu-img info --output=json v.qcow2
    assert_equal "$(jq -c '.["format-specific"].data.bitmaps // []' <<<"$output")" '[]'
    assert_qemu_check_clean v.qcow2
}

@test "incremental: after bitmap --clear only the later writes are dirty" {
    twins 16M 64k
    both_io "write 0 1M" "write -z 4M 64k" "discard 8M 128k"
    qemu-img bitmap --clear q.qcow2 b
    vimg_t bitmap --clear v.qcow2 b
    both_io "write 2M 4k" "write 12M 100k"
    assert_twins_agree
    [ "$(qemu_dirty v.qcow2 b)" = "2097152 65536
12582912 131072" ]
}

@test "vimg-io and qemu-io agree over many random requests" {
    local i cmds=() off len op
    twins $((32 * 1048576 - 512)) 4k
    RANDOM=42
    for ((i = 0; i < 200; i++)); do
        off=$(((RANDOM * 32768 + RANDOM) % (32 * 2048 - 1) * 512))
        len=$(((RANDOM % 512 + 1) * 512))
        ((off + len <= 32 * 1048576 - 512)) || len=$((32 * 1048576 - 512 - off))
        case $((RANDOM % 4)) in
        0 | 1) op="write" ;;
        2) op="write -z" ;;
        3) op="discard" ;;
        esac
        cmds+=("$op $off $len")
    done
    both_io "${cmds[@]}"
    assert_twins_agree
}
