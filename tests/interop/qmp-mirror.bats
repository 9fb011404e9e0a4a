#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-nbd's mirror jobs against qemu-storage-daemon: drive-mirror to an
# NBD target (qemu-nbd) under NBD writes with the export following the
# node on job-complete, blockdev-mirror ended by a soft block-job-cancel
# (no switch), job-cancel of a ready mirror, and sync=top on an overlay.
# Each scenario runs the same Python script against both daemons (started
# with equivalent options on copies of one image) and compares results
# and job status sequences.  Normalised artifacts, and only those:
#  - qsd's extra "paused", "running" pairs from drained sections around
#    graph changes (qmp.drained());
#  - QEMU's automatic node names "#blockNNN" (qmp.exports()).

load ../helpers
load qmp

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-storage-daemon qemu-img qemu-io qemu-nbd nbdcopy \
        python3 jq
    export PYTHONPATH=$VIMG_SRC/tests/interop PYTHONDONTWRITEBYTECODE=1
    QNBD_PIDS=()
}

eval "helpers_$(declare -f teardown)"
teardown() {
    local p
    for p in "${QNBD_PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    helpers_teardown
}

start_both() {
    cp "$1" v.qcow2
    cp "$1" q.qcow2
    start_daemon vimg v "$T/v.qcow2"
    VPID=$!
    start_daemon qsd q "$T/q.qcow2"
    QPID=$!
}

# quit_both: QMP quit to both daemons; wait until they have exited.
quit_both() {
    python3 "$VIMG_SRC/tests/interop/qmp.py" "$T/v.qmp" quit >/dev/null
    python3 "$VIMG_SRC/tests/interop/qmp.py" "$T/q.qmp" quit >/dev/null
    local i
    for i in $(seq 100); do
        kill -0 "$VPID" 2>/dev/null || kill -0 "$QPID" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "a daemon did not quit" >&2
    return 1
}

# run_both SCRIPT: `python3 - QMPSOCK NBDSOCK PREFIX` for v then q;
# outputs in v.out, q.out.
run_both() {
    local s
    s=$(cat)
    python3 - "$T/v.qmp" "$T/v.nbd" v <<<"$s" >v.out || {
        echo "vimg-nbd log:" >&2; cat v.log >&2; return 1; }
    python3 - "$T/q.qmp" "$T/q.nbd" q <<<"$s" >q.out || {
        echo "qsd log:" >&2; cat q.log >&2; return 1; }
}

# all_same: every key of q.out is the same in v.out.
all_same() {
    local k fail=0
    for k in $(jq -r 'keys[]' q.out); do
        same_json "\"$k\"" || fail=1
    done
    [ "$fail" = 0 ]
}

make_image() {
    qemu-img create -f qcow2 base.qcow2 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x5a 1M 3M' -c 'write -P 0x33 20M 2M' \
        -c 'write -z 40M 1M' -c 'write -P 0x44 60M 4M' base.qcow2 >/dev/null
}

# start_qemu_nbd NAME: a 64M raw file $T/NAME.raw served writable as
# export "tgt" on $T/NAME.sock (several clients: the daemon and the test).
start_qemu_nbd() {
    truncate -s 64M "$T/$1.raw"
    qemu-nbd -f raw -x tgt -k "$T/$1.sock" -e 4 -t --fork \
        --pid-file "$T/$1.pid" "$T/$1.raw"
    QNBD_PIDS+=("$(cat "$T/$1.pid")")
}

