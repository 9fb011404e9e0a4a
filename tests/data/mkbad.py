#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Make hostile qcow2 images for tests/cli/bad-input.bats.

Usage:
  mkbad.py CASE GOOD OUT      copy the good qcow2 v3 image GOOD to OUT and
                              damage it as CASE says (see CASES below)
  mkbad.py chain N DIR        make DIR/c0000.qcow2 -> c0001.qcow2 -> ...
                              -> c{N-1}.qcow2 (a qcow2 base with no backing);
                              every link records format qcow2
  mkbad.py list               print the CASE names

GOOD must be a qcow2 v3 image made by `qemu-img create` with the default
header layout and with guest cluster 0 allocated (so L1[0] and the first
L2 entry are set).  Everything is patched in place with big-endian
fields; offsets are those of docs/interop/qcow2.rst.
"""
import os
import shutil
import struct
import subprocess
import sys

# Header field offsets (qcow2 v3).
MAGIC, VERSION, BACKING_OFF, BACKING_SIZE, CLUSTER_BITS = 0, 4, 8, 16, 20
SIZE, L1_SIZE, L1_OFF, RT_OFF, RT_CLUSTERS = 24, 36, 40, 48, 56
INCOMPAT, REFCOUNT_ORDER, HEADER_LENGTH = 72, 96, 100


def rd(f, off, fmt):
    f.seek(off)
    n = struct.calcsize(fmt)
    return struct.unpack(fmt, f.read(n))[0]


def wr(f, off, fmt, val):
    f.seek(off)
    f.write(struct.pack(fmt, val))


def cluster_size(f):
    return 1 << rd(f, CLUSTER_BITS, ">I")


def l1_entry0(f):
    return rd(f, rd(f, L1_OFF, ">Q"), ">Q")


def case_truncate(n):
    def fn(f):
        f.truncate(n)
    return fn


def case_set(off, fmt, val):
    def fn(f):
        wr(f, off, fmt, val)
    return fn


def case_add(off, fmt, delta):
    def fn(f):
        wr(f, off, fmt, rd(f, off, fmt) + delta)
    return fn


def case_incompat_or(bit):
    def fn(f):
        wr(f, INCOMPAT, ">Q", rd(f, INCOMPAT, ">Q") | (1 << bit))
    return fn


def ext_too_long(length):
    # The first header extension starts at header_length; give it a length
    # that runs past the end of cluster 0.
    def fn(f):
        hl = rd(f, HEADER_LENGTH, ">I")
        assert rd(f, hl, ">I") != 0, "GOOD has no header extension"
        wr(f, hl + 4, ">I", length)
    return fn


def backing_name_long(f):
    # A 1100-byte backing file name inside cluster 0 (limit is 1023).
    off = 4096
    f.seek(off)
    f.write(b"b" * 1100)
    wr(f, BACKING_OFF, ">Q", off)
    wr(f, BACKING_SIZE, ">I", 1100)


def l1_entry_past_eof(f):
    # L1[0] points at an L2 table 1 TiB into a file of a few hundred KiB.
    wr(f, rd(f, L1_OFF, ">Q"), ">Q", (1 << 63) | (1 << 40))


def l2_entry_into_header(f):
    # L2[0] maps guest cluster 0 to host offset 0x200: inside the header
    # cluster (and not cluster-aligned).
    l2 = l1_entry0(f) & 0x00fffffffffffe00
    assert l2 != 0, "GOOD has no L2 table for guest cluster 0"
    wr(f, l2, ">Q", (1 << 63) | 0x200)


def l2_entry_past_eof(f):
    l2 = l1_entry0(f) & 0x00fffffffffffe00
    assert l2 != 0, "GOOD has no L2 table for guest cluster 0"
    wr(f, l2, ">Q", (1 << 63) | (1 << 40))


CASES = {
    "trunc-0": case_truncate(0),
    "trunc-48": case_truncate(48),
    "trunc-100": case_truncate(100),
    "bad-magic": case_set(MAGIC, ">I", 0x514649FA),
    "version-1": case_set(VERSION, ">I", 1),
    "version-4": case_set(VERSION, ">I", 4),
    "cluster-bits-8": case_set(CLUSTER_BITS, ">I", 8),
    "cluster-bits-22": case_set(CLUSTER_BITS, ">I", 22),
    "cluster-bits-200": case_set(CLUSTER_BITS, ">I", 200),
    "l1-size-huge": case_set(L1_SIZE, ">I", 0xFFFFFFFF),
    "l1-size-2g": case_set(L1_SIZE, ">I", 0x7FFFFFFF),
    "l1-offset-unaligned": case_add(L1_OFF, ">Q", 512),
    "l1-offset-past-eof": case_set(L1_OFF, ">Q", 1 << 40),
    "l1-offset-huge": case_set(L1_OFF, ">Q", 0xFFFFFFFFFFFF0000),
    "rt-offset-unaligned": case_add(RT_OFF, ">Q", 8),
    "rt-offset-past-eof": case_set(RT_OFF, ">Q", 1 << 40),
    "rt-clusters-huge": case_set(RT_CLUSTERS, ">I", 0xFFFFFFFF),
    "refcount-order-7": case_set(REFCOUNT_ORDER, ">I", 7),
    "incompat-bit-5": case_incompat_or(5),
    "incompat-bit-63": case_incompat_or(63),
    "header-length-huge": case_set(HEADER_LENGTH, ">I", 0xFFFFFFF8),
    "ext-len-past-cluster": ext_too_long(0x10000),
    "ext-len-huge": ext_too_long(0xFFFFFFF8),
    "backing-name-1100": backing_name_long,
    "l1-entry-past-eof": l1_entry_past_eof,
    "l2-entry-into-header": l2_entry_into_header,
    "l2-entry-past-eof": l2_entry_past_eof,
}


def make_chain(n, d):
    # All names have the same length, so one template serves every link.
    os.makedirs(d, exist_ok=True)
    name = lambda i: "c%04d.qcow2" % i
    tmpl = os.path.join(d, "tmpl.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u",
                    "-b", name(1), "-F", "qcow2", tmpl, "1M"], check=True)
    with open(tmpl, "rb") as f:
        data = bytearray(f.read())
    boff = struct.unpack_from(">Q", data, BACKING_OFF)[0]
    bsize = struct.unpack_from(">I", data, BACKING_SIZE)[0]
    assert data[boff:boff + bsize] == name(1).encode()
    for i in range(n - 1):
        data[boff:boff + bsize] = name(i + 1).encode()
        with open(os.path.join(d, name(i)), "wb") as f:
            f.write(data)
    os.unlink(tmpl)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                    os.path.join(d, name(n - 1)), "1M"], check=True)


def main(argv):
    if len(argv) == 2 and argv[1] == "list":
        print("\n".join(CASES))
        return 0
    if len(argv) == 4 and argv[1] == "chain":
        make_chain(int(argv[2]), argv[3])
        return 0
    if len(argv) != 4 or argv[1] not in CASES:
        sys.stderr.write(__doc__)
        return 2
    shutil.copyfile(argv[2], argv[3])
    with open(argv[3], "r+b") as f:
        CASES[argv[1]](f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
