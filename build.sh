#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The project's two entry points (run as root on Debian 12):
#   ./build.sh demo    install what is missing, build, run the end-to-end demo
#   ./build.sh check   install, build, run every test, then again with
#                      ASan+UBSan for the unit and CLI tests
# Also: ./build.sh build (install + build only).
set -euo pipefail
cd "$(dirname "$0")"

BUILD_PKGS="build-essential cmake pkg-config perl zlib1g-dev libzstd-dev
            libjansson-dev libcmocka-dev libnbd-dev libssl-dev"
TEST_PKGS="qemu-utils qemu-system-common libnbd-bin nbdkit bats bats-assert
           bats-support jq python3 util-linux strace e2fsprogs openssl
           hyperfine"
JOBS=$(nproc)

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

check() {
    local rc=0
    export ASAN_OPTIONS=exitcode=134:detect_leaks=1
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=134
    (cd build && ctest --output-on-failure -j"$JOBS") || rc=1
    build build-asan -DVIMG_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
    (cd build-asan && ctest --output-on-failure -j"$JOBS" -L 'unit|cli') ||
        rc=1
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
*)
    echo "usage: $0 demo|check|build" >&2
    exit 2
    ;;
esac