@test "drive-mirror to qemu-nbd under writes: complete moves the export" {
    make_image
    start_both base.qcow2
    start_qemu_nbd v-tgt
    start_qemu_nbd q-tgt
    run_both <<'PY'
import json, sys, time
from qmp import QMP, Writer, snapshot, drained, exports, nbd_uri, \
    write_pattern
qs, ns, p = sys.argv[1:4]
tsock = p + "-tgt.sock"
q = QMP(qs)
q.ok("qmp_capabilities")
out = {"exports-before": exports(q)}
w = Writer(ns, "d0", 64 << 20, seed=11)
w.start()
time.sleep(0.2)
r = q.cmd("drive-mirror", job_id="m0", device="d0",
          target=nbd_uri(tsock, "tgt"), format="raw", mode="existing",
          sync="full", node_name="mir")
r.pop("id")
out["start"] = r
n = w.writes
e = q.wait_event("BLOCK_JOB_READY", timeout=60)
out["ready"] = {k: e["data"][k] for k in ("device", "type")}
assert w.writes > n, "no write while the mirror copied"
time.sleep(0.3)  # writes while ready are mirrored too
w.pause()
snapshot(ns, "d0", p + "-ref.raw")
out["complete"] = q.cmd("job-complete", id="m0")
out["complete"].pop("id")
e = q.wait_event("BLOCK_JOB_COMPLETED")
out["completed-error"] = e["data"].get("error")
q.wait_job("m0")
out["exports-after"] = exports(q)
w.resume()
time.sleep(0.3)
writes = w.stop()
write_pattern(ns, "d0", 5 << 20, 64 << 10, 0xab)
snapshot(ns, "d0", p + "-after.raw")
out["statuses"] = drained(q.statuses("m0"))
out["events"] = q.event_names("m0")
out["jobs"] = q.ok("query-jobs")
print(json.dumps(out))
print("writes: %d" % writes, file=sys.stderr)
PY
    cat v.out q.out >&2
    quit_both
    for s in v q; do
        local tgt="nbd+unix:///tgt?socket=$T/$s-tgt.sock"
        # the writes after the switch (and the 0xab one) are in the target
        qemu-io -r -f raw -c 'read -P 0xab 5M 64k' "$tgt" >/dev/null
        qemu-img compare -f raw -F raw "$s-after.raw" "$tgt" >&2
        # the source stopped at the switch; the reference is the same
        qemu-img compare -f qcow2 -F raw "$s.qcow2" "$s-ref.raw" >&2
        assert_qemu_check_clean "$s.qcow2"
        ! qemu-img compare -q -f raw -F raw "$s-after.raw" "$s-ref.raw"
    done
    [ "$(jq -r '."exports-after"[0]."node-name"' v.out)" = mir ]
    all_same
}

@test "blockdev-mirror: soft block-job-cancel when ready ends without switch" {
    make_image
    start_both base.qcow2
    for s in v q; do
        qemu-img create -f qcow2 "$s-t.qcow2" 64M >/dev/null
    done
    run_both <<'PY'
import json, sys, time
from qmp import QMP, Writer, snapshot, drained, exports
qs, ns, p = sys.argv[1:4]
q = QMP(qs)
q.ok("qmp_capabilities")
out = {}
q.ok("blockdev-add", driver="qcow2", node_name="t0",
     file={"driver": "file", "filename": p + "-t.qcow2"})
w = Writer(ns, "d0", 64 << 20, seed=5)
w.start()
q.ok("blockdev-mirror", job_id="m0", device="d0", target="t0",
     sync="full")
q.wait_event("BLOCK_JOB_READY", timeout=60)
time.sleep(0.2)
w.pause()
snapshot(ns, "d0", p + "-ref.raw")
r = q.cmd("block-job-cancel", device="m0", force=False)
r.pop("id")
out["cancel"] = r
e = q.wait_event("BLOCK_JOB_COMPLETED")
out["completed"] = {k: e["data"].get(k) for k in ("device", "type",
                                                  "error")}
q.wait_job("m0")
out["exports-after"] = exports(q)
# the source keeps taking writes; the target no longer follows
w.resume()
time.sleep(0.3)
w.stop()
snapshot(ns, "d0", p + "-after.raw")
q.ok("blockdev-del", node_name="t0")
out["statuses"] = drained(q.statuses("m0"))
out["events"] = q.event_names("m0")
out["jobs"] = q.ok("query-jobs")
print(json.dumps(out))
PY
    cat v.out q.out >&2
    for s in v q; do
        qemu-img compare -f qcow2 -F raw "$s-t.qcow2" "$s-ref.raw" >&2
        ! qemu-img compare -q -f raw -F raw "$s-after.raw" "$s-ref.raw"
        assert_qemu_check_clean "$s-t.qcow2"
    done
    [ "$(jq -r '."exports-after"[0]."node-name"' v.out)" = d0 ]
    [ "$(jq -c .events v.out)" = '["BLOCK_JOB_READY","BLOCK_JOB_COMPLETED"]' ]
    all_same
}

