#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-nbd's QMP jobs when things go wrong: the server killed (-9) in the
# middle of a backup or a mirror, and a target that runs out of space
# (an nbdkit memory export whose error filter fails writes with ENOSPC
# while a trigger file exists).  qemu-storage-daemon runs the same
# scenarios on a copy of the image as the reference for the job status
# sequences, events and error messages.  FAULT_ORDER="q v" (or "q")
# runs qemu-storage-daemon first (the comparisons need both).

load ../helpers
load qmp

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-storage-daemon qemu-img qemu-io nbdcopy nbdkit python3 jq
    export PYTHONPATH=$VIMG_SRC/tests/interop PYTHONDONTWRITEBYTECODE=1
    KIT_PIDS=()
}

eval "helpers_$(declare -f teardown)"
teardown() {
    local p
    for p in "${KIT_PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    helpers_teardown
}

# quit NAME PID: QMP quit, then wait for PID to exit.
quit() {
    python3 "$VIMG_SRC/tests/interop/qmp.py" "$T/$1.qmp" quit >/dev/null
    local i
    for i in $(seq 100); do
        kill -0 "$2" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "$1 did not quit" >&2
    return 1
}

# py NAME SCRIPT-ON-STDIN [ARGS]: python3 - QMPSOCK NBDSOCK NAME ARGS...
# with the daemon's log shown when it fails.
py() {
    local n=$1
    shift
    python3 - "$T/$n.qmp" "$T/$n.nbd" "$n" "$@" || {
        echo "$n log:" >&2
        cat "$T/$n.log" >&2
        return 1
    }
}

# 40M of data (some of it zero clusters) in 64M, with a persistent bitmap
# b0 in the file.
make_image() {
    qemu-img create -f qcow2 base.qcow2 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x5a 0 30M' -c 'write -z 30M 2M' \
        -c 'write -P 0x33 32M 8M' base.qcow2 >/dev/null
    qemu-img bitmap --add base.qcow2 b0
}

# start_kit NAME: a 64M nbdkit memory export on $T/NAME.sock whose writes
# fail with ENOSPC while $T/NAME.full exists.
start_kit() {
    rm -f "$T/$1.full"
    nbdkit -U "$T/$1.sock" -P "$T/$1.pid" --filter=error memory 64M \
        error-pwrite=ENOSPC error-pwrite-rate=1 \
        error-pwrite-file="$T/$1.full"
    KIT_PIDS+=("$(cat "$T/$1.pid")")
}

# ---------------------------------------------------------------------
# kill -9 in the middle of a job

