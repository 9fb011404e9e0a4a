#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# NBD server benchmark: vimg-nbd against qemu-nbd and nbdkit (file
# plugin, raw only), side by side in one run.  Not part of
# `./build.sh check`.
#
# Images (deterministic, built once in $WORKDIR, default
# /tmp/vimg-bench-nbd, a real file system, not tmpfs):
#   full.img    $SIZE (default 1 GiB) raw, FULLY allocated with random bytes
#               (Python random.Random(42), 1 MiB at a time), so every read
#               moves data: no holes for a server to answer cheaply
#   full.qcow2  qemu-img convert -f raw -O qcow2 full.img
# The write cases copy full.img (a local file) into the export.
#
# Servers, each on its own unix socket, started and stopped by PID:
#   vimg     vimg-nbd -t -e 4 -f FMT [-r] -k SOCK FILE   (default --workers 4)
#   qemu     qemu-nbd -t -e 4 -f FMT [-r] --cache=writeback --aio=threads -k SOCK FILE
#   nbdkit   nbdkit -f [-r] -U SOCK file FILE            (raw only; default threads)
# -r for the read cases, writable for the write cases.  No server and no
# client flushes: nbdcopy runs without --flush, and everything stays in the
# page cache (the machine has far more RAM than the images).
#
# Cases (CASES or arguments; default all):
#   read_raw read_qcow2     nbdcopy -C 1 / -C 4 URI null:  (whole export)
#   write_raw write_qcow2   nbdcopy -C 1 / -C 4 full.img URI; the target is
#                           recreated before every run (raw: a new sparse
#                           file; qcow2: qemu-img create of the same size)
#                           and its server restarted (untimed), then `sync`
#   randread_raw randread_qcow2
#                           nbd-randread URI -d 16 -b 4096 -t $RANDSECS
#                           (tests/bench/nbd-randread.c, one connection)
#
# Method: one warm-up round, then RUNS rounds; in each round the servers
# run one after the other (vimg, qemu, nbdkit, vimg, ...).  Printed: the
# median MiB/s (or IOPS) of each server and the median of the per-round
# ratios vimg/qemu and vimg/nbdkit, as RATES: above 1 = vimg faster.
# Second line: the server's CPU time (user + system, /proc/PID/stat) per
# GiB copied, or per random read in microseconds (lower is better); the
# rate ratios are noisy on a shared machine, CPU per unit of work less so.
#
# Usage: tests/bench/nbd.sh [CASE...]
#   VIMG_NBD=path/to/vimg-nbd  RUNS=5  SIZE=1G  WORKDIR=...  RANDSECS=5
#   CASES="read_raw write_raw"  QEMU_NBD=qemu-nbd  NBDKIT=nbdkit
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VIMG_NBD=${VIMG_NBD:-$HERE/../../build/vimg-nbd}
QEMU_NBD=${QEMU_NBD:-qemu-nbd}
NBDKIT=${NBDKIT:-nbdkit}
QIMG=${QIMG:-qemu-img}
RUNS=${RUNS:-5}
SIZE=${SIZE:-1G}
RANDSECS=${RANDSECS:-5}
D=${WORKDIR:-/tmp/vimg-bench-nbd}

SIZE_B=$(numfmt --from=iec "$SIZE")
SIZE_MIB=$((SIZE_B / 1048576))
TOOL=""          # nbd-randread binary (built in a temp dir)
declare -A PIDS  # server name -> pid

die() { echo "nbd.sh: $*" >&2; exit 1; }

setup() {
    local c
    for c in "$QEMU_NBD" "$NBDKIT" "$QIMG" nbdcopy nbdinfo cc pkg-config python3; do
        command -v "$c" >/dev/null || die "$c is required"
    done
    [ -x "$VIMG_NBD" ] || die "no vimg-nbd at $VIMG_NBD (build first)"
    pkg-config --exists libnbd || die "libnbd development files are required"
    ((SIZE_B % 1048576 == 0)) || die "SIZE must be a whole number of MiB"
    mkdir -p "$D"
    TMP=$(mktemp -d)
    trap cleanup EXIT
    TOOL=$TMP/nbd-randread
    # shellcheck disable=SC2046
    cc -O2 -o "$TOOL" "$HERE/nbd-randread.c" $(pkg-config --cflags --libs libnbd)
    cd "$D"
    if [ ! -f full.img ] || [ "$(stat -c %s full.img)" != "$SIZE_B" ]; then
        rm -f full.img full.qcow2
        python3 - "$SIZE_MIB" <<'EOF'
import random, sys
rng = random.Random(42)
with open("full.img.tmp", "wb") as f:
    for _ in range(int(sys.argv[1])):
        f.write(rng.randbytes(1 << 20))
EOF
        mv full.img.tmp full.img
    fi
    [ -f full.qcow2 ] || "$QIMG" convert -f raw -O qcow2 full.img full.qcow2
    sync
}

