# SPDX-License-Identifier: LGPL-2.1-or-later
"""NBD soak test: many concurrent clients with a shadow model.

    python3 soak.py SOCKET SIZE SECONDS SEED [--clients N] [--loaders N]
                    [--dump FILE]
    python3 soak.py verify IMAGE.raw FILE

Each of N client threads (default 64) has its own connection and owns a
disjoint region of the export (SIZE // N bytes, 4 KiB aligned), so its
shadow model is exact without any cross-client ordering.  It issues
random READ (verified against the shadow), WRITE (random pattern,
sometimes FUA), WRITE_ZEROES (sometimes NO_HOLE), TRIM (the range becomes
"unknown" until rewritten) and occasional FLUSH.  A few loader threads
read across the whole export without verifying.  The export must start
all zero (a fresh image).  Connections alternate between simple replies,
structured replies and extended headers (when the server offers them).

On the first mismatch or protocol error it prints a message naming the
client, the operation and the first bad byte, and exits 1.  At the end it
prints one summary line per run ("soak ok: ...") and, with --dump, writes
the shadow (FILE) and its known-byte mask (FILE.mask, 0xff = known) so
that `soak.py verify` can check the image after the server has stopped.

Standard library only; uses nbdraw.py from this folder.
"""

import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbdraw  # noqa: E402

N = nbdraw


class Failure(Exception):
    pass


def first_diff(got, want, mask):
    for i in range(len(got)):
        if mask[i] and got[i] != want[i]:
            return i
    return None


def masked_equal(got, want, mask):
    if len(got) != len(want):
        return False
    if mask.find(0) < 0:
        return got == want
    m = int.from_bytes(mask, "big")
    return (int.from_bytes(got, "big") ^ int.from_bytes(want, "big")) & m == 0


