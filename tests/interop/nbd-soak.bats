#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# Soak: 64 concurrent NBD clients (soak.py) doing mixed reads, writes,
# zeroes and trims against vimg-nbd, each verified against a per-client
# shadow model, for SOAK_SECONDS (default 20; CI uses 60).  Afterwards the
# server must stop cleanly on SIGTERM, the image must check clean, and
# its whole content must match the shadow (trimmed bytes excepted).  One
# shorter run under valgrind: no errors, no definite leaks.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img python3
    SOAK="python3 $VIMG_SRC/tests/interop/soak.py"
    SOAK_SECONDS=${SOAK_SECONDS:-20}
    SIZE=$((64 << 20))
    SEED=${SOAK_SEED:-$RANDOM}
}

# soak_image FMT: serve a fresh 64 MiB FMT image to 64 clients + 4
# loaders, stop, check and verify the image against the shadow.
soak_image() {
    local fmt=$1 out rc=0
    qemu-img create -q -f "$fmt" img "$SIZE"
    vnbd_start soak -t -e 0 --workers 4 -f "$fmt" img
    out=$(timeout $((SOAK_SECONDS + 150)) $SOAK "$T/soak.sock" "$SIZE" \
        "$SOAK_SECONDS" "$SEED" --dump shadow 2>&1) || rc=$?
    echo "$out"
    if [ "$rc" -ne 0 ]; then
        echo "soak.py exited $rc (seed $SEED); server log:" >&2
        tail -20 "$T/soak.log" >&2
        vnbd_stop || true
        return 1
    fi
    vnbd_stop
    if [ "$fmt" = qcow2 ]; then
        assert_qemu_check_clean -f qcow2 img
        qemu-img convert -f qcow2 -O raw img img.raw
    else
        cp img img.raw
    fi
    $SOAK verify img.raw shadow
    # One region read back by qemu-io (not via vimg at all): client 0's
    # first 4 KiB must match the shadow wherever it is known.
    qemu-io -f "$fmt" -r -c "read -v 0 4096" img >qio.out
    python3 - <<'EOF'
import re, sys
got = bytearray()
for line in open("qio.out"):
    m = re.match(r"^[0-9a-f]{8}:((?:\s+[0-9a-f]{2}){1,16})", line)
    if m:
        got += bytes(int(x, 16) for x in m.group(1).split())
want = open("shadow", "rb").read(4096)
mask = open("shadow.mask", "rb").read(4096)
assert len(got) == 4096, "qemu-io printed %d bytes" % len(got)
bad = [i for i in range(4096) if mask[i] and got[i] != want[i]]
assert not bad, "qemu-io read: byte %d is %#x, expected %#x" % (
    bad[0], got[bad[0]], want[bad[0]])
EOF
}

@test "soak: 64 clients, mixed I/O with shadow verification, qcow2" {
    requires qemu-io
    soak_image qcow2
}

@test "soak: 64 clients, mixed I/O with shadow verification, raw" {
    requires qemu-io
    soak_image raw
}

@test "soak: vimg-nbd under valgrind, no errors and no definite leaks" {
    requires valgrind
    local pid i rc=0 out
    qemu-img create -q -f qcow2 img "$SIZE"
    valgrind --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite --track-fds=no \
        "$VIMG_NBD" -t -e 0 -f qcow2 -k "$T/vg.sock" img 2>vg.log &
    pid=$!
    BG_PIDS+=("$pid")
    for ((i = 0; i < 600; i++)); do
        [ -S "$T/vg.sock" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    [ -S "$T/vg.sock" ] || { cat vg.log >&2; return 1; }
    out=$(timeout 300 $SOAK "$T/vg.sock" "$SIZE" 5 "$SEED" \
        --clients 8 --loaders 1 2>&1) || rc=$?
    echo "$out"
    # vnbd_stop waits 20 s; valgrind's leak check can take longer.
    kill -TERM "$pid"
    for ((i = 0; i < 1200; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "vimg-nbd under valgrind did not stop on SIGTERM" >&2
        kill -KILL "$pid"
        return 1
    fi
    wait "$pid" || {
        local vrc=$?
        echo "vimg-nbd under valgrind exited $vrc; log:" >&2
        grep -E '==[0-9]+==' vg.log | tail -60 >&2
        return 1
    }
    [ "$rc" -eq 0 ] || { echo "soak.py exited $rc" >&2; return 1; }
    assert_qemu_check_clean -f qcow2 img
}
