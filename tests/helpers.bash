# SPDX-License-Identifier: LGPL-2.1-or-later
# Shared helpers for the bats suites (tests/cli, tests/interop).
# Load with:  load ../helpers
#
# VIMG_BUILD is the CMake build folder (ctest sets it); the tools are
# $VIMG, $VIMG_IO.  Each test gets a fresh temporary folder $T, removed
# on teardown together with any process started by start_bg.

VIMG_SRC=${VIMG_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
VIMG_BUILD=${VIMG_BUILD:-$VIMG_SRC/build}
VIMG=$VIMG_BUILD/vimg
VIMG_IO=$VIMG_BUILD/vimg-io
export VIMG VIMG_IO VIMG_SRC VIMG_BUILD

bats_load_library bats-support 2>/dev/null || load /usr/lib/bats/bats-support/load
bats_load_library bats-assert 2>/dev/null || load /usr/lib/bats/bats-assert/load

# Skip the test unless every named program is on PATH.
requires() {
    local p
    for p in "$@"; do
        command -v "$p" >/dev/null 2>&1 || skip "$p not installed"
    done
}

# Per-test temp folder.
setup() {
    T=$(mktemp -d "${BATS_TMPDIR:-/tmp}/vimg-test.XXXXXX")
    BG_PIDS=()
    cd "$T" || return 1
}

teardown() {
    local pid
    for pid in "${BG_PIDS[@]}"; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    cd / && rm -rf "$T"
}

# Run a command in the background and remember its PID for teardown.
start_bg() {
    "$@" &
    BG_PIDS+=($!)
}

# Remove fields that legitimately differ between vimg and qemu-img from
# an info JSON document (actual-size; tmp paths are relative already).
filter_info_json() {
    jq -S 'if type == "array" then map(del(.["actual-size"]))
           else del(.["actual-size"]) end'
}

# Assert that qemu-img check finds no errors and no leaks in IMG.
assert_qemu_check_clean() {
    local out rc=0
    out=$(qemu-img check --output=json "$@" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "qemu-img check $* exited $rc: $out" >&2
        return 1
    fi
}

# ---------------------------------------------------------------------
# Added for the bad-input, create/info and interop suites.

# Run a command under `timeout 20` with stdout and stderr kept apart.
# Sets status, output (stdout) and stderr, like bats' run.
run_split() {
    local errf
    errf=$(mktemp "${T:-${BATS_TMPDIR:-/tmp}}/stderr.XXXXXX")
    status=0
    output=$(timeout 20 "$@" 2>"$errf") || status=$?
    stderr=$(<"$errf")
    rm -f "$errf"
    lines=()
    [ -z "$output" ] || mapfile -t lines <<<"$output"
    return 0
}

# After run_split: the command failed cleanly: exit status exactly 1 (not
# a crash >= 128, not a hang 124), and exactly one line on stderr, which
# starts with "vimg" (or, for a failed vimg-io command, qemu-io's
# "<command> failed: ..." form).
assert_one_line_error() {
    local n=0
    [ -n "$stderr" ] && n=$(printf '%s\n' "$stderr" | wc -l)
    if [ "$status" -ne 1 ] || [ "$n" -ne 1 ] ||
        ! [[ $stderr == vimg* || $stderr =~ ^[a-z_]+\ failed:\  ]]; then
        {
            echo "expected exit 1 and one stderr line starting with 'vimg'"
            echo "got exit $status$(_exit_kind) and $n stderr lines:"
            printf '%s\n' "$stderr" | head -20
        } >&2
        return 1
    fi
}

_exit_kind() {
    if [ "$status" -ge 128 ]; then
        echo " (crash: signal $((status - 128)))"
    elif [ "$status" -eq 124 ]; then
        echo " (hang: killed by timeout)"
    fi
}

# After run_split: exit status 0 or 1 (no crash, no hang), whatever the
# output.
assert_exit_0_or_1() {
    if [ "$status" -ne 0 ] && [ "$status" -ne 1 ]; then
        echo "expected exit 0 or 1, got $status$(_exit_kind); stderr:" >&2
        printf '%s\n' "$stderr" | head -20 >&2
        return 1
    fi
}

# After run_split: no crash and no hang; either success, or a clean
# one-line error (exit 1).
assert_no_crash() {
    if [ "$status" -eq 0 ]; then
        return 0
    fi
    assert_one_line_error
}

# Fail with a diff unless the two info JSON documents are equal after
# filter_info_json.  assert_info_json_equal INFO-ARGS...
# (runs `qemu-img info --output=json ARGS` and `$VIMG info --output=json ARGS`)
assert_info_json_equal() {
    local q v rc=0
    q=$(qemu-img info --output=json "$@") || {
        echo "qemu-img info $* failed" >&2
        return 1
    }
    q=$(filter_info_json <<<"$q")
    v=$(timeout 20 "$VIMG" info --output=json "$@") || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "vimg info --output=json $* exited $rc" >&2
        return 1
    fi
    v=$(filter_info_json <<<"$v") || {
        echo "vimg info --output=json $* printed invalid JSON" >&2
        return 1
    }
    if [ "$q" != "$v" ]; then
        echo "info --output=json $* differs (< qemu-img, > vimg):" >&2
        diff <(echo "$q") <(echo "$v") >&2
        return 1
    fi
}

# The same for human output, minus the "disk size:" line.
assert_info_human_equal() {
    local q v rc=0
    q=$(qemu-img info "$@") || {
        echo "qemu-img info $* failed" >&2
        return 1
    }
    q=$(grep -v '^disk size:' <<<"$q")
    v=$(timeout 20 "$VIMG" info "$@") || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "vimg info $* exited $rc" >&2
        return 1
    fi
    v=$(grep -v '^disk size:' <<<"$v")
    if [ "$q" != "$v" ]; then
        echo "info $* differs (< qemu-img, > vimg):" >&2
        diff <(echo "$q") <(echo "$v") >&2
        return 1
    fi
}

# Hold IMG open in a background qemu-io (killed at teardown) until it has
# taken its locks.  hold_image [qemu-io options...] IMG
hold_image() {
    hold_image_with qemu-io "$@"
}

# The same with another tool that takes qemu-io's -c (e.g. "$VIMG_IO").
# hold_image_with TOOL [options...] IMG
hold_image_with() {
    local img=${*: -1} i
    start_bg "${@:1:$#-1}" -c "sleep 60000" "$img" 3>&- >/dev/null 2>&1
    # Wait for its OFD locks to show in /proc/locks (probing with another
    # open would race with qemu-io's own open).
    local ino
    ino=$(stat -c %i "$img") || return 1
    for ((i = 0; i < 200; i++)); do
        awk -v ino="$ino" '$2 == "OFDLCK" { n = split($6, a, ":"); if (a[n] == ino) f = 1 }
                           END { exit !f }' /proc/locks && return 0
        sleep 0.05
    done
    echo "hold_image: $img never became locked" >&2
    return 1
}

# vimg and vimg-io under a time limit, so a hang fails the test instead
# of the whole suite (exit 124 = hang).
vimg_t() { timeout "${VIMG_TIMEOUT:-60}" "$VIMG" "$@"; }
vimg_io_t() { timeout "${VIMG_TIMEOUT:-60}" "$VIMG_IO" "$@"; }

# ---------------------------------------------------------------------
# NBD servers (vimg-nbd and qemu-nbd) on unix sockets under $T.
VIMG_NBD=$VIMG_BUILD/vimg-nbd
export VIMG_NBD

# _wait_socket PATH PID: wait up to 10 s for PATH to be a socket while PID
# lives.
_wait_socket() {
    local i
    for ((i = 0; i < 200; i++)); do
        [ -S "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# vnbd_start NAME [vimg-nbd options...] IMAGE: run vimg-nbd in the
# foreground of a background job, listening on $T/NAME.sock, stderr in
# $T/NAME.log.  Sets VNBD_PID and U (its nbd+unix URI, default export).
vnbd_start() {
    local name=$1
    shift
    rm -f "$T/$name.sock"
    "$VIMG_NBD" -k "$T/$name.sock" "$@" 2>"$T/$name.log" &
    VNBD_PID=$!
    BG_PIDS+=("$VNBD_PID")
    _wait_socket "$T/$name.sock" "$VNBD_PID" || {
        cat "$T/$name.log" >&2
        return 1
    }
    U="nbd+unix:///?socket=$T/$name.sock"
}

# vnbd_stop [PID]: SIGTERM the server and require a clean exit (0)
# within 20 s.
vnbd_stop() {
    local pid=${1:-$VNBD_PID} i rc=0
    kill -TERM "$pid"
    for ((i = 0; i < 400; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "vimg-nbd $pid did not stop on SIGTERM" >&2
        kill -KILL "$pid"
        return 1
    fi
    wait "$pid" || rc=$?
    [ "$rc" -eq 0 ] || { echo "vimg-nbd exited $rc" >&2; return 1; }
}

# qnbd_start NAME [qemu-nbd options...] IMAGE: a persistent qemu-nbd on
# $T/NAME.sock (forked, killed by PID at teardown).  Sets QU.
qnbd_start() {
    local name=$1 i
    shift
    qemu-nbd --fork --pid-file="$T/$name.pid" -t -k "$T/$name.sock" "$@"
    for ((i = 0; i < 200; i++)); do
        [ -s "$T/$name.pid" ] && [ -S "$T/$name.sock" ] && break
        sleep 0.05
    done
    BG_PIDS+=("$(cat "$T/$name.pid")")
    QU="nbd+unix:///?socket=$T/$name.sock"
}
