#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-nbd --qmp against qemu-storage-daemon: the wire (greeting,
# negotiation, errors), and a full backup through drive-backup whose
# result qemu-img compares with the source, with the same job status
# sequence as qemu-storage-daemon's.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-storage-daemon qemu-img qemu-io python3
    QMPPY=$VIMG_SRC/tests/interop/qmp.py
}

# start_vimg / start_qsd NAME IMAGE: a daemon serving IMAGE as node d0
# with a QMP socket at $T/NAME.qmp.
start_vimg() {
    "$VIMG_NBD" --qmp "$T/$1.qmp" \
        --blockdev "driver=qcow2,node-name=d0,file.driver=file,file.filename=$2" \
        2>"$T/$1.log" &
    BG_PIDS+=($!)
    _wait_socket "$T/$1.qmp" $!
}

start_qsd() {
    qemu-storage-daemon \
        --chardev "socket,id=c0,path=$T/$1.qmp,server=on,wait=off" \
        --monitor chardev=c0 \
        --blockdev "driver=qcow2,node-name=d0,file.driver=file,file.filename=$2" \
        2>"$T/$1.log" &
    BG_PIDS+=($!)
    _wait_socket "$T/$1.qmp" $!
}

@test "greeting, negotiation and errors have QMP's shape" {
    qemu-img create -f qcow2 d.qcow2 16M >/dev/null
    start_vimg v d.qcow2
    [ "$(stat -c %a "$T/v.qmp")" = 600 ]
    python3 - "$T/v.qmp" "$QMPPY" <<'PY'
import sys, importlib.util
spec = importlib.util.spec_from_file_location("qmp", sys.argv[2])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
q = m.QMP(sys.argv[1])
assert "version" in q.greeting["QMP"], q.greeting
r = q.cmd("query-version")
assert r["error"]["class"] == "CommandNotFound", r
assert q.cmd("qmp_capabilities") == {"return": {}, "id": "t"}
r = q.cmd("qmp_capabilities")
assert r["error"]["class"] == "CommandNotFound", r
r = q.cmd("no-such-command")
assert r["error"] == {"class": "CommandNotFound",
                      "desc": "The command no-such-command has not been found"}, r
r = q.cmd("block-dirty-bitmap-add", node="d0")
assert r["error"]["desc"] == "Parameter 'name' is missing", r
r = q.cmd("block-dirty-bitmap-add", node="d0", name="b", bogus=1)
assert r["error"]["class"] == "GenericError", r
assert "return" in q.cmd("query-named-block-nodes")
PY
}

# backup_sequence QMPSOCK: drive-backup sync=full of d0 into $T/out-*.qcow2
# and print the job's status sequence.
backup_sequence() {
    python3 - "$1" "$QMPPY" "$2" <<'PY'
import sys, importlib.util
spec = importlib.util.spec_from_file_location("qmp", sys.argv[2])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
q = m.QMP(sys.argv[1])
q.cmd("qmp_capabilities")
r = q.cmd("drive-backup", job_id="j0", device="d0", target=sys.argv[3],
          sync="full", format="qcow2")
assert r == {"return": {}, "id": "t"}, r
q.wait_event("BLOCK_JOB_COMPLETED")
q.wait_event("JOB_STATUS_CHANGE", {"id": "j0", "status": "null"})
print(" ".join(q.statuses("j0")))
PY
}

@test "drive-backup sync=full: same result and statuses as qemu-storage-daemon" {
    qemu-img create -f qcow2 d.qcow2 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x5a 1M 3M' -c 'write -z 8M 1M' \
        d.qcow2 >/dev/null
    cp d.qcow2 q.qcow2
    start_vimg v d.qcow2
    start_qsd q q.qcow2
    vseq=$(backup_sequence "$T/v.qmp" "$T/out-v.qcow2")
    qseq=$(backup_sequence "$T/q.qmp" "$T/out-q.qcow2")
    echo "vimg: $vseq" >&2; echo "qsd:  $qseq" >&2
    [ "$vseq" = "$qseq" ]
    qemu-img compare -U out-v.qcow2 out-q.qcow2
    qemu-img compare -U out-v.qcow2 d.qcow2
    qemu-img check out-v.qcow2
}

# bitmap_counts QMPSOCK NBDSOCK: add a non-persistent bitmap, write
# through an export started over QMP, print the dirty-bitmaps of d0.
bitmap_counts() {
    python3 - "$1" "$QMPPY" "$2" <<'PY'
import json, subprocess, sys, importlib.util
spec = importlib.util.spec_from_file_location("qmp", sys.argv[2])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
q = m.QMP(sys.argv[1])
q.cmd("qmp_capabilities")
for args in ({"node": "d0", "name": "tmp"},
             {"node": "d0", "name": "off", "disabled": True,
              "granularity": 4096}):
    r = q.cmd("block-dirty-bitmap-add", args)
    assert r.get("return") == {}, r
r = q.cmd("nbd-server-start", addr={"type": "unix",
                                    "data": {"path": sys.argv[3]}})
assert r.get("return") == {}, r
r = q.cmd("block-export-add", type="nbd", id="e0", node_name="d0",
          writable=True)
assert r.get("return") == {}, r
subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 7 1M 100k",
                "-c", "write -z 5M 64k",
                "nbd+unix:///d0?socket=" + sys.argv[3]],
               check=True, capture_output=True)
r = q.cmd("block-dirty-bitmap-merge", node="d0", target="off",
          bitmaps=["tmp"])
assert r.get("return") == {}, r
nodes = q.cmd("query-named-block-nodes")["return"]
d0 = [n for n in nodes if n["node-name"] == "d0"][0]
print(json.dumps(sorted(d0["dirty-bitmaps"], key=lambda b: b["name"]),
                 sort_keys=True))
r = q.cmd("block-dirty-bitmap-remove", node="d0", name="tmp")
assert r.get("return") == {}, r
PY
}

@test "non-persistent bitmaps record, merge and list as in qemu-storage-daemon" {
    qemu-img create -f qcow2 d.qcow2 64M >/dev/null
    cp d.qcow2 q.qcow2
    start_vimg v d.qcow2
    start_qsd q q.qcow2
    vout=$(bitmap_counts "$T/v.qmp" "$T/v.nbd")
    qout=$(bitmap_counts "$T/q.qmp" "$T/q.nbd")
    echo "vimg: $vout" >&2
    echo "qsd:  $qout" >&2
    [ "$vout" = "$qout" ]
    [[ "$vout" == *'"count": 196608'* ]]
}
