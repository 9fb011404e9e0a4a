#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Damage good qcow2 images for tests/interop/check.bats and
tests/cli/check-*.bats.

Usage:
  mkdamage.py CASE GOOD OUT   copy the qemu-made qcow2 image GOOD to OUT
                              and damage it as CASE says (see CASES)
  mkdamage.py all GOOD DIR    make DIR/CASE.qcow2 for every CASE that
                              applies to GOOD (one process: fast)
  mkdamage.py list            print the CASE names

GOOD is any qcow2 v2/v3 image (any cluster size, refcount width, extended
L2 or not) in which guest cluster 0 is allocated, and, for the cases that
need them, guest cluster 1 too.  The script parses the header, the L1/L2
tables and the refcount structure and patches bytes in place: it never
needs qemu.  Each case damages exactly one thing, so that vimg check and
qemu-img check can be compared finding by finding.
"""
import os
import shutil
import struct
import sys

OFFSET_MASK = 0x00FFFFFFFFFFFE00
COPIED = 1 << 63
COMPRESSED = 1 << 62


class Image:
    def __init__(self, f):
        self.f = f
        self.version = self.rd(4, ">I")
        self.cluster_bits = self.rd(20, ">I")
        self.cs = 1 << self.cluster_bits
        self.l1_size = self.rd(36, ">I")
        self.l1_off = self.rd(40, ">Q")
        self.rt_off = self.rd(48, ">Q")
        self.rt_clusters = self.rd(56, ">I")
        if self.version >= 3:
            self.incompat = self.rd(72, ">Q")
            self.refcount_bits = 1 << self.rd(96, ">I")
        else:
            self.incompat = 0
            self.refcount_bits = 16
        self.extl2 = bool(self.incompat & (1 << 4))
        self.l2e_size = 16 if self.extl2 else 8
        self.l2_entries = self.cs // self.l2e_size
        self.rb_entries = self.cs * 8 // self.refcount_bits

    def rd(self, off, fmt):
        self.f.seek(off)
        return struct.unpack(fmt, self.f.read(struct.calcsize(fmt)))[0]

    def wr(self, off, fmt, val):
        self.f.seek(off)
        self.f.write(struct.pack(fmt, val))

    def size(self):
        self.f.seek(0, 2)
        return self.f.tell()

    # --- mapping ---
    def l1e_addr(self, i):
        return self.l1_off + 8 * i

    def l2_table(self, guest_cluster):
        l1e = self.rd(self.l1e_addr(guest_cluster // self.l2_entries), ">Q")
        l2 = l1e & OFFSET_MASK
        assert l2, "guest cluster %d has no L2 table" % guest_cluster
        return l2

    def l2e_addr(self, guest_cluster):
        return (self.l2_table(guest_cluster) +
                (guest_cluster % self.l2_entries) * self.l2e_size)

    def l2e(self, guest_cluster):
        return self.rd(self.l2e_addr(guest_cluster), ">Q")

    def data_cluster(self, guest_cluster):
        e = self.l2e(guest_cluster)
        assert not e & COMPRESSED, "guest cluster is compressed"
        off = e & OFFSET_MASK
        assert off, "guest cluster %d is not allocated" % guest_cluster
        return off // self.cs

    def compressed_cluster(self, guest_cluster):
        e = self.l2e(guest_cluster)
        assert e & COMPRESSED, "guest cluster is not compressed"
        x = 62 - (self.cluster_bits - 8)
        return (e & ((1 << x) - 1)) // self.cs

    # --- refcounts (any width; sub-byte widths LSB first) ---
    def _rc_pos(self, cluster):
        i = cluster // self.rb_entries
        assert i < self.rt_clusters * self.cs // 8, "cluster past reftable"
        rb = self.rd(self.rt_off + 8 * i, ">Q") & ~0x1FF
        assert rb, "cluster %d has no refcount block" % cluster
        return rb, cluster % self.rb_entries

    def get_rc(self, cluster):
        rb, idx = self._rc_pos(cluster)
        w = self.refcount_bits
        if w >= 8:
            fmt = {8: ">B", 16: ">H", 32: ">I", 64: ">Q"}[w]
            return self.rd(rb + idx * w // 8, fmt)
        byte = self.rd(rb + idx * w // 8, ">B")
        return (byte >> (idx * w % 8)) & ((1 << w) - 1)

    def set_rc(self, cluster, val):
        rb, idx = self._rc_pos(cluster)
        w = self.refcount_bits
        assert val < (1 << w), "refcount %d does not fit %d bits" % (val, w)
        if w >= 8:
            fmt = {8: ">B", 16: ">H", 32: ">I", 64: ">Q"}[w]
            self.wr(rb + idx * w // 8, fmt, val)
            return
        pos = rb + idx * w // 8
        shift = idx * w % 8
        mask = ((1 << w) - 1) << shift
        byte = self.rd(pos, ">B")
        self.wr(pos, ">B", (byte & ~mask) | ((val << shift) & mask))


def leak(img):
    # Three clusters appended to the file with refcount 1 and no user:
    # 3 leaked clusters.
    end = (img.size() + img.cs - 1) // img.cs
    img.f.truncate((end + 3) * img.cs)
    for c in range(end, end + 3):
        img.set_rc(c, 1)


def leak_bump(img):
    # Raise the refcount of data cluster (guest 0) by one: a leak, and an
    # OFLAG_COPIED error because the entry still claims refcount 1.
    c = img.data_cluster(0)
    img.set_rc(c, img.get_rc(c) + 1)


def refcount_zero(img):
    # A referenced data cluster with refcount 0.
    img.set_rc(img.data_cluster(0), 0)


def refcount_zero_l2(img):
    # The L2 table of guest cluster 0 with refcount 0.
    img.set_rc(img.l2_table(0) // img.cs, 0)


def l2_into_l1(img):
    # Guest cluster 1 now maps to the cluster holding the L1 table.
    off = img.l1_off & ~(img.cs - 1)
    e = COPIED | off
    img.wr(img.l2e_addr(1), ">Q", e)
    if img.extl2:
        img.wr(img.l2e_addr(1) + 8, ">Q", 0xFFFFFFFF)


def l2_past_eof(img):
    # Guest cluster 1 maps to a cluster far past the end of the file.
    off = ((img.size() // img.cs) + 64) * img.cs
    img.wr(img.l2e_addr(1), ">Q", COPIED | off)
    if img.extl2:
        img.wr(img.l2e_addr(1) + 8, ">Q", 0xFFFFFFFF)


def copied_clear(img):
    # COPIED flag cleared on an L2 entry whose cluster has refcount 1.
    a = img.l2e_addr(0)
    img.wr(a, ">Q", img.rd(a, ">Q") & ~COPIED)


def copied_clear_l1(img):
    # COPIED flag cleared on L1[0].
    a = img.l1e_addr(0)
    img.wr(a, ">Q", img.rd(a, ">Q") & ~COPIED)


def copied_set_shared(img):
    # COPIED set again on an entry whose cluster a snapshot shares.
    a = img.l2e_addr(0)
    img.wr(a, ">Q", img.rd(a, ">Q") | COPIED)


def compressed_leak(img):
    # Raise the refcount of the cluster holding compressed guest cluster 0.
    c = img.compressed_cluster(0)
    img.set_rc(c, img.get_rc(c) + 1)


def compressed_zero(img):
    img.set_rc(img.compressed_cluster(0), 0)


def reftable_unaligned(img):
    # Refcount table entry 0 has reserved bits set.
    img.wr(img.rt_off, ">Q", img.rd(img.rt_off, ">Q") | 0x100)


def l2_reserved(img):
    # Reserved bits in a standard L2 descriptor.
    a = img.l2e_addr(0)
    img.wr(a, ">Q", img.rd(a, ">Q") | 0x2)


def dirty(img):
    # Set the dirty bit (no other damage).
    img.wr(72, ">Q", img.rd(72, ">Q") | 1)


def corrupt(img):
    # Set the corrupt bit (no other damage).
    img.wr(72, ">Q", img.rd(72, ">Q") | 2)


def leak_corrupt(img):
    # Both a leak and a refcount-0 data cluster.
    leak(img)
    refcount_zero(img)


CASES = {
    "leak": leak,
    "leak-bump": leak_bump,
    "refcount-zero": refcount_zero,
    "refcount-zero-l2": refcount_zero_l2,
    "l2-into-l1": l2_into_l1,
    "l2-past-eof": l2_past_eof,
    "copied-clear": copied_clear,
    "copied-clear-l1": copied_clear_l1,
    "copied-set-shared": copied_set_shared,
    "compressed-leak": compressed_leak,
    "compressed-zero": compressed_zero,
    "reftable-reserved": reftable_unaligned,
    "l2-reserved": l2_reserved,
    "dirty": dirty,
    "corrupt": corrupt,
    "leak-corrupt": leak_corrupt,
}


def main(argv):
    if len(argv) == 2 and argv[1] == "list":
        print("\n".join(CASES))
        return 0
    if len(argv) == 4 and argv[1] == "all":
        for name, fn in CASES.items():
            out = os.path.join(argv[3], name + ".qcow2")
            shutil.copyfile(argv[2], out)
            try:
                with open(out, "r+b") as f:
                    fn(Image(f))
            except AssertionError:
                os.unlink(out)
        return 0
    if len(argv) != 4 or argv[1] not in CASES:
        sys.stderr.write(__doc__)
        return 2
    shutil.copyfile(argv[2], argv[3])
    with open(argv[3], "r+b") as f:
        CASES[argv[1]](Image(f))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