cleanup() {
    local n
    for n in "${!PIDS[@]}"; do stop_server "$n"; done
    [ -n "${TMP:-}" ] && rm -rf "$TMP"
    rm -f "$D"/*.sock "$D"/tgt.*
}

uri() { echo "nbd+unix:///?socket=$D/$1.sock"; }

# start_server NAME FMT FILE ro|rw: in the background, waits until it
# answers.
start_server() {
    local name=$1 fmt=$2 file=$3 mode=$4 sock=$D/$1.sock i ro=()
    [ "$mode" = ro ] && ro=(-r)
    rm -f "$sock"
    case $name in
    vimg) "$VIMG_NBD" -t -e 4 -f "$fmt" "${ro[@]}" -k "$sock" "$file" \
              </dev/null >/dev/null 2>"$D/$name.log" & ;;
    qemu) "$QEMU_NBD" -t -e 4 -f "$fmt" "${ro[@]}" --cache=writeback \
              --aio=threads -k "$sock" "$file" \
              </dev/null >/dev/null 2>"$D/$name.log" & ;;
    nbdkit) "$NBDKIT" -f "${ro[@]}" -U "$sock" file "$file" \
              </dev/null >/dev/null 2>"$D/$name.log" & ;;
    esac
    PIDS[$name]=$!
    for ((i = 0; i < 200; i++)); do
        [ -S "$sock" ] && nbdinfo --size "$(uri "$name")" >/dev/null 2>&1 && return 0
        kill -0 "${PIDS[$name]}" 2>/dev/null || break
        sleep 0.05
    done
    cat "$D/$name.log" >&2
    die "$name did not start"
}

stop_server() {
    local pid=${PIDS[$1]:-}
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PIDS[$1]"
    rm -f "$D/$1.sock"
}

now() { date +%s.%N; }

# CPU seconds (user + system, all threads) used so far by server NAME.
cpu_of() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / t }' "/proc/${PIDS[$1]}/stat"; }

# Wall seconds of one command (its output discarded; failure is fatal).
time_one() {
    local t0 t1
    t0=$(now)
    "$@" >/dev/null 2>"$D/client.log" || { cat "$D/client.log" >&2; die "failed: $*"; }
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}

median() { sort -g | awk '{ a[NR] = $1 } END { m = int((NR + 1) / 2); if (NR % 2) print a[m]; else print (a[m] + a[m + 1]) / 2 }'; }

# report NAME UNIT SERVERS... : RATES[server] holds the per-round rates
# (higher = better); prints medians and the median per-round ratios.
declare -A RATES CPUS
# shellcheck disable=SC2086 # the rates are split on purpose
report() {
    local name=$1 unit=$2 cunit=$3 s line v r i
    local -a va pa
    shift 3
    line=$(printf '%-22s' "$name")
    for s in "$@"; do
        v=$(printf '%s\n' ${RATES[$s]} | median)
        line+=$(printf '  %s %8.0f' "$s" "$v")
    done
    line+=" $unit"
    read -ra va <<<"${RATES[vimg]}"
    for s in "$@"; do
        [ "$s" = vimg ] && continue
        read -ra pa <<<"${RATES[$s]}"
        r=$(for ((i = 0; i < ${#va[@]}; i++)); do echo "${va[i]} / ${pa[i]}" | bc -l; done | median)
        line+=$(printf '  vimg/%s %5.2f' "$s" "$r")
    done
    echo "$line"
    line=$(printf '%-22s' "  server cpu")
    for s in "$@"; do
        v=$(printf '%s\n' ${CPUS[$s]} | median)
        line+=$(printf '  %s %8.3f' "$s" "$v")
    done
    echo "$line $cunit"
    RATES=() CPUS=()
}

servers_for() { if [ "$1" = raw ]; then echo vimg qemu nbdkit; else echo vimg qemu; fi; }
image_for() { if [ "$1" = raw ]; then echo full.img; else echo full.qcow2; fi; }

# ---- cases ------------------------------------------------------------

seq_read() {
    local fmt=$1 s i conns t c0 c1
    local -a servers
    read -ra servers <<<"$(servers_for "$fmt")"
    for s in "${servers[@]}"; do start_server "$s" "$fmt" "$(image_for "$fmt")" ro; done
    for conns in 1 4; do
        for ((i = 0; i <= RUNS; i++)); do
            for s in "${servers[@]}"; do
                c0=$(cpu_of "$s")
                t=$(time_one nbdcopy -C "$conns" "$(uri "$s")" null:)
                c1=$(cpu_of "$s")
                ((i == 0)) && continue # warm-up
                RATES[$s]+="$(echo "$SIZE_MIB / $t" | bc -l) "
                CPUS[$s]+="$(echo "($c1 - $c0) * 1024 / $SIZE_MIB" | bc -l) "
            done
        done
        report "read-$fmt -C $conns" MiB/s "s/GiB" "${servers[@]}"
    done
    for s in "${servers[@]}"; do stop_server "$s"; done
}

prep_target() {
    rm -f "$D/tgt.$2"
    sync
    if [ "$1" = raw ]; then
        truncate -s "$SIZE_B" "$D/tgt.$2"
    else
        "$QIMG" create -q -f qcow2 "$D/tgt.$2" "$SIZE_B"
    fi
}

seq_write() {
    local fmt=$1 s i conns t c0 c1
    local -a servers
    read -ra servers <<<"$(servers_for "$fmt")"
    for conns in 1 4; do
        for ((i = 0; i <= RUNS; i++)); do
            for s in "${servers[@]}"; do
                prep_target "$fmt" "$s"
                start_server "$s" "$fmt" "$D/tgt.$s" rw
                c0=$(cpu_of "$s")
                t=$(time_one nbdcopy -C "$conns" full.img "$(uri "$s")")
                c1=$(cpu_of "$s")
                stop_server "$s"
                ((i == 0)) && continue
                RATES[$s]+="$(echo "$SIZE_MIB / $t" | bc -l) "
                CPUS[$s]+="$(echo "($c1 - $c0) * 1024 / $SIZE_MIB" | bc -l) "
            done
        done
        report "write-$fmt -C $conns" MiB/s "s/GiB" "${servers[@]}"
    done
    # The last copy made through each server must equal the source.
    for s in "${servers[@]}"; do
        "$QIMG" compare -q -f raw -F "$fmt" full.img "$D/tgt.$s" ||
            die "write-$fmt: $s's copy differs from full.img"
    done
    rm -f "$D"/tgt.*
}

randread() {
    local fmt=$1 s i v c0 c1
    local -a servers
    read -ra servers <<<"$(servers_for "$fmt")"
    for s in "${servers[@]}"; do start_server "$s" "$fmt" "$(image_for "$fmt")" ro; done
    for ((i = 0; i <= RUNS; i++)); do
        for s in "${servers[@]}"; do
            c0=$(cpu_of "$s")
            v=$("$TOOL" "$(uri "$s")" -d 16 -b 4096 -t "$RANDSECS" -s $((i + 1)) | tail -1)
            c1=$(cpu_of "$s")
            ((i == 0)) && continue
            RATES[$s]+="$v "
            CPUS[$s]+="$(echo "($c1 - $c0) * 1000000 / ($v * $RANDSECS)" | bc -l) "
        done
    done
    report "randread-$fmt 4K QD16" IOPS "us/op" "${servers[@]}"
    for s in "${servers[@]}"; do stop_server "$s"; done
}

case_read_raw() { seq_read raw; }
case_read_qcow2() { seq_read qcow2; }
case_write_raw() { seq_write raw; }
case_write_qcow2() { seq_write qcow2; }
case_randread_raw() { randread raw; }
case_randread_qcow2() { randread qcow2; }

ALL=(read_raw read_qcow2 write_raw write_qcow2 randread_raw randread_qcow2)

main() {
    local c cases
    setup
    if (($#)); then cases=("$@"); elif [ -n "${CASES:-}" ]; then read -ra cases <<<"$CASES"; else cases=("${ALL[@]}"); fi
    echo "vimg-nbd: $VIMG_NBD; $($QEMU_NBD --version | head -1); $($NBDKIT --version);" \
        "nbdcopy $(nbdcopy --version | head -1 | awk '{print $2}'); image $SIZE_MIB MiB random;" \
        "runs: $RUNS rounds + warm-up; $(nproc) cpus"
    echo "rates: higher is better; vimg/X > 1 means vimg-nbd is faster than X"
    for c in "${cases[@]}"; do
        "case_${c//-/_}"
    done
}

[[ ${BASH_SOURCE[0]} != "$0" ]] || main "$@"
