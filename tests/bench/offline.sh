#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Offline toolkit benchmark (issue 3, point 10): vimg against qemu-img,
# side by side in one run.  Not part of `./build.sh check`.
#
# Images (deterministic, built once in $BENCH_DIR, default
# /tmp/vimg-bench): raw.img (1 GiB, 512 random 1-MiB extents, the rest
# holes), img.qcow2 (its qcow2 form), a 3-deep chain base<-mid<-top,
# txt.img (256 MiB of compressible text).
#
# Method: per case, one warm-up pair, then RUNS pairs run alternately
# (vimg, qemu-img, vimg, ...); outputs are removed before each run (not
# timed).  Printed: both medians and the median of the per-pair
# vimg/qemu-img ratios.  Peak RSS of vimg from /usr/bin/time -v.
#
# Usage: tests/bench/offline.sh [CASE...]   (default: every case)
#   VIMG=path/to/vimg  RUNS=5  BENCH_DIR=...
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VIMG=${VIMG:-$HERE/../../build/vimg}
QIMG=${QIMG:-qemu-img}
QIO=${QIO:-qemu-io}
RUNS=${RUNS:-5}
D=${BENCH_DIR:-/tmp/vimg-bench}

setup() {
    command -v "$QIMG" >/dev/null || { echo "qemu-img is required" >&2; exit 1; }
    [ -x "$VIMG" ] || { echo "no vimg at $VIMG (build first)" >&2; exit 1; }
    [ -x /usr/bin/time ] || apt-get install -y time >/dev/null 2>&1 || true
    mkdir -p "$D"
    python3 "$HERE/mkimages.py" "$D"
    cd "$D"
    [ -f img.qcow2 ] || "$QIMG" convert -f raw -O qcow2 raw.img img.qcow2
    if [ ! -f top.qcow2 ]; then
        local k mid=() top=()
        cp img.qcow2 base.qcow2
        "$QIMG" create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
        "$QIMG" create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2.tmp
        for ((k = 0; k < 16; k++)); do
            mid+=(-c "write -P 0xab $((k * 64 + 1))M 4M")
            top+=(-c "write -P 0xcd $((k * 64 + 3))M 2M"
                  -c "write -P 0xcd $((k * 64 + 40))M 1M")
        done
        "$QIO" -f qcow2 "${mid[@]}" mid.qcow2 >/dev/null
        "$QIO" -f qcow2 "${top[@]}" top.qcow2.tmp >/dev/null
        mv top.qcow2.tmp top.qcow2
    fi
    sync
}

now() { date +%s.%N; }

# Time one command (stdout/stderr discarded); prints seconds.
time_one() {
    local t0 t1
    t0=$(now)
    "$@" >/dev/null 2>&1
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}

median() { sort -g | awk '{ a[NR] = $1 } END { m = int((NR + 1) / 2); if (NR % 2) print a[m]; else print (a[m] + a[m + 1]) / 2 }'; }

# paired NAME PREP "VIMG-CMD" "QEMU-CMD": PREP runs (untimed) before each
# command; the commands are strings run by bash -c.
paired() {
    local name=$1 prep=$2 a=$3 b=$4 i ta tb
    local -a as=() bs=() rs=()
    for ((i = 0; i <= RUNS; i++)); do
        bash -c "$prep"
        ta=$(time_one bash -c "$a")
        bash -c "$prep"
        tb=$(time_one bash -c "$b")
        ((i == 0)) && continue # warm-up
        as+=("$ta") bs+=("$tb") rs+=("$(echo "$ta / $tb" | bc -l)")
    done
    local ma mb mr
    ma=$(printf '%s\n' "${as[@]}" | median)
    mb=$(printf '%s\n' "${bs[@]}" | median)
    mr=$(printf '%s\n' "${rs[@]}" | median)
    printf '%-16s vimg %7.3f s  qemu-img %7.3f s  ratio %5.2f\n' \
        "$name" "$ma" "$mb" "$mr"
}

# Peak RSS (MiB) of a command.
peak_rss() {
    /usr/bin/time -v bash -c "exec $1" 2>&1 >/dev/null |
        awk -F: '/Maximum resident/ { printf "%.1f", $2 / 1024 }'
}

