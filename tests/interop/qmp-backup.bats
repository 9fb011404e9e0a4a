#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-nbd's QMP backup features against qemu-storage-daemon: full and
# incremental backups while a client writes through NBD, pull-mode
# fleecing, transaction rollback, job verbs, and dirty bitmap commands.
# Each scenario runs the same Python script against both daemons (started
# with equivalent options on copies of one image) and compares the results.

load ../helpers
load qmp

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-storage-daemon qemu-img qemu-io nbdcopy python3 jq
    export PYTHONPATH=$VIMG_SRC/tests/interop PYTHONDONTWRITEBYTECODE=1
}

# start_both IMAGE [SIZE]: copies of IMAGE served by vimg-nbd (v) and
# qemu-storage-daemon (q); v.qcow2 / q.qcow2 are the served files.
start_both() {
    cp "$1" v.qcow2
    cp "$1" q.qcow2
    start_daemon vimg v "$T/v.qcow2"
    start_daemon qsd q "$T/q.qcow2"
}

# run_both SCRIPT: run the Python SCRIPT (on stdin) as
# `python3 - QMPSOCK NBDSOCK PREFIX` for v then q; outputs in v.out, q.out.
run_both() {
    local s
    s=$(cat)
    python3 - "$T/v.qmp" "$T/v.nbd" v <<<"$s" >v.out
    python3 - "$T/q.qmp" "$T/q.nbd" q <<<"$s" >q.out
}

make_image() {
    qemu-img create -f qcow2 base.qcow2 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x5a 1M 3M' -c 'write -P 0x33 20M 2M' \
        -c 'write -z 40M 1M' base.qcow2 >/dev/null
}

@test "full then incremental backups under NBD writes match their references" {
    make_image
    start_both base.qcow2
    run_both <<'PY'
import json, subprocess, sys, time
from qmp import QMP, Writer, snapshot, drained
qs, ns, p = sys.argv[1:4]
q = QMP(qs)
q.ok("qmp_capabilities")
w = Writer(ns, "d0", 64 << 20, seed=7)
w.start()

def job(name, action):
    """Pause the writer, take the reference, start the job, resume."""
    time.sleep(0.3)
    w.pause()
    snapshot(ns, "d0", "%s-ref-%s.raw" % (p, name))
    action()
    w.resume()
    n = w.writes
    q.wait_job(name)
    during[name] = w.writes - n
    assert during[name] > 0, "no write while %s ran" % name

during = {}

full = {"job-id": "full", "device": "d0", "target": p + "-full.qcow2",
        "format": "qcow2", "sync": "full", "speed": 32 << 20}
job("full", lambda: q.ok("transaction", actions=[
    {"type": "block-dirty-bitmap-add",
     "data": {"node": "d0", "name": "b0", "persistent": True}},
    {"type": "drive-backup", "data": full}]))
job("inc1", lambda: q.ok("drive-backup", job_id="inc1", device="d0",
                         target=p + "-inc1.qcow2", format="qcow2",
                         sync="incremental", bitmap="b0", speed=8 << 20))
# inc2: blockdev-backup into an overlay of inc1 made with qemu-img create
subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b",
                p + "-inc1.qcow2", "-F", "qcow2", p + "-inc2.qcow2", "64M"],
               check=True)
q.ok("blockdev-add", driver="qcow2", node_name="t2", backing=None,
     file={"driver": "file", "filename": p + "-inc2.qcow2"})
job("inc2", lambda: q.ok("blockdev-backup", job_id="inc2", device="d0",
                         target="t2", sync="bitmap", bitmap="b0",
                         bitmap_mode="on-success", speed=8 << 20))
q.ok("blockdev-del", node_name="t2")
writes = w.stop()
assert writes > 50, writes
bm = [{k: v for k, v in b.items() if k != "count"} for b in q.bitmaps("d0")]
print(json.dumps({
    "statuses": {j: drained(q.statuses(j)) for j in ("full", "inc1", "inc2")},
    "events": {j: q.event_names(j) for j in ("full", "inc1", "inc2")},
    "bitmaps": bm, "jobs": q.ok("query-jobs")}))
