#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The project's two entry points (run as root on Debian 12):
#   ./build.sh demo    install what is missing, build, run the end-to-end demo
#   ./build.sh check   install, build, run every test, then again with
#                      ASan+UBSan for the unit and CLI tests
# Also: ./build.sh build (install + build only), and ./build.sh fuzz
# (libFuzzer targets of tests/fuzz with ASan+UBSan, FUZZ_SECONDS each,
# default 300; crashing inputs are kept in build-fuzz/fuzz-<target>/).
set -euo pipefail
cd "$(dirname "$0")"

BUILD_PKGS="build-essential cmake pkg-config perl zlib1g-dev libzstd-dev
            libjansson-dev libcmocka-dev libnbd-dev libssl-dev clang"
TEST_PKGS="qemu-utils qemu-system-common libnbd-bin nbdkit bats bats-assert
           bats-support jq python3 util-linux strace e2fsprogs openssl
           hyperfine valgrind"
JOBS=$(nproc)
FUZZ_TARGETS="qcow2 nbd qmp opts"

install_pkgs() {
    local missing=() p
    for p in $*; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
            grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "build.sh: installing ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "build.sh: need root to install packages" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

build() { # build DIR [cmake args...]
    local dir=$1
    shift
    cmake -S . -B "$dir" -DVIMG_WERROR=ON "$@" >/dev/null
    cmake --build "$dir" -j"$JOBS"
}

demo() {
    local d vimg=$PWD/build/vimg vio=$PWD/build/vimg-io nbd=$PWD/build/vimg-nbd
    d=$(mktemp -d)
    trap 'rm -rf "$d"' RETURN
    cd "$d"
    set -x
    "$vimg" create -f qcow2 base.qcow2 64M
    "$vio" -c 'write -P 0xaa 0 1M' -c 'write -P 0xbb 4M 64k' base.qcow2
    "$vimg" create -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    "$vio" -c 'write -P 0xcc 512k 1M' -c 'write -z 4M 4k' top.qcow2
    "$vio" -r -c 'read -P 0xaa 0 512k' -c 'read -P 0xcc 512k 1M' \
        -c 'read -P 0 4M 4k' -c 'read -P 0xbb 4100k 60k' -c map top.qcow2
    "$vimg" info --backing-chain top.qcow2
    "$vimg" info --output=json top.qcow2
    if command -v qemu-img >/dev/null; then
        qemu-img check top.qcow2
        qemu-img compare top.qcow2 top.qcow2
    fi
    if command -v nbdinfo >/dev/null; then
        local pid i
        "$nbd" --fork --pid-file "$d/nbd.pid" -t -k "$d/nbd.sock" -f qcow2 \
            -r -A top.qcow2
        pid=$(cat "$d/nbd.pid")
        nbdinfo --map "nbd+unix:///?socket=$d/nbd.sock"
        nbdinfo --map=qemu:allocation-depth "nbd+unix:///?socket=$d/nbd.sock"
        kill -TERM "$pid"
        { set +x; } 2>/dev/null # wait quietly for a clean exit
        for ((i = 0; i < 200; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        set -x
        if kill -0 "$pid" 2>/dev/null; then
            echo "demo: vimg-nbd did not stop on SIGTERM" >&2
            return 1
        fi
        [ ! -e "$d/nbd.pid" ] && [ ! -e "$d/nbd.sock" ]
    fi
    set +x
    cd - >/dev/null
    echo "demo: OK"
}

# Run each libFuzzer target for SECONDS on a copy of its seed corpus in
# build-fuzz/fuzz-<target>/; crashing, leaking or timing-out inputs stay
# there (crash-*, leak-*, timeout-*, oom-*).  Non-zero if any target
# failed.
run_fuzz() { # run_fuzz SECONDS
    local secs=$1 t w rc=0 src=$PWD/tests/fuzz bin=$PWD/build-fuzz/tests/fuzz
    cmake -S . -B build-fuzz -DVIMG_WERROR=ON -DVIMG_FUZZ=ON \
        -DCMAKE_C_COMPILER=clang >/dev/null
    cmake --build build-fuzz -j"$JOBS" --target \
        $(printf 'fuzz-%s ' $FUZZ_TARGETS)
    for t in $FUZZ_TARGETS; do
        w=$PWD/build-fuzz/fuzz-$t
        rm -rf "$w/corpus"
        mkdir -p "$w"
        cp -r "$src/corpus/$t" "$w/corpus"
        echo "build.sh: fuzz-$t for ${secs}s"
        if ! (cd "$w" &&
            ASAN_OPTIONS=detect_leaks=1 \
            UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
            "$bin/fuzz-$t" -max_total_time="$secs" \
                -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
                -artifact_prefix="$w/" -dict="$src/$t.dict" corpus \
                >"$w/log" 2>&1); then
            echo "build.sh: fuzz-$t FAILED; see $w/log and:" >&2
            ls "$w" | grep -E '^(crash|leak|timeout|oom|slow-unit)-' >&2 || true
            tail -n 60 "$w/log" >&2
            rc=1
        else
            grep -E '^(Done|stat::)' "$w/log" || tail -n 2 "$w/log"
        fi
    done
    return $rc
}

check() {
    local rc=0
    export ASAN_OPTIONS=exitcode=134:detect_leaks=1
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=134
    (cd build && ctest --output-on-failure -j"$JOBS") || rc=1
    build build-asan -DVIMG_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
    (cd build-asan && ctest --output-on-failure -j"$JOBS" -L 'unit|cli') ||
        rc=1
    if command -v clang >/dev/null; then
        run_fuzz 30 || rc=1
    else
        echo "build.sh: no clang, fuzz targets skipped"
    fi
    return $rc
}

case "${1:-}" in
build)
    install_pkgs $BUILD_PKGS
    build build
    ;;
demo)
    install_pkgs $BUILD_PKGS $TEST_PKGS
    build build
    demo
    ;;
check)
    install_pkgs $BUILD_PKGS $TEST_PKGS
    build build
    check
    ;;
fuzz)
    install_pkgs $BUILD_PKGS
    run_fuzz "${FUZZ_SECONDS:-300}"
    ;;
*)
    echo "usage: $0 demo|check|build|fuzz" >&2
    exit 2
    ;;
esac
