# SPDX-License-Identifier: LGPL-2.1-or-later
"""A small QMP client for the tests (standard library only).

    q = QMP(path)            # connects, reads the greeting
    q.cmd("qmp_capabilities")
    r = q.cmd("query-jobs")  # the whole reply: {"return": ...} or {"error": ...}
    e = q.wait_event("BLOCK_JOB_COMPLETED")
    q.statuses("j0")         # the JOB_STATUS_CHANGE statuses seen for a job
    q.ok("query-jobs")       # the "return" value; AssertionError on error
    q.wait_job("j0")         # wait for the job's "null" (or other) status
    drained(q.statuses("j0"))  # without repeated paused/running pairs
    q.bitmaps("d0")          # query-named-block-nodes' dirty-bitmaps of d0
    w = Writer(sock, "d0", size)  # NBD writer thread: start(), pause(),
                                  # resume(), stop() (returns the writes)
    snapshot(sock, "d0", "ref.raw")   # nbdcopy an export into a raw file

Command line: python3 qmp.py SOCKET COMMAND [JSON-ARGUMENTS] prints the
reply after qmp_capabilities.
"""
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time


class QMP:
    def __init__(self, path, timeout=60):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        # Read-only: a text "rw" file throws away what it has read ahead
        # (events sent just before a reply) each time it is written to.
        self.file = self.sock.makefile("r")
        self.events = []
        self.seen = []
        self.greeting = self._read()

    def _read(self):
        line = self.file.readline()
        if not line:
            raise EOFError("QMP connection closed")
        return json.loads(line)

    def cmd(self, _name, _args=None, **kw):
        msg = {"execute": _name, "id": "t"}
        args = dict(_args or {})
        args.update({k.replace("_", "-"): v for k, v in kw.items()})
        if args:
            msg["arguments"] = args
        self.sock.sendall((json.dumps(msg) + "\n").encode())
        while True:
            r = self._read()
            if "event" in r:
                self.events.append(r)
                self.seen.append(r)
                continue
            return r

    def wait_event(self, name, match=None, timeout=60):
        end = time.time() + timeout
        while True:
            for e in self.events:
                if e["event"] == name and (
                        match is None or
                        all(e.get("data", {}).get(k) == v
                            for k, v in match.items())):
                    self.events.remove(e)
                    return e
            left = end - time.time()
            if left <= 0:
                raise TimeoutError(name)
            self.sock.settimeout(left)
            r = self._read()
            if "event" in r:
                self.events.append(r)
                self.seen.append(r)

    def statuses(self, job_id):
        return [e["data"]["status"] for e in self.seen
                if e["event"] == "JOB_STATUS_CHANGE" and
                e["data"]["id"] == job_id]

    def ok(self, _name, _args=None, **kw):
        r = self.cmd(_name, _args, **kw)
        assert "return" in r, (_name, _args, kw, r)
        return r["return"]

    def wait_job(self, job_id, status="null", timeout=60):
        return self.wait_event("JOB_STATUS_CHANGE",
                               {"id": job_id, "status": status}, timeout)

    def event_names(self, job_id):
        """The job events other than JOB_STATUS_CHANGE seen for JOB_ID."""
        return [e["event"] for e in self.seen
                if e["event"].startswith("BLOCK_JOB_") and
                job_id in (e["data"].get("device"), e["data"].get("id"))]

    def bitmaps(self, node):
        for n in self.ok("query-named-block-nodes"):
            if n["node-name"] == node:
                # qsd lists a backup job's internal bitmap without a name
                return sorted((b for b in n.get("dirty-bitmaps", [])
                               if "name" in b), key=lambda b: b["name"])
        raise KeyError(node)


def drained(statuses):
    """STATUSES with the "paused", "running" pairs of drained sections
    after the first left out (qsd has one per graph change)."""
    out, seen, i = [], False, 0
    while i < len(statuses):
        pair = statuses[i:i + 2] == ["paused", "running"]
        if pair and seen:
            i += 2
            continue
        seen |= pair
        out.append(statuses[i])
        i += 1
    return out


def nbd_uri(sock, name):
    return "nbd+unix:///%s?socket=%s" % (name, sock)


def snapshot(sock, name, path):
    """Copy export NAME served on SOCK into the raw file PATH."""
    subprocess.run(["nbdcopy", nbd_uri(sock, name), path], check=True)


class Writer(threading.Thread):
    """Writes random patterns to export NAME on SOCK until stop().

    pause() returns once no write is in flight; resume() goes on.
    """

    def __init__(self, sock, name, size, seed=1, chunk=65536):
        super().__init__(daemon=True)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import nbdraw
        self.nbd = nbdraw.NBD(sock)
        self.nbd.connect(name)
        self.rng = random.Random(seed)
        self.size, self.chunk = size, chunk
        self.go = threading.Event()
        self.idle = threading.Event()
        self.done = False
        self.writes = 0
        self.error = None
        self.go.set()

    def run(self):
        try:
            while not self.done:
                if not self.go.is_set():
                    self.idle.set()
                    self.go.wait()
                    continue
                self.idle.clear()
                self.write_one()
        except Exception as e:  # reported by stop()
            self.error = e
        self.idle.set()

    def write_one(self):
        n = self.rng.randint(1, 4) * self.chunk // 4
        off = self.rng.randrange(0, self.size - n, 512)
        r = self.nbd.pwrite(off, bytes([self.rng.randint(1, 255)]) * n)
        assert r.error == 0, r
        self.writes += 1
        time.sleep(0.002)

    def pause(self):
        self.go.clear()
        self.idle.wait(30)

    def resume(self):
        self.idle.clear()
        self.go.set()

    def stop(self):
        self.done = True
        self.go.set()
        self.join(30)
        if self.error:
            raise self.error
        return self.writes


def exports(q):
    """query-block-exports sorted by id, with QEMU's automatic node names
    ("#block123", a naming artifact) shown as "#auto"."""
    out = []
    for e in q.ok("query-block-exports"):
        e = dict(e)
        if e.get("node-name", "").startswith("#"):
            e["node-name"] = "#auto"
        out.append(e)
    return sorted(out, key=lambda e: e["id"])


def write_pattern(sock, name, off, n, pat, fua=False):
    """One NBD write of N bytes of PAT at OFF to export NAME on SOCK
    (with FUA: durable once acknowledged)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import nbdraw
    c = nbdraw.NBD(sock)
    c.connect(name)
    r = c.pwrite(off, bytes([pat]) * n, nbdraw.CMD_FLAG_FUA if fua else 0)
    assert r.error == 0, r


if __name__ == "__main__":
    q = QMP(sys.argv[1])
    q.cmd("qmp_capabilities")
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(q.cmd(sys.argv[2], args)))