# crash JOB: for vimg-nbd (v) and qsd (q) on copies of the image: start
# JOB (backup|mirror) slowly, kill -9 the daemon, check the image, then
# restart on it and try an incremental and a full backup with b0.
crash() {
    local s kind pid rc
    make_image
    for s in ${FAULT_ORDER:-v q}; do
        kind=vimg
        [ $s = q ] && kind=qsd
        cp base.qcow2 $s.qcow2
        start_daemon $kind $s "$T/$s.qcow2"
        pid=$DPID
        py $s "$1" <<'PY'
import sys, time
from qmp import QMP, write_pattern
qs, ns, p, job = sys.argv[1:5]
q = QMP(qs)
q.ok("qmp_capabilities")
write_pattern(ns, "d0", 50 << 20, 1 << 20, 0x77, fua=True)
if job == "backup":
    q.ok("drive-backup", job_id="j0", device="d0", target=p + "-t.qcow2",
         format="qcow2", sync="full", speed=1 << 20)
else:
    q.ok("drive-mirror", job_id="j0", device="d0", target=p + "-t.qcow2",
         format="qcow2", sync="full", speed=1 << 20)
time.sleep(1.5)
write_pattern(ns, "d0", 60 << 20, 1 << 20, 0x78, fua=True)
j = q.ok("query-jobs")
assert j[0]["status"] == "running", j
assert 0 < j[0]["current-progress"] < j[0]["total-progress"], j
PY
        kill -9 "$pid"
        wait "$pid" 2>/dev/null || true
        # leaks are allowed after a crash, corruption is not
        rc=0
        qemu-img check "$s.qcow2" >&2 || rc=$?
        [ "$rc" = 0 ] || [ "$rc" = 3 ]
        qemu-img info --output=json "$s.qcow2" |
            jq -c '.["format-specific"].data.bitmaps' >"$s.bitmaps"
        cat "$s.bitmaps" >&2
        jq -e '.[0].flags | any(.[]; . == "in-use")' "$s.bitmaps" >/dev/null
        # the FUA writes made before the kill were not lost
        qemu-io -r -f qcow2 -c 'read -P 0x77 50M 1M' -c 'read -P 0x78 60M 1M' \
            "$s.qcow2" >/dev/null
        start_daemon $kind $s "$T/$s.qcow2"
        py $s >$s.out <<'PY'
import json, sys
from qmp import QMP, snapshot
qs, ns, p = sys.argv[1:4]
q = QMP(qs)
q.ok("qmp_capabilities")
# an in-use bitmap is loaded inconsistent (and, in QEMU, not recording)
out = {"bitmaps": q.bitmaps("d0")}
for b in out["bitmaps"]:
    b.pop("count")
r = q.cmd("drive-backup", job_id="inc", device="d0", target=p + "-inc.qcow2",
          format="qcow2", sync="incremental", bitmap="b0")
r.pop("id")
out["drive-inc"] = r
q.ok("blockdev-add", driver="qcow2", node_name="t1",
     file={"driver": "file", "filename": p + "-full1.qcow2"})
r = q.cmd("blockdev-backup", job_id="inc", device="d0", target="t1",
          sync="bitmap", bitmap="b0", bitmap_mode="on-success")
r.pop("id")
out["blockdev-inc"] = r
out["jobs"] = q.ok("query-jobs")
snapshot(ns, "d0", p + "-ref.raw")
q.ok("blockdev-backup", job_id="full", device="d0", target="t1",
     sync="full")
e = q.wait_event("BLOCK_JOB_COMPLETED")
out["full-error"] = e["data"].get("error")
q.wait_job("full")
q.ok("blockdev-del", node_name="t1")
print(json.dumps(out))
PY
        cat $s.out >&2
        qemu-img compare -f qcow2 -F raw $s-full1.qcow2 $s-ref.raw >&2
        quit $s "$DPID"
    done
    jq -e '."drive-inc".error.desc | test("inconsistent")' v.out
    jq -e '."blockdev-inc".error.desc | test("inconsistent")' v.out
    jq -e '.bitmaps[0].inconsistent' v.out
    for k in bitmaps drive-inc blockdev-inc jobs full-error; do
        same_json "\"$k\""
    done
}

@test "kill -9 during a backup: image consistent, bitmap in use, incremental refused" {
    for s in v q; do qemu-img create -q -f qcow2 $s-full1.qcow2 64M; done
    crash backup
}

@test "kill -9 during a mirror: image consistent, bitmap in use, incremental refused" {
    for s in v q; do qemu-img create -q -f qcow2 $s-full1.qcow2 64M; done
    crash mirror
}

# ---------------------------------------------------------------------
# a target that runs out of space

