# SPDX-License-Identifier: LGPL-2.1-or-later
"""A small QMP client for the tests (standard library only).

    q = QMP(path)            # connects, reads the greeting
    q.cmd("qmp_capabilities")
    r = q.cmd("query-jobs")  # the whole reply: {"return": ...} or {"error": ...}
    e = q.wait_event("BLOCK_JOB_COMPLETED")
    q.statuses("j0")         # the JOB_STATUS_CHANGE statuses seen for a job

Command line: python3 qmp.py SOCKET COMMAND [JSON-ARGUMENTS] prints the
reply after qmp_capabilities.
"""
import json
import socket
import sys
import time


class QMP:
    def __init__(self, path, timeout=60):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.file = self.sock.makefile("rw")
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
        self.file.write(json.dumps(msg) + "\n")
        self.file.flush()
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


if __name__ == "__main__":
    q = QMP(sys.argv[1])
    q.cmd("qmp_capabilities")
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(q.cmd(sys.argv[2], args)))
