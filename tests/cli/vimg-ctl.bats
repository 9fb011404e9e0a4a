#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-ctl: options and their errors (one line, exit 1, checked before
# connecting), bad sockets, key=value and JSON arguments (seen by a fake
# QMP server that returns its arguments), and generic commands against
# a running vimg-nbd --qmp.
load ../helpers
bats_require_minimum_version 1.5.0

VIMG_CTL=$VIMG_BUILD/vimg-ctl

# ctl_fails REGEX ARGS...: vimg-ctl ARGS fails with one line matching
# REGEX.
ctl_fails() {
    local re=$1
    shift
    run_split "$VIMG_CTL" "$@"
    assert_one_line_error
    [[ $stderr =~ $re ]] || {
        echo "stderr '$stderr' does not match '$re'" >&2
        return 1
    }
}

# start_daemon: vimg-nbd --qmp $T/q.sock serving d.qcow2 (16M) as d0.
# Sets DPID and S.
start_daemon() {
    "$VIMG" create -q -f qcow2 d.qcow2 16M
    S=$T/q.sock
    "$VIMG_NBD" --qmp "$S" \
        --blockdev "driver=qcow2,node-name=d0,file.driver=file,file.filename=$T/d.qcow2" \
        2>"$T/d.log" &
    DPID=$!
    BG_PIDS+=("$DPID")
    _wait_socket "$S" "$DPID" || {
        cat "$T/d.log" >&2
        return 1
    }
}

# start_echo: a fake QMP server on $T/echo.sock whose every command
# returns its arguments.  Sets E.
start_echo() {
    requires python3
    E=$T/echo.sock
    python3 - "$E" <<'PY' &
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(4)
while True:
    c, _ = s.accept()
    f = c.makefile("rw")
    f.write('{"QMP": {"version": {}, "capabilities": []}}\r\n'); f.flush()
    for line in f:
        m = json.loads(line)
        r = {"return": m.get("arguments", {}), "id": m["id"]}
        f.write(json.dumps(r) + "\r\n"); f.flush()
    c.close()
PY
    BG_PIDS+=($!)
    _wait_socket "$E" $!
}

# echo_args ARGS...: the JSON (compact, sorted) that vimg-ctl sends as
# arguments for ARGS.
echo_args() {
    "$VIMG_CTL" -s "$E" x "$@" | jq -cS .
}

@test "--help and -V exit 0" {
    run_split "$VIMG_CTL" --help
    assert_equal "$status" 0
    assert_equal "$stderr" ""
    [[ ${lines[0]} == Usage:\ vimg-ctl* ]]
    for w in backup mirror jobs wait events --socket --sync --bitmap \
        --wait --progress --count; do
        [[ $output == *"$w"* ]] || {
            echo "--help does not mention $w" >&2
            return 1
        }
    done
    run_split "$VIMG_CTL" -V
    assert_equal "$status" 0
    assert_output --regexp '^vimg-ctl [0-9]+\.[0-9]+'
}