print("writes: %d, during the jobs: %s" % (writes, during), file=sys.stderr)
PY
    cat v.out q.out >&2
    same_json events
    same_json bitmaps
    same_json jobs
    for s in v q; do
        qemu-img rebase -u -f qcow2 -b "$s-full.qcow2" -F qcow2 "$s-inc1.qcow2"
        for j in full inc1 inc2; do
            echo "$s $j" >&2
            qemu-img compare -f qcow2 -F raw "$s-$j.qcow2" "$s-ref-$j.raw" >&2
        done
        assert_qemu_check_clean "$s-inc2.qcow2"
    done
    same_json statuses
}

@test "pull-mode fleecing keeps the point-in-time view; cancel like qsd" {
    make_image
    start_both base.qcow2
    for s in v q; do
        qemu-img create -f qcow2 -u -b "$T/$s.qcow2" -F qcow2 \
            "$s-fleece.qcow2" 64M >/dev/null
    done
    run_both <<'PY'
import json, sys
import nbdraw
from qmp import QMP, snapshot, drained
qs, ns, p = sys.argv[1:4]
q = QMP(qs)
q.ok("qmp_capabilities")
q.ok("block-dirty-bitmap-add", node="d0", name="b0", persistent=True)
q.ok("block-dirty-bitmap-add", node="d0", name="b1", persistent=True,
     disabled=True)
q.ok("blockdev-add", driver="qcow2", node_name="fleece",
     file={"driver": "file", "filename": p + "-fleece.qcow2"},
     backing="d0")
q.ok("blockdev-backup", job_id="fl", device="d0", target="fleece",
     sync="none")
# (a read-only export takes disabled bitmaps only)
q.ok("block-export-add", type="nbd", id="fx", node_name="fleece",
     name="fleece", writable=False, bitmaps=[{"node": "d0", "name": "b1"}])
c = nbdraw.NBD(ns)
c.connect("d0")
for off, pat in ((1 << 20, 0xcc), (30 << 20, 0xdd), (63 << 20, 0xee)):
    assert c.pwrite(off, bytes([pat]) * (512 << 10)).error == 0
snapshot(ns, "fleece", p + "-fleece.raw")
snapshot(ns, "d0", p + "-after.raw")
exports = q.ok("query-block-exports")
bm = q.bitmaps("d0")
q.ok("block-export-del", id="fx")
q.wait_event("BLOCK_EXPORT_DELETED", {"id": "fx"})
r = q.cmd("job-cancel", id="fl")
q.wait_job("fl")
q.ok("blockdev-del", node_name="fleece")
for e in exports:  # qsd exports its copy-before-write filter "#blockN"
    if e["node-name"].startswith("#"):
        e["node-name"] = "d0"
print(json.dumps({"cancel": r, "statuses": drained(q.statuses("fl")),
                  "events": q.event_names("fl"), "bitmaps": bm,
                  "exports": sorted(exports, key=lambda e: e["id"]),
                  "jobs": q.ok("query-jobs")}))
PY
    cat v.out q.out >&2
    for s in v q; do
        qemu-img compare -f raw -F qcow2 "$s-fleece.raw" base.qcow2 >&2
        ! qemu-img compare -q -f raw -F qcow2 "$s-after.raw" base.qcow2
        qemu-io -r -f raw -c 'read -P 0xcc 1M 512k' -c 'read -P 0xee 63M 512k' \
            "$s-after.raw" >/dev/null
    done
    cmp v-after.raw q-after.raw
    same_json cancel
    same_json statuses
    same_json events
    same_json bitmaps
    same_json exports
    same_json jobs
}