class Soak:
    def __init__(self, path, size, seconds, seed, clients, loaders):
        self.path, self.size, self.seconds = path, size, seconds
        self.seed, self.nclients, self.nloaders = seed, clients, loaders
        self.region = (size // clients) & ~4095
        if self.region < 4096:
            raise SystemExit("soak: export too small for %d clients" % clients)
        self.shadow = bytearray(size)          # fresh image: all zero
        self.known = bytearray(b"\xff") * size  # 0xff = known byte
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.error = None
        self.counts = {}

    def fail(self, msg):
        with self.lock:
            if self.error is None:
                self.error = msg
        self.stop.set()

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def connect(self, rng, i):
        c = N.NBD(self.path, timeout=60)
        c.start()
        mode = i % 3      # 0 simple, 1 structured, 2 extended headers
        if mode == 2 and c.extended_headers() != N.REP_ACK:
            mode = 1
        if mode == 1 and c.structured_reply() != N.REP_ACK:
            raise Failure("server refused structured replies")
        c.go("")
        if c.size != self.size:
            raise Failure("export size %d, expected %d" % (c.size,
                                                          self.size))
        need = (N.FLAG_SEND_FLUSH | N.FLAG_SEND_FUA | N.FLAG_SEND_TRIM
                | N.FLAG_SEND_WRITE_ZEROES)
        if c.eflags & need != need or c.eflags & N.FLAG_READ_ONLY:
            raise Failure("export flags %#x lack flush/fua/trim/zeroes or "
                          "are read-only" % c.eflags)
        return c

    @staticmethod
    def check(r, what):
        if r.error:
            raise Failure("%s failed with NBD error %d" % (what, r.error))

    def pick(self, rng, base):
        """A random range inside the region at BASE: mostly 512-aligned,
        sometimes unaligned, sometimes whole clusters."""
        k = rng.random()
        if k < 0.6:
            ln = rng.randint(1, 64) * 512
            off = rng.randrange(0, self.region // 512) * 512
        elif k < 0.85:
            ln = rng.randint(1, 16) * 65536
            off = rng.randrange(0, self.region // 65536 or 1) * 65536
        else:
            ln = rng.randint(1, 20000)
            off = rng.randrange(0, self.region)
        ln = max(1, min(ln, self.region - off))
        return base + off, ln

    def client(self, i):
        rng = random.Random(self.seed * 1000003 + i)
        base = i * self.region
        hist = []
        try:
            c = self.connect(rng, i)
            while not self.stop.is_set():
                off, ln = self.pick(rng, base)
                k = rng.random()
                if k < 0.40:
                    op = "read"
                    r = c.pread(off, ln)
                    self.check(r, "READ %d+%d" % (off, ln))
                    got = r.data(off, ln)
                    want = self.shadow[off:off + ln]
                    mask = self.known[off:off + ln]
                    if not masked_equal(got, want, mask):
                        d = first_diff(got, want, mask)
                        raise Failure(
                            "data mismatch: READ %d+%d: byte at %d is %#04x,"
                            " expected %#04x; recent ops: %s"
                            % (off, ln, off + d, got[d], want[d],
                               " ".join(hist[-12:])))
                elif k < 0.75:
                    fua = rng.random() < 0.2
                    op = "write" + ("-fua" if fua else "")
                    if rng.random() < 0.5:
                        data = bytes([rng.randrange(1, 256)]) * ln
                    else:
                        data = rng.randbytes(ln)
                    r = c.pwrite(off, data, N.CMD_FLAG_FUA if fua else 0)
                    self.check(r, "WRITE %d+%d" % (off, ln))
                    self.shadow[off:off + ln] = data
                    self.known[off:off + ln] = b"\xff" * ln
                elif k < 0.87:
                    fl = 0
                    if rng.random() < 0.3:
                        fl |= N.CMD_FLAG_NO_HOLE
                    if rng.random() < 0.2:
                        fl |= N.CMD_FLAG_FUA
                    op = "zero" + ("/f%d" % fl if fl else "")
                    r = c.cmd(N.CMD_WRITE_ZEROES, off, ln, fl)
                    self.check(r, "WRITE_ZEROES %d+%d flags %d"
                               % (off, ln, fl))
                    self.shadow[off:off + ln] = bytes(ln)
                    self.known[off:off + ln] = b"\xff" * ln
                elif k < 0.98:
                    op = "trim"
                    r = c.cmd(N.CMD_TRIM, off, ln)
                    self.check(r, "TRIM %d+%d" % (off, ln))
                    self.known[off:off + ln] = bytes(ln)
                else:
                    op = "flush"
                    r = c.cmd(N.CMD_FLUSH)
                    self.check(r, "FLUSH")
                hist.append("%s@%d+%d" % (op, off, ln))
                del hist[:-16]
                self.count(op.split("/")[0])
            c.disc()
            c.close()
        except Failure as e:
            self.fail("client %d: %s" % (i, e))
        except (N.Closed, OSError, AssertionError) as e:
            self.fail("client %d: protocol error: %s: %s; recent ops: %s"
                      % (i, type(e).__name__, e, " ".join(hist[-12:])))

    def loader(self, i):
        rng = random.Random(self.seed * 7919 + 100000 + i)
        try:
            c = self.connect(rng, i)
            while not self.stop.is_set():
                ln = rng.randint(1, 256) * 4096
                off = rng.randrange(0, self.size - ln + 1)
                r = c.pread(off, ln)
                self.check(r, "READ %d+%d" % (off, ln))
                r.data(off, ln)        # well-formed coverage only
                self.count("load-read")
            c.disc()
            c.close()
        except Failure as e:
            self.fail("loader %d: %s" % (i, e))
        except (N.Closed, OSError, AssertionError) as e:
            self.fail("loader %d: protocol error: %s: %s"
                      % (i, type(e).__name__, e))

    def run(self):
        ts = [threading.Thread(target=self.client, args=(i,), daemon=True)
              for i in range(self.nclients)]
        ts += [threading.Thread(target=self.loader, args=(i,), daemon=True)
               for i in range(self.nloaders)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        self.stop.wait(self.seconds)
        self.stop.set()
        for t in ts:
            t.join(120)
            if t.is_alive():
                self.fail("a client thread hung (no reply within 120 s)")
                break
        return time.monotonic() - t0


def verify(image, dump):
    with open(image, "rb") as f:
        got = f.read()
    with open(dump, "rb") as f:
        want = f.read()
    with open(dump + ".mask", "rb") as f:
        mask = f.read()
    if len(got) < len(want):
        print("soak verify: image is %d bytes, expected %d"
              % (len(got), len(want)), file=sys.stderr)
        return 1
    got = got[:len(want)]
    step = 1 << 20
    for s in range(0, len(want), step):
        if not masked_equal(got[s:s + step], want[s:s + step],
                            mask[s:s + step]):
            d = s + first_diff(got[s:s + step], want[s:s + step],
                               mask[s:s + step])
            print("soak verify: byte at %d is %#04x, expected %#04x"
                  % (d, got[d], want[d]), file=sys.stderr)
            return 1
    print("soak verify ok: %d bytes, %d unknown (trimmed)"
          % (len(want), mask.count(0)))
    return 0


def main(argv):
    if len(argv) == 4 and argv[1] == "verify":
        return verify(argv[2], argv[3])
    args = argv[1:]
    opts = {"--clients": 64, "--loaders": 4, "--dump": None}
    pos = []
    while args:
        a = args.pop(0)
        if a in opts:
            opts[a] = args.pop(0)
        else:
            pos.append(a)
    if len(pos) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    path, size, seconds, seed = pos[0], int(pos[1]), float(pos[2]), \
        int(pos[3])
    s = Soak(path, size, seconds, seed, int(opts["--clients"]),
             int(opts["--loaders"]))
    took = s.run()
    if s.error:
        print("soak FAILED (seed %d): %s" % (seed, s.error), file=sys.stderr)
        return 1
    if opts["--dump"]:
        with open(opts["--dump"], "wb") as f:
            f.write(s.shadow)
        with open(opts["--dump"] + ".mask", "wb") as f:
            f.write(s.known)
    total = sum(s.counts.values())
    print("soak ok: seed %d, %d clients + %d loaders, %.1f s, %d requests "
          "(%s)" % (seed, s.nclients, s.nloaders, took, total,
                    ", ".join("%s %d" % kv for kv in sorted(s.counts.items()))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
