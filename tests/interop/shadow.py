#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Shadow model of a disk for the interop tests.

Reads operation files (tests/interop/workload.bash format) in order, one
or more paths on the command line, and prints the expected content as
maximal runs "PAT OFF LEN" (PAT in 0x.. hex), one a line, for every byte
whose content is known.  Later operations overwrite earlier ones.

  w PAT OFF LEN   data write of byte PAT           -> PAT
  z OFF LEN       zero write                       -> 0
  d OFF LEN       discard                          -> unknown (not printed)
  bg PAT OFF LEN  known content without an I/O      -> PAT
  --              batch separator (ignored here)
"""
import sys

UNKNOWN = -1


def parse(paths):
    ops = []
    for p in paths:
        with open(p) as f:
            for line in f:
                t = line.split()
                if not t or t[0] == "--" or t[0].startswith("#"):
                    continue
                if t[0] in ("w", "bg"):
                    ops.append((int(t[1], 0), int(t[2], 0), int(t[3], 0)))
                elif t[0] == "z":
                    ops.append((0, int(t[1], 0), int(t[2], 0)))
                elif t[0] == "d":
                    ops.append((UNKNOWN, int(t[1], 0), int(t[2], 0)))
                else:
                    raise SystemExit("shadow.py: bad op: " + line)
    return ops


def main():
    ops = parse(sys.argv[1:])
    pts = sorted({o for _, o, _ in ops} | {o + n for _, o, n in ops})
    runs = []  # [pat, off, len]
    for a, b in zip(pts, pts[1:]):
        val = None
        for pat, o, n in ops:
            if o <= a and b <= o + n:
                val = pat
        if val is None or val == UNKNOWN:
            continue
        if runs and runs[-1][0] == val and runs[-1][1] + runs[-1][2] == a:
            runs[-1][2] += b - a
        else:
            runs.append([val, a, b - a])
    for pat, o, n in runs:
        print("0x%02x %d %d" % (pat, o, n))


if __name__ == "__main__":
    main()