@test "a failed transaction leaves no trace of its earlier actions" {
    make_image
    start_both base.qcow2
    run_both <<'PY'
import json, sys
from qmp import QMP
qs, ns, p = sys.argv[1:4]
q = QMP(qs)
q.ok("qmp_capabilities")
add = lambda node, name: {"type": "block-dirty-bitmap-add", "data": {
    "node": node, "name": name, "persistent": True}}
out = {}
out["missing-node"] = q.cmd("transaction",
                            actions=[add("d0", "b1"), add("nope", "b9")])
out["after1"] = [b["name"] for b in q.bitmaps("d0")]
out["abort"] = q.cmd("transaction",
                     actions=[add("d0", "b2"), {"type": "abort", "data": {}}])
out["after2"] = [b["name"] for b in q.bitmaps("d0")]
q.ok("block-dirty-bitmap-add", node="d0", name="b3", persistent=True)
out["dup"] = q.cmd("transaction", actions=[add("d0", "b4"), add("d0", "b3")])
out["after3"] = [b["name"] for b in q.bitmaps("d0")]
out["ok"] = q.cmd("transaction", actions=[add("d0", "b5"), add("d0", "b6")])
out["after4"] = [b["name"] for b in q.bitmaps("d0")]
out["backup"] = q.cmd("transaction", actions=[
    add("d0", "b7"), {"type": "blockdev-backup", "data": {
        "job-id": "j7", "device": "d0", "target": "nope", "sync": "full"}}])
out["after5"] = [b["name"] for b in q.bitmaps("d0")]
out["jobs5"] = q.ok("query-jobs")
for k in ("missing-node", "abort", "dup", "ok", "backup"):
    out[k].pop("id", None)
    if "error" in out[k]:
        out[k + "-desc"] = out[k]["error"].pop("desc")
print(json.dumps(out))
PY
    cat v.out q.out >&2
    [ "$(jq -c .after1 v.out)" = '[]' ]
    [ "$(jq -c .after2 v.out)" = '[]' ]
    local fail=0
    for k in $(jq -r 'keys[]' q.out); do
        same_json "\"$k\"" || fail=1
    done
    [ "$fail" = 0 ]
}

@test "job verbs: pending, finalize, dismiss, complete error, set-speed" {
    make_image
    start_both base.qcow2
    run_both <<'PY'
import json, sys
from qmp import QMP, drained
qs, ns, p = sys.argv[1:4]
q = QMP(qs)
q.ok("qmp_capabilities")
out = {}
q.ok("drive-backup", job_id="j1", device="d0", target=p + "-j1.qcow2",
     format="qcow2", sync="full", speed=1 << 20, auto_finalize=False,
     auto_dismiss=False)
bj = q.ok("query-block-jobs")
out["block-job-keys"] = [sorted(j) for j in bj]
out["block-job"] = [{k: j[k] for k in ("device", "type", "speed",
                                        "auto-finalize", "auto-dismiss",
                                        "io-status", "ready")}
                    for j in bj]
out["complete"] = q.cmd("job-complete", id="j1")
out["finalize-early"] = q.cmd("job-finalize", id="j1")
out["dismiss-early"] = q.cmd("job-dismiss", id="j1")
out["set-speed"] = q.cmd("block-job-set-speed", device="j1", speed=0)
out["speed-after"] = [j["speed"] for j in q.ok("query-block-jobs")]
e = q.wait_event("BLOCK_JOB_PENDING")
out["pending-event"] = e["data"]
out["jobs-pending"] = [{k: j[k] for k in ("id", "type", "status")}
                       for j in q.ok("query-jobs")]
out["finalize"] = q.cmd("job-finalize", id="j1")
q.wait_job("j1", "concluded")
out["dismiss"] = q.cmd("job-dismiss", id="j1")
q.wait_job("j1")
out["statuses"] = drained(q.statuses("j1"))
out["events"] = q.event_names("j1")
out["jobs-end"] = q.ok("query-jobs")
for k, v in list(out.items()):
    if isinstance(v, dict) and "id" in v and ("return" in v or "error" in v):
        v.pop("id")
        if "error" in v:
            out.setdefault("descs", {})[k] = v["error"].pop("desc")
print(json.dumps(out))
PY
    cat v.out q.out >&2
    qemu-img compare -f qcow2 -F qcow2 v-j1.qcow2 base.qcow2
    qemu-img compare -f qcow2 -F qcow2 q-j1.qcow2 base.qcow2
    for k in block-job-keys block-job complete finalize-early \
        dismiss-early set-speed speed-after pending-event jobs-pending \
        finalize dismiss \
        statuses events jobs-end descs; do
        same_json "\"$k\""
    done
}