@test "option errors: one line, exit 1, before connecting" {
    local s=$T/none.sock
    ctl_fails '^vimg-ctl: no socket given' query-jobs
    ctl_fails '^vimg-ctl: option -s needs' -s
    ctl_fails "^vimg-ctl: unknown option '--bogus'" --bogus -s "$s" jobs
    ctl_fails '^vimg-ctl: no command given' -s "$s"
    ctl_fails '^vimg-ctl: backup: expected NODE and TARGET' -s "$s" backup d0
    ctl_fails '^vimg-ctl: backup: missing value for --sync' \
        -s "$s" backup d0 t.qcow2 --sync
    ctl_fails "^vimg-ctl: backup: unknown option --speed" \
        -s "$s" backup d0 t.qcow2 --speed=1
    ctl_fails '^vimg-ctl: backup: --sync must be' \
        -s "$s" backup d0 t.qcow2 --sync bitmapx
    ctl_fails '^vimg-ctl: backup: --sync incremental needs --bitmap' \
        -s "$s" backup d0 t.qcow2 --sync incremental --wait
    ctl_fails '^vimg-ctl: mirror: --sync must be' \
        -s "$s" mirror d0 t.qcow2 --sync incremental
    ctl_fails '^vimg-ctl: mirror: unknown option --bitmap' \
        -s "$s" mirror d0 t.qcow2 --bitmap b
    ctl_fails '^vimg-ctl: jobs: takes no arguments' -s "$s" jobs x
    ctl_fails '^vimg-ctl: wait: expected' -s "$s" wait
    ctl_fails '^vimg-ctl: wait: expected' -s "$s" wait a b
    ctl_fails '^vimg-ctl: events: --count needs a positive number' \
        -s "$s" events --count 0
    ctl_fails '^vimg-ctl: events: expected' -s "$s" events x
    ctl_fails '^vimg-ctl: query-jobs: x: expected key=value' \
        -s "$s" query-jobs x
    ctl_fails '^vimg-ctl: c: =1: expected key=value' -s "$s" c =1
    ctl_fails '^vimg-ctl: c: a: given twice' -s "$s" c a=1 a=2
    ctl_fails '^vimg-ctl: c: a: conflicts' -s "$s" c a.b=1 a=2
    ctl_fails '^vimg-ctl: c: a.b: conflicts with a' -s "$s" c a=1 a.b=2
    ctl_fails '^vimg-ctl: c: a..b: empty key' -s "$s" c a..b=1
    ctl_fails '^vimg-ctl: c: a: invalid JSON value' -s "$s" c 'a:=[1'
    ctl_fails '^vimg-ctl: c: invalid JSON argument' -s "$s" c '{"a":'
}

@test "bad sockets: one line, exit 1" {
    ctl_fails "^vimg-ctl: $T/none.sock: No such file or directory\$" \
        -s "$T/none.sock" query-jobs
    touch plain
    ctl_fails "^vimg-ctl: plain: Connection refused\$" -s plain jobs
    requires python3
    python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' \
        "$T/stale.sock"
    ctl_fails "^vimg-ctl: $T/stale.sock: Connection refused\$" \
        -s "$T/stale.sock" backup d0 x.qcow2 --wait
    ctl_fails "^vimg-ctl: .*: socket path too long" \
        -s "$T/$(printf 'x%.0s' {1..120})" events
}

@test "key=value: booleans, numbers, strings, nesting, arrays, :=JSON" {
    start_echo
    run echo_args # {} is printed as nothing
    assert_output ''
    run echo_args b=true f=false n=65536 m=-12 s=d0 z=0x10 e= t=True
    assert_output '{"b":true,"e":"","f":false,"m":-12,"n":65536,"s":"d0","t":"True","z":"0x10"}'
    run echo_args addr.type=unix addr.data.path=/x/y.sock x.y.z=1
    assert_output '{"addr":{"data":{"path":"/x/y.sock"},"type":"unix"},"x":{"y":{"z":1}}}'
    run echo_args node=d0 target=b2 bitmaps.0=b0 bitmaps.1.node=d1 \
        bitmaps.1.name=b1
    assert_output '{"bitmaps":["b0",{"name":"b1","node":"d1"}],"node":"d0","target":"b2"}'
    run echo_args l.1=a l.2=b
    assert_output '{"l":{"1":"a","2":"b"}}'
    run echo_args 'port:="10809"' 'list:=[1,"a",null]' 'o:={"k":true}' \
        'v=a=b'
    assert_output '{"list":[1,"a",null],"o":{"k":true},"port":"10809","v":"a=b"}'
    run echo_args 9223372036854775807=x big=9223372036854775808
    assert_output '{"9223372036854775807":"x","big":"9223372036854775808"}'
    run echo_args '{"node": "d0", "n": [1, {"a": null}]}'
    assert_output '{"n":[1,{"a":null}],"node":"d0"}'
    run echo_args ' {"a":1}'
    assert_output '{"a":1}'
}

