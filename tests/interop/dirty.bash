# SPDX-License-Identifier: LGPL-2.1-or-later
# Bitmap helpers shared by the interop suites, with qemu as the oracle.
# Load after ../helpers:  load dirty

# Dirty extents [[start, length], ...] of bitmap $2 of qcow2 image $1,
# as qemu-nbd -B exports them (read with qemu-img map over NBD with
# x-dirty-bitmap, where dirty reads as "data": false), neighbours merged.
qemu_dirty() {
    local sock="$T/dirty-nbd.sock" pidf="$T/dirty-nbd.pid" pid out rc=0
    qemu-nbd -r --fork --pid-file="$pidf" -k "$sock" -f qcow2 -B "$2" "$1" ||
        return 1
    pid=$(<"$pidf")
    BG_PIDS+=("$pid")
    out=$(qemu-img map --output=json --image-opts \
        "driver=nbd,server.type=unix,server.path=$sock,x-dirty-bitmap=qemu:dirty-bitmap:$2") ||
        rc=$?
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$sock" "$pidf"
    [ "$rc" -eq 0 ] || return 1
    jq -c '[.[] | select(.data == false) | [.start, .length]] |
           reduce .[] as $e ([]; if length > 0 and
                 (.[-1][0] + .[-1][1]) == $e[0]
             then .[-1][1] += $e[1] else . + [$e] end)' <<<"$out"
}

# Dirty extents of bitmap $2 of image $1, per vimg map --bitmap.
vimg_dirty() {
    "$VIMG" map --bitmap "$2" --output=json "$1" |
        jq -c '[.[] | select(.dirty) | [.start, .length]]'
}