@test "dirty bitmap commands: same query-named-block-nodes as qsd" {
    make_image
    start_both base.qcow2
    run_both <<'PY'
import json, sys
import nbdraw
from qmp import QMP
qs, ns, p = sys.argv[1:4]
q = QMP(qs)
q.ok("qmp_capabilities")
c = nbdraw.NBD(ns)
c.connect("d0")

def write(off, n, pat=0x77):
    assert c.pwrite(off, bytes([pat]) * n).error == 0

out = {}
def step(_step, _cmd=None, **kw):
    if _cmd:
        r = q.cmd(_cmd, **kw)
        r.pop("id", None)
        out[_step + "-reply"] = r
    out[_step] = q.bitmaps("d0")

step("add-a", "block-dirty-bitmap-add", node="d0", name="ba",
     persistent=True)
step("add-b", "block-dirty-bitmap-add", node="d0", name="bb",
     persistent=True, granularity=4096, disabled=True)
write(0, 4096)
write(100000, 1000)
write(5 << 20, 200 << 10)
step("written")
step("disable-a", "block-dirty-bitmap-disable", node="d0", name="ba")
write(50 << 20, 64 << 10)
step("written-2")
step("enable-a", "block-dirty-bitmap-enable", node="d0", name="ba")
step("enable-b", "block-dirty-bitmap-enable", node="d0", name="bb")
write(60 << 20, 8192)
write(63 << 20, 3 << 20 >> 2)
step("written-3")
step("merge", "block-dirty-bitmap-merge", node="d0", target="bb",
     bitmaps=["ba"])
step("clear-a", "block-dirty-bitmap-clear", node="d0", name="ba")
step("merge-node", "block-dirty-bitmap-merge", node="d0", target="ba",
     bitmaps=[{"node": "d0", "name": "bb"}])
step("remove-b", "block-dirty-bitmap-remove", node="d0", name="bb")
step("remove-missing", "block-dirty-bitmap-remove", node="d0", name="bb")
step("add-dup", "block-dirty-bitmap-add", node="d0", name="ba",
     persistent=True)
step("add-bad-gran", "block-dirty-bitmap-add", node="d0", name="bc",
     persistent=True, granularity=1000)
step("merge-missing", "block-dirty-bitmap-merge", node="d0", target="ba",
     bitmaps=["zz"])
r = q.cmd("block-export-add", type="nbd", id="bx", node_name="d0",
          name="bx", bitmaps=["ba"])
r.pop("id")
out["export-enabled-reply"] = r
q.ok("block-dirty-bitmap-disable", node="d0", name="ba")
q.ok("block-export-add", type="nbd", id="bx2", node_name="d0", name="bx",
     bitmaps=["ba"])
step("exported")
step("clear-busy", "block-dirty-bitmap-clear", node="d0", name="ba")
step("enable-busy", "block-dirty-bitmap-enable", node="d0", name="ba")
step("remove-busy", "block-dirty-bitmap-remove", node="d0", name="ba")
step("merge-busy", "block-dirty-bitmap-merge", node="d0", target="ba",
     bitmaps=["ba"])
q.ok("block-export-del", id="bx2")
q.wait_event("BLOCK_EXPORT_DELETED", {"id": "bx2"})
step("unexported")
for k, v in list(out.items()):
    if isinstance(v, dict) and "error" in v:
        out[k[:-6] + "-desc"] = v["error"].pop("desc")
print(json.dumps(out))
PY
    cat v.out q.out >&2
    local fail=0
    for k in $(jq -r 'keys[]' q.out); do
        same_json "\"$k\"" || fail=1
    done
    [ "$fail" = 0 ]
}

@test "job length and missing-job errors are qsd's" {
    make_image
    start_both base.qcow2
    run_both <<'PY'
import json, sys
from qmp import QMP
qs, ns, p = sys.argv[1:4]
q = QMP(qs)
q.ok("qmp_capabilities")
out = {}
q.ok("drive-backup", job_id="j1", device="d0", target=p + "-j1.qcow2",
     format="qcow2", sync="full", speed=1 << 20)
out["len"] = [j["len"] for j in q.ok("query-block-jobs")]
out["total-progress"] = [j["total-progress"] for j in q.ok("query-jobs")]
for k, c, a in (("set-speed", "block-job-set-speed", {"device": "nope",
                                                      "speed": 0}),
                ("block-job-cancel", "block-job-cancel", {"device": "nope"}),
                ("block-job-pause", "block-job-pause", {"device": "nope"}),
                ("job-cancel", "job-cancel", {"id": "nope"}),
                ("job-pause", "job-pause", {"id": "nope"})):
    out[k] = q.cmd(c, a)["error"]
q.ok("block-job-set-speed", device="j1", speed=0)
e = q.wait_event("BLOCK_JOB_COMPLETED")
out["completed"] = {k: e["data"][k] for k in ("len", "offset", "speed")}
print(json.dumps(out))
PY
    cat v.out q.out >&2
    local fail=0
    for k in $(jq -r 'keys[]' q.out); do
        same_json "\"$k\"" || fail=1
    done
    [ "$fail" = 0 ]
}