# full_target JOB ON-TARGET-ERROR: JOB (backup|mirror) of d0 into the
# nbdkit export of $T/NAME-kit.sock, made full once part is copied.
# Output: NAME.out.
full_target() {
    local s kind
    make_image
    for s in ${FAULT_ORDER:-v q}; do
        kind=vimg
        [ $s = q ] && kind=qsd
        cp base.qcow2 $s.qcow2
        start_kit $s-kit
        start_daemon $kind $s "$T/$s.qcow2"
        py $s "$1" "$2" >$s.out <<'PY'
import json, os, sys, time
from qmp import QMP, snapshot, drained, nbd_uri
qs, ns, p, job, action = sys.argv[1:6]
full = p + "-kit.full"
q = QMP(qs)
q.ok("qmp_capabilities")
out = {}
args = dict(job_id="j0", device="d0", target=nbd_uri(p + "-kit.sock", ""),
            format="raw", mode="existing", sync="full", speed=8 << 20,
            on_target_error=action)
q.ok("drive-backup" if job == "backup" else "drive-mirror", **args)
time.sleep(1)
open(full, "w").close()
e = q.wait_event("BLOCK_JOB_ERROR", timeout=30)
out["error-event"] = e["data"]
if action == "ignore":
    time.sleep(1.5)  # errors go on meanwhile
    os.unlink(full)
    if job == "mirror":
        q.wait_event("BLOCK_JOB_READY", timeout=30)
        q.ok("block-job-cancel", device="j0")  # completes, no switch
if action == "stop":
    time.sleep(0.5)
    out["stopped"] = [{k: j[k] for k in ("status", "paused", "io-status")}
                      for j in q.ok("query-block-jobs")]
    os.unlink(full)
    q.ok("job-resume", id="j0")
    if job == "mirror":
        q.wait_event("BLOCK_JOB_READY", timeout=30)
        q.ok("block-job-cancel", device="j0")  # completes, no switch
e = q.wait_event("BLOCK_JOB_COMPLETED", timeout=60)
err = e["data"].get("error")
out["completed-error"] = err and "No space left on device" in err
print("completed: %s" % e["data"], file=sys.stderr)
q.wait_job("j0")
if os.path.exists(full):
    os.unlink(full)
out["statuses"] = drained(q.statuses("j0"))
out["raw-statuses"] = q.statuses("j0")
out["events"] = [n for n in q.event_names("j0") if n != "BLOCK_JOB_ERROR"]
out["jobs"] = q.ok("query-jobs")
# the server keeps serving: the export, and a new job
snapshot(ns, "d0", p + "-after.raw")
q.ok("drive-backup", job_id="j1", device="d0", target=p + "-j1.qcow2",
     format="qcow2", sync="full")
e = q.wait_event("BLOCK_JOB_COMPLETED")
out["j1-error"] = e["data"].get("error")
print(json.dumps(out))
PY
        cat $s.out >&2
        quit $s "$DPID"
        assert_qemu_check_clean $s.qcow2
        qemu-img compare -f qcow2 -F qcow2 $s.qcow2 base.qcow2 >&2
        qemu-img compare -f raw -F qcow2 $s-after.raw base.qcow2 >&2
        qemu-img compare -f qcow2 -F qcow2 $s-j1.qcow2 base.qcow2 >&2
        if [ "$2" != report ]; then
            # the job went on once the space came back: a complete copy
            qemu-img compare -f raw -F qcow2 \
                "nbd+unix:///?socket=$T/$s-kit.sock" base.qcow2 >&2
        fi
    done
}

@test "backup to a target that fills up: error reported, source intact" {
    full_target backup report
    jq -e '."completed-error"' v.out
    jq -e '."error-event" == {"device": "j0", "operation": "write",
                             "action": "report"}' v.out
    for k in error-event completed-error statuses events jobs j1-error; do
        same_json "\"$k\""
    done
}

@test "mirror to a target that fills up: error reported, source intact" {
    full_target mirror report
    jq -e '."completed-error"' v.out
    for k in error-event completed-error statuses events jobs j1-error; do
        same_json "\"$k\""
    done
}

@test "backup, on-target-error=stop: pauses on ENOSPC, resume finishes" {
    full_target backup stop
    jq -e '."completed-error" == null' v.out
    jq -e '."error-event".action == "stop"' v.out
    for k in error-event completed-error statuses events jobs j1-error; do
        same_json "\"$k\""
    done
    # qsd shows io-status "nospace" while the job is stopped on ENOSPC
    same_json stopped
}

@test "mirror, on-target-error=stop: pauses on ENOSPC, resume finishes" {
    full_target mirror stop
    jq -e '."completed-error" == null' v.out
    jq -e '."error-event".action == "stop"' v.out
    for k in error-event completed-error statuses events jobs j1-error; do
        same_json "\"$k\""
    done
    same_json stopped
}

# QEMU retries what failed with action ignore (the data stays dirty), so
# a transient ENOSPC still gives a complete copy.
@test "backup, on-target-error=ignore: transient ENOSPC, complete copy" {
    full_target backup ignore
    jq -e '."completed-error" == null' v.out
    jq -e '."error-event".action == "ignore"' v.out
    for k in error-event completed-error statuses events jobs j1-error; do
        same_json "\"$k\""
    done
}

@test "mirror, on-target-error=ignore: transient ENOSPC, complete copy" {
    full_target mirror ignore
    jq -e '."completed-error" == null' v.out
    jq -e '."error-event".action == "ignore"' v.out
    for k in error-event completed-error statuses events jobs j1-error; do
        same_json "\"$k\""
    done
}