has_cmd() { "$VIMG" "$1" --help >/dev/null 2>&1; }

# ---- cases ------------------------------------------------------------

case_qcow2_raw() {
    paired qcow2-raw "rm -f o1.raw o2.raw" \
        "$VIMG convert -f qcow2 -O raw img.qcow2 o1.raw" \
        "$QIMG convert -f qcow2 -O raw img.qcow2 o2.raw"
    echo "  peak RSS vimg: $(peak_rss "$VIMG convert -f qcow2 -O raw img.qcow2 o1.raw") MiB"
    rm -f o1.raw o2.raw
}

case_raw_qcow2() {
    paired raw-qcow2 "rm -f o1.qcow2 o2.qcow2" \
        "$VIMG convert -f raw -O qcow2 raw.img o1.qcow2" \
        "$QIMG convert -f raw -O qcow2 raw.img o2.qcow2"
    echo "  peak RSS vimg: $(peak_rss "$VIMG convert -f raw -O qcow2 raw.img o1.qcow2") MiB"
    rm -f o1.qcow2 o2.qcow2
}

case_chain_qcow2() {
    paired chain-qcow2 "rm -f o1.qcow2 o2.qcow2" \
        "$VIMG convert -f qcow2 -O qcow2 top.qcow2 o1.qcow2" \
        "$QIMG convert -f qcow2 -O qcow2 top.qcow2 o2.qcow2"
    rm -f o1.qcow2 o2.qcow2
}

case_compressed() {
    paired compressed "rm -f o1.qcow2 o2.qcow2" \
        "$VIMG convert -c -f raw -O qcow2 txt.img o1.qcow2" \
        "$QIMG convert -c -f raw -O qcow2 txt.img o2.qcow2"
    echo "  peak RSS vimg: $(peak_rss "$VIMG convert -c -f raw -O qcow2 txt.img o1.qcow2") MiB"
    rm -f o1.qcow2 o2.qcow2
}

# Hooks for the other offline commands: each skips until `vimg CMD`
# exists.  The images they change are restored before every run.
case_commit() {
    has_cmd commit || { echo "commit           (vimg commit not built: skipped)"; return; }
    local prep="cp base.qcow2 cb.qcow2 && cp mid.qcow2 cm.qcow2 && cp top.qcow2 ct.qcow2 && \
$QIMG rebase -u -f qcow2 -b cb.qcow2 -F qcow2 cm.qcow2 && $QIMG rebase -u -f qcow2 -b cm.qcow2 -F qcow2 ct.qcow2"
    paired commit "$prep" "$VIMG commit -f qcow2 ct.qcow2" "$QIMG commit -f qcow2 ct.qcow2"
    bash -c "$prep"
    echo "  peak RSS vimg: $(peak_rss "$VIMG commit -f qcow2 ct.qcow2") MiB"
    rm -f cb.qcow2 cm.qcow2 ct.qcow2
}

case_stream() {
    has_cmd stream-local || { echo "stream-local     (vimg stream-local not built: skipped)"; return; }
    local prep="cp top.qcow2 st.qcow2"
    paired stream-local "$prep" "$VIMG stream-local -f qcow2 st.qcow2" \
        "$QIMG rebase -f qcow2 -b '' st.qcow2"
    rm -f st.qcow2
}

case_map() {
    has_cmd map || { echo "map              (vimg map not built: skipped)"; return; }
    paired map "true" "$VIMG map --output=json -f qcow2 top.qcow2" \
        "$QIMG map --output=json -f qcow2 top.qcow2"
}

case_check() {
    has_cmd check || { echo "check            (vimg check not built: skipped)"; return; }
    paired check "true" "$VIMG check -f qcow2 img.qcow2" \
        "$QIMG check -f qcow2 img.qcow2"
}

ALL=(qcow2_raw raw_qcow2 chain_qcow2 compressed commit stream map check)

main() {
    setup
    echo "vimg: $VIMG; $($QIMG --version | head -1); runs: $RUNS pairs + warm-up; $(nproc) cpus"
    local c
    for c in "${@:-${ALL[@]}}"; do
        "case_${c//-/_}"
    done
}

[[ ${BASH_SOURCE[0]} != "$0" ]] || main "$@"
