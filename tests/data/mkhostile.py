#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Make hostile qcow2 images for tests/interop/hostile-images.bats.

Usage:
  mkhostile.py CASE GOOD OUT   copy the qcow2 v3 image GOOD to OUT and
                               damage it as CASE says; CASE is one of
                               ours (see CASES) or one of mkbad.py's
  mkhostile.py list            print our CASE names

Parametrised cases (the rest of the name is the argument):
  backing:NAME            set the backing file name to NAME (no format)
  backing-raw:NAME        the same, recording format "raw"
  backing-self            the backing file name is OUT's own name
  data-file:NAME          make the image use the external data file NAME
                          (sets the incompatible data-file bit)

This extends tests/data/mkbad.py (same GOOD image: `qemu-img create`,
guest cluster 0 allocated) with the cases of the hostile-image list in
the reliability reference that mkbad.py does not cover: more header
fields, header extensions (rewritten as a whole list), the bitmap
directory (GOOD must then hold a persistent bitmap), the snapshot table
(GOOD must then hold an internal snapshot) and names of other host files.
"""
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mkbad  # noqa: E402
from mkbad import rd, wr  # noqa: E402

VERSION, BACKING_OFF, BACKING_SIZE, CLUSTER_BITS = 4, 8, 16, 20
SIZE, L1_SIZE, L1_OFF, RT_OFF, RT_CLUSTERS = 24, 36, 40, 48, 56
NB_SNAPS, SNAPS_OFF, INCOMPAT = 60, 64, 72
HEADER_LENGTH = 100

EXT_BACKING_FMT = 0xE2792ACA
EXT_FEATURES = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_DATA_FILE = 0x44415441
EXT_UNKNOWN = 0x12345678


# --- header extensions -------------------------------------------------
def read_exts(f):
    """[(type, bytes)] from header_length up to the end marker."""
    cs = 1 << rd(f, CLUSTER_BITS, ">I")
    pos, exts = rd(f, HEADER_LENGTH, ">I"), []
    while pos + 8 <= cs:
        t, n = rd(f, pos, ">I"), rd(f, pos + 4, ">I")
        if t == 0:
            break
        f.seek(pos + 8)
        exts.append((t, f.read(n)))
        pos += 8 + ((n + 7) & ~7)
    return exts


def write_exts(f, exts, raw_len=None):
    """Write EXTS back (raw_len: (index, length) to lie about one)."""
    pos = rd(f, HEADER_LENGTH, ">I")
    f.seek(pos)
    for i, (t, data) in enumerate(exts):
        n = len(data)
        if raw_len and raw_len[0] == i:
            n = raw_len[1]
        pad = (-len(data)) % 8
        f.write(struct.pack(">II", t, n) + data + b"\0" * pad)
    f.write(b"\0" * 8)
    end = rd(f, BACKING_OFF, ">Q") or 4096
    assert f.tell() <= end, "extensions overrun the backing name"


def ext_edit(fn):
    def case(f):
        write_exts(f, fn(read_exts(f)))
    return case


def ext_find(exts, t):
    for i, (et, _) in enumerate(exts):
        if et == t:
            return i
    raise AssertionError("GOOD has no extension 0x%08x" % t)


def dup_ext(t):
    def fn(exts):
        i = ext_find(exts, t)
        return exts[:i + 1] + [exts[i]] + exts[i + 1:]
    return ext_edit(fn)


def unterminated_feature_name(exts):
    i = ext_find(exts, EXT_FEATURES)
    data = bytearray(exts[i][1])
    for off in range(0, len(data), 48):
        data[off + 2:off + 48] = b"x" * 46
    exts[i] = (EXT_FEATURES, bytes(data))
    return exts


def bitmaps_field(off, fmt, val):
    """Patch one field of the bitmaps extension (GOOD has a bitmap)."""
    def fn(exts):
        i = ext_find(exts, EXT_BITMAPS)
        data = bytearray(exts[i][1])
        v = val(struct.unpack_from(fmt, data, off)[0]) if callable(val) \
            else val
        struct.pack_into(fmt, data, off, v)
        exts[i] = (EXT_BITMAPS, bytes(data))
        return exts
    return ext_edit(fn)


def bitmaps_ext_short(exts):
    i = ext_find(exts, EXT_BITMAPS)
    exts[i] = (EXT_BITMAPS, exts[i][1][:16])
    return exts


def ext_len_lie(t, n):
    def case(f):
        exts = read_exts(f)
        write_exts(f, exts, (ext_find(exts, t), n))
    return case


# --- names of other host files ----------------------------------------
NAME_OFF = 4096 - 1024  # inside cluster 0, after the extensions


def set_backing(name, fmt):
    def case(f):
        b = name.encode()
        exts = [e for e in read_exts(f) if e[0] != EXT_BACKING_FMT]
        if fmt:
            exts.insert(0, (EXT_BACKING_FMT, fmt.encode()))
        wr(f, BACKING_OFF, ">Q", NAME_OFF)
        wr(f, BACKING_SIZE, ">I", len(b))
        write_exts(f, exts)
        f.seek(NAME_OFF)
        f.write(b)
    return case


def set_data_file(name):
    def case(f):
        exts = [e for e in read_exts(f) if e[0] != EXT_DATA_FILE]
        exts.insert(0, (EXT_DATA_FILE, name.encode()))
        write_exts(f, exts)
        wr(f, INCOMPAT, ">Q", rd(f, INCOMPAT, ">Q") | (1 << 2))
    return case


# --- snapshot table (GOOD has one snapshot) ----------------------------
def snap_field(off, fmt, val):
    def case(f):
        sn = rd(f, SNAPS_OFF, ">Q")
        assert rd(f, NB_SNAPS, ">I") >= 1, "GOOD has no snapshot"
        wr(f, sn + off, fmt, val)
    return case


def l1_overlaps_header(f):
    wr(f, L1_OFF, ">Q", 0)


def rt_overlaps_l1(f):
    wr(f, RT_OFF, ">Q", rd(f, L1_OFF, ">Q"))


def both(a, b):
    def case(f):
        a(f)
        b(f)
    return case


S = mkbad.case_set
CASES = {
    "none": lambda f: None,  # control: GOOD unchanged
    # header matrix
    "version-2-long-header": S(VERSION, ">I", 2),
    "header-length-72": S(HEADER_LENGTH, ">I", 72),
    "header-length-odd": S(HEADER_LENGTH, ">I", 105),
    "header-length-cluster": S(HEADER_LENGTH, ">I", 65536),
    "cluster-bits-0": S(CLUSTER_BITS, ">I", 0),
    "size-2p63": S(SIZE, ">Q", (1 << 63) - 512),
    "size-1pb": S(SIZE, ">Q", 1 << 50),
    "size-unaligned": S(SIZE, ">Q", 64 * 1024 * 1024 - 1),
    "l1-overlaps-header": l1_overlaps_header,
    "l1-size-32m": S(L1_SIZE, ">I", 32 * 1024 * 1024 // 8),
    "l1-size-32m-plus": S(L1_SIZE, ">I", 32 * 1024 * 1024 // 8 + 1),
    "l1-size-0": S(L1_SIZE, ">I", 0),
    "rt-offset-0": S(RT_OFF, ">Q", 0),
    "rt-overlaps-l1": rt_overlaps_l1,
    "rt-clusters-0": S(RT_CLUSTERS, ">I", 0),
    "rt-clusters-9m": S(RT_CLUSTERS, ">I", (9 << 20) // 65536),
    "refcount-order-63": S(96, ">I", 63),
    "corrupt-bit": mkbad.case_incompat_or(1),
    "dirty-bit": mkbad.case_incompat_or(0),
    "compat-unknown-bit": S(80, ">Q", 1 << 40),
    "autoclear-unknown-bit": S(88, ">Q", 1 << 40),
    # header extensions
    "ext-dup-backing-fmt": both(set_backing("base.qcow2", "qcow2"),
                                dup_ext(EXT_BACKING_FMT)),
    "ext-dup-features": dup_ext(EXT_FEATURES),
    "ext-feature-name-unterminated": ext_edit(unterminated_feature_name),
    "ext-features-len-odd": ext_len_lie(EXT_FEATURES, 47),
    "ext-unknown": ext_edit(lambda e: [(EXT_UNKNOWN, b"\0" * 16)] + e),
    "ext-unknown-len-past": ext_len_lie(EXT_FEATURES, 0xFF00),
    # bitmap directory (GOOD: with a persistent bitmap)
    "bm-nb-0": bitmaps_field(0, ">I", 0),
    "bm-nb-65536": bitmaps_field(0, ">I", 65536),
    "bm-reserved": bitmaps_field(4, ">I", 1),
    "bm-dir-size-huge": bitmaps_field(8, ">Q", 1 << 40),
    "bm-dir-size-0": bitmaps_field(8, ">Q", 0),
    "bm-dir-offset-0": bitmaps_field(16, ">Q", 0),
    "bm-dir-offset-unaligned": bitmaps_field(16, ">Q", lambda v: v + 8),
    "bm-dir-offset-past-eof": bitmaps_field(16, ">Q", 1 << 40),
    "bm-dir-offset-huge": bitmaps_field(16, ">Q", 0xFFFFFFFFFFFF0000),
    "bm-ext-short": ext_edit(bitmaps_ext_short),
    # snapshot table (GOOD: with an internal snapshot)
    "snap-nb-huge": S(NB_SNAPS, ">I", 0xFFFFFFFF),
    "snap-nb-65537": S(NB_SNAPS, ">I", 65537),
    "snap-nb-2": S(NB_SNAPS, ">I", 2),
    "snap-offset-past-eof": S(SNAPS_OFF, ">Q", 1 << 40),
    "snap-offset-unaligned": mkbad.case_add(SNAPS_OFF, ">Q", 8),
    "snap-offset-0": S(SNAPS_OFF, ">Q", 0),
    "snap-l1-offset-past-eof": snap_field(0, ">Q", 1 << 40),
    "snap-l1-offset-unaligned": snap_field(0, ">Q", 65536 + 8),
    "snap-l1-size-huge": snap_field(8, ">I", 0xFFFFFFFF),
    "snap-id-len-huge": snap_field(12, ">H", 0xFFFF),
    "snap-extra-huge": snap_field(36, ">I", 0xFFFFFFF0),
}


def parametrised(case, out):
    kind, _, arg = case.partition(":")
    if kind == "backing":
        return set_backing(arg, None)
    if kind == "backing-raw":
        return set_backing(arg, "raw")
    if kind == "data-file":
        return set_data_file(arg)
    if case == "backing-self":
        return set_backing(os.path.basename(out), "qcow2")
    return None


def main(argv):
    if len(argv) == 2 and argv[1] == "list":
        print("\n".join(CASES))
        return 0
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    case, good, out = argv[1:]
    fn = CASES.get(case) or mkbad.CASES.get(case) or \
        parametrised(case, out)
    if not fn:
        sys.stderr.write("mkhostile.py: unknown case %s\n" % case)
        return 2
    shutil.copyfile(good, out)
    with open(out, "r+b") as f:
        fn(f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