@test "job-cancel of a ready mirror: aborting and BLOCK_JOB_CANCELLED" {
    make_image
    start_both base.qcow2
    run_both <<'PY'
import json, sys
from qmp import QMP, drained, exports
qs, ns, p = sys.argv[1:4]
q = QMP(qs)
q.ok("qmp_capabilities")
out = {}
q.ok("drive-mirror", job_id="m0", device="d0", target=p + "-m.qcow2",
     format="qcow2", sync="full", node_name="mir")
q.wait_event("BLOCK_JOB_READY", timeout=60)
# len differs: qsd also counts the source's zero clusters (write -z)
# that vimg-nbd skips for a zero target; both are done when ready
out["ready-jobs"] = [{k: j[k] for k in ("device", "type", "ready")}
                     for j in q.ok("query-block-jobs")]
out["ready-done"] = [j["len"] == j["offset"] for j in q.ok("query-block-jobs")]
r = q.cmd("job-cancel", id="m0")
r.pop("id")
out["cancel"] = r
e = q.wait_event("BLOCK_JOB_CANCELLED")
out["cancelled"] = {k: e["data"].get(k) for k in ("device", "type")}
q.wait_job("m0")
out["exports-after"] = exports(q)
out["statuses"] = drained(q.statuses("m0"))
out["events"] = q.event_names("m0")
out["jobs"] = q.ok("query-jobs")
print(json.dumps(out))
PY
    cat v.out q.out >&2
    for s in v q; do
        # a ready mirror's target is a full copy even when cancelled
        qemu-img compare -f qcow2 -F qcow2 "$s-m.qcow2" base.qcow2 >&2
    done
    [ "$(jq -c .statuses v.out)" = \
      '["created","running","ready","aborting","concluded","null"]' ]
    all_same
}

@test "drive-mirror sync=top of an overlay keeps the backing file" {
    qemu-img create -f qcow2 lower.qcow2 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x11 0 8M' -c 'write -P 0x22 30M 4M' \
        lower.qcow2 >/dev/null
    qemu-img create -f qcow2 -b "$T/lower.qcow2" -F qcow2 base.qcow2 \
        >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x77 2M 1M' -c 'write -z 31M 1M' \
        -c 'write -P 0x99 50M 2M' base.qcow2 >/dev/null
    start_both base.qcow2
    run_both <<'PY'
import json, subprocess, sys
from qmp import QMP, snapshot, drained, exports, write_pattern
qs, ns, p = sys.argv[1:4]
q = QMP(qs)
q.ok("qmp_capabilities")
out = {}
snapshot(ns, "d0", p + "-before.raw")
q.ok("drive-mirror", job_id="m0", device="d0", target=p + "-top.qcow2",
     format="qcow2", sync="top", node_name="mir")
write_pattern(ns, "d0", 40 << 20, 128 << 10, 0x5e)
q.wait_event("BLOCK_JOB_READY", timeout=60)
write_pattern(ns, "d0", 7 << 20, 64 << 10, 0x6f)
snapshot(ns, "d0", p + "-ref.raw")
q.ok("job-complete", id="m0")
q.wait_event("BLOCK_JOB_COMPLETED")
q.wait_job("m0")
snapshot(ns, "d0", p + "-after.raw")
out["exports-after"] = exports(q)
info = json.loads(subprocess.run(
    ["qemu-img", "info", "-U", "--output=json", p + "-top.qcow2"],
    check=True, capture_output=True, text=True).stdout)
out["backing"] = {k: info.get(k) for k in ("backing-filename",
                                           "full-backing-filename",
                                           "backing-filename-format")}
out["statuses"] = drained(q.statuses("m0"))
out["events"] = q.event_names("m0")
print(json.dumps(out))
PY
    cat v.out q.out >&2
    for s in v q; do
        cmp "$s-ref.raw" "$s-after.raw"
        ! cmp -s "$s-before.raw" "$s-ref.raw"
        qemu-img compare -U -f qcow2 -F raw "$s-top.qcow2" "$s-ref.raw" >&2
        # only the top layer was copied: lower.qcow2's data is not in it
        qemu-io -U -r -f qcow2 -c 'read -P 0 0 1M' \
            "json:{\"driver\":\"qcow2\",\"backing\":null,\"file\":{\"driver\":\"file\",\"filename\":\"$T/$s-top.qcow2\"}}" \
            >/dev/null
    done
    [ "$(jq -r '.backing."backing-filename"' v.out)" = "$T/lower.qcow2" ]
    all_same
}