@test "generic commands against vimg-nbd: results, QMP errors" {
    requires jq qemu-img
    start_daemon
    run_split "$VIMG_CTL" -s "$S" query-jobs
    assert_equal "$status" 0
    assert_equal "$output" "[]"
    run_split "$VIMG_CTL" --socket="$S" query-version
    assert_equal "$status" 0
    [ "$(jq -r .package <<<"$output")" = "vimg-$("$VIMG_CTL" -V | cut -d' ' -f2)" ]
    # {} prints nothing.
    run_split "$VIMG_CTL" -s "$S" block-dirty-bitmap-add node=d0 name=b0 \
        persistent=true granularity=65536
    assert_equal "$status" 0
    assert_equal "$output" ""
    assert_equal "$stderr" ""
    "$VIMG_CTL" -s "$S" block-dirty-bitmap-add \
        '{"node":"d0","name":"b1","persistent":true,"disabled":true}'
    "$VIMG_CTL" -s "$S" block-dirty-bitmap-add node=d0 name=b2 \
        persistent=true
    "$VIMG_CTL" -s "$S" block-dirty-bitmap-merge node=d0 target=b2 \
        bitmaps.0=b0 bitmaps.1.node=d0 bitmaps.1.name=b1
    run "$VIMG_CTL" -s "$S" query-named-block-nodes
    assert_success
    run jq -c '.[] | select(.["node-name"] == "d0") | .["dirty-bitmaps"] |
               map([.name, .granularity, .recording])' <<<"$output"
    assert_output '[["b0",65536,true],["b1",65536,false],["b2",65536,true]]'
    # Nested keys: an NBD server and an export that qemu-img reads.
    "$VIMG_CTL" -s "$S" nbd-server-start addr.type=unix \
        addr.data.path="$T/nbd.sock"
    "$VIMG_CTL" -s "$S" block-export-add \
        '{"type":"nbd","id":"e0","node-name":"d0"}'
    run qemu-img info --output=json "nbd+unix:///d0?socket=$T/nbd.sock"
    assert_success
    [ "$(jq '.["virtual-size"]' <<<"$output")" = 16777216 ]
    "$VIMG_CTL" -s "$S" block-export-del id=e0
    # QMP errors: one line, exit 1.
    ctl_fails '^vimg-ctl: block-dirty-bitmap-add: .*b0' \
        -s "$S" block-dirty-bitmap-add node=d0 name=b0 persistent=true
    ctl_fails '^vimg-ctl: no-such: The command no-such has not been found$' \
        -s "$S" no-such
    ctl_fails "^vimg-ctl: block-dirty-bitmap-add: Invalid parameter type for 'granularity'" \
        -s "$S" block-dirty-bitmap-add node=d0 name=b3 granularity=big
    ctl_fails "^vimg-ctl: block-dirty-bitmap-add: Parameter 'name' is missing" \
        -s "$S" block-dirty-bitmap-add node=d0
    ctl_fails "^vimg-ctl: qmp_capabilities: Capabilities negotiation is already complete" \
        -s "$S" qmp_capabilities
    # Verbs against an idle daemon.
    run_split "$VIMG_CTL" -s "$S" jobs
    assert_equal "$status" 0
    assert_output --regexp '^ID +TYPE +STATUS +PROGRESS$'
    run_split "$VIMG_CTL" -s "$S" wait j0
    assert_equal "$status" 2
    assert_equal "$stderr" "vimg-ctl: wait: job 'j0' not found"
    ctl_fails "^vimg-ctl: backup: Cannot find device=.?nope" \
        -s "$S" backup nope x.qcow2 --wait
    [ ! -e x.qcow2 ]
    vnbd_stop "$DPID"
    # The daemon is gone.
    ctl_fails "^vimg-ctl: $S: No such file or directory$" -s "$S" jobs
}
