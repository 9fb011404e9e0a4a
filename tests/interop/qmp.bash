# SPDX-License-Identifier: LGPL-2.1-or-later
# Shared by the QMP suites (qmp-*.bats): one daemon of each kind started
# the same way, and JSON comparison of their outputs.  Load after
# ../helpers.

# start_daemon vimg|qsd NAME IMAGE: serve IMAGE (qcow2) as node d0,
# exported writable as "d0" on $T/NAME.nbd, QMP on $T/NAME.qmp.  The
# daemon's PID is in DPID.
start_daemon() {
    local bd="driver=qcow2,node-name=d0,file.driver=file,file.filename=$3"
    local nbd="addr.type=unix,addr.path=$T/$2.nbd"
    local exp="type=nbd,id=e0,node-name=d0,name=d0,writable=on"
    rm -f "$T/$2.qmp" "$T/$2.nbd"
    if [ "$1" = vimg ]; then
        "$VIMG_NBD" --qmp "$T/$2.qmp" --blockdev "$bd" --nbd-server "$nbd" \
            --export "$exp" 2>"$T/$2.log" &
    else
        qemu-storage-daemon \
            --chardev "socket,id=c0,path=$T/$2.qmp,server=on,wait=off" \
            --monitor chardev=c0 --blockdev "$bd" --nbd-server "$nbd" \
            --export "$exp" 2>"$T/$2.log" &
    fi
    DPID=$!
    BG_PIDS+=($!)
    _wait_socket "$T/$2.qmp" $! && _wait_socket "$T/$2.nbd" $!
}

# same_json KEY: .[KEY] of v.out and q.out are equal (both shown on
# stderr).  KEY may be given in double quotes (keys with dashes).
same_json() {
    local a b k=${1#\"}
    k=${k%\"}
    a=$(jq -S --arg k "$k" '.[$k]' v.out)
    b=$(jq -S --arg k "$k" '.[$k]' q.out)
    if [ "$a" != "$b" ]; then
        echo "$1 differs: vimg-nbd:" >&2
        echo "$a" >&2
        echo "qemu-storage-daemon:" >&2
        echo "$b" >&2
        return 1
    fi
}
