#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Regenerate the seed corpora under tests/fuzz/corpus/ (qcow2 images
need qemu-img and qemu-io).  Run from anywhere: python3 mkcorpus.py"""
import os
import shutil
import struct
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# --- qcow2 -------------------------------------------------------------
def qcow2_seeds():
    if not shutil.which("qemu-img"):
        print("mkcorpus: no qemu-img, qcow2 seeds skipped")
        return
    images = {
        "v3-4k": ["-o", "cluster_size=4k", "1M"],
        "v2-4k": ["-o", "compat=0.10,cluster_size=4k", "1M"],
        "v3-512": ["-o", "cluster_size=512", "256k"],
        "v3-64k-empty": ["64M"],
        "v3-extl2": ["-o", "cluster_size=16k,extended_l2=on", "1M"],
        "v3-lazy": ["-o", "cluster_size=4k,lazy_refcounts=on", "1M"],
        "v3-refbits1": ["-o", "cluster_size=4k,refcount_bits=1", "1M"],
        "v3-refbits64": ["-o", "cluster_size=4k,refcount_bits=64", "1M"],
        "v3-backing": ["-o", "cluster_size=4k,backing_file=base.img,"
                       "backing_fmt=raw", "-u", "1M"],
        "v3-datafile": ["-o", "cluster_size=4k,data_file=data.img", "1M"],
    }
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "base.img"), "wb") as f:
            f.truncate(1 << 20)
        for name, args in images.items():
            p = os.path.join(d, name + ".qcow2")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2"] +
                           args[:-1] + [p, args[-1]], check=True, cwd=d)
            if "empty" not in name and "datafile" not in name:
                subprocess.run(["qemu-io", "-f", "qcow2",
                                "-c", "write -P 0xaa 0 8k",
                                "-c", "write -z 64k 4k",
                                "-c", "write -P 0x55 200k 1k", p],
                               check=True, stdout=subprocess.DEVNULL, cwd=d)
            if name == "v3-4k":
                subprocess.run(["qemu-img", "snapshot", "-c", "s1", p],
                               check=True)
                subprocess.run(["qemu-img", "bitmap", "--add", p, "b0"],
                               check=True)
                c = os.path.join(d, "compressed.qcow2")
                subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2",
                                "-o", "cluster_size=4k", p, c], check=True)
                with open(c, "rb") as f:
                    put("qcow2", "v3-4k-compressed", f.read())
                c = os.path.join(d, "zstd.qcow2")
                subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2",
                                "-o", "cluster_size=4k,"
                                "compression_type=zstd", p, c], check=True)
                with open(c, "rb") as f:
                    put("qcow2", "v3-4k-zstd", f.read())
            with open(p, "rb") as f:
                put("qcow2", name, f.read())


# --- NBD client streams ------------------------------------------------
IHAVEOPT = 0x49484156454F5054
REQ_MAGIC = 0x25609513
EXT_REQ_MAGIC = 0x21e41c71


def opt(o, payload=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(payload)) + payload


def go(name=b"", infos=()):
    return opt(7, struct.pack(">I", len(name)) + name +
               struct.pack(">H", len(infos)) +
               b"".join(struct.pack(">H", i) for i in infos))


def meta(o, name, ctxs):
    p = struct.pack(">I", len(name)) + name + struct.pack(">I", len(ctxs))
    for c in ctxs:
        p += struct.pack(">I", len(c)) + c
    return opt(o, p)


def req(typ, off, length, flags=0, cookie=1, payload=b""):
    return struct.pack(">IHHQQI", REQ_MAGIC, flags, typ, cookie, off,
                       length) + payload


def ext_req(typ, off, length, flags=0, cookie=1, payload=b""):
    return struct.pack(">IHHQQQ", EXT_REQ_MAGIC, flags, typ, cookie, off,
                       length) + payload


CFLAGS = struct.pack(">I", 3)  # FIXED_NEWSTYLE | NO_ZEROES
DISC = req(2, 0, 0)
IO = (req(0, 0, 4096) + req(1, 4096, 512, payload=b"\xab" * 512) +
      req(1, 8192, 512, flags=1, payload=b"\xcd" * 512) +
      req(3, 0, 0) + req(4, 65536, 4096) + req(6, 131072, 8192, flags=2) +
      req(6, 0, 4096, flags=0x10) + req(5, 0, 65536) + req(0, 4096, 512))


def nbd_seeds():
    put("nbd", "list", CFLAGS + opt(3) + opt(2))
    put("nbd", "exportname", CFLAGS[:3] + b"\x01" + opt(1) + IO + DISC)
    put("nbd", "go-simple", CFLAGS + go(infos=(0, 1, 2, 3)) + IO + DISC)
    put("nbd", "info-q", CFLAGS + opt(6, struct.pack(">I", 1) + b"q" +
                                      b"\x00\x01\x00\x03") + opt(2))
    put("nbd", "go-structured",
        CFLAGS + opt(8) +
        meta(10, b"", [b"base:allocation", b"qemu:allocation-depth"]) +
        go() + IO + req(7, 0, 1 << 20) + req(7, 0, 1 << 20, flags=8) +
        req(0, 0, 8192, flags=4) + DISC)
    put("nbd", "go-bitmap-q",
        CFLAGS + opt(8) + meta(9, b"q", [b"qemu:"]) +
        meta(10, b"q", [b"base:allocation", b"qemu:dirty-bitmap:b0"]) +
        go(b"q") + IO + req(7, 0, 1 << 20) + DISC)
    put("nbd", "go-extended",
        CFLAGS + opt(11) + meta(10, b"q", [b"base:allocation"]) +
        go(b"q") + ext_req(0, 0, 4096) +
        ext_req(1, 0, 512, flags=0x20, payload=b"\x11" * 512) +
        ext_req(7, 0, 1 << 20) + ext_req(2, 0, 0))
    put("nbd", "starttls", CFLAGS + opt(5) + opt(2))
    put("nbd", "bad-option", CFLAGS + opt(99, b"xyz") + opt(2))


# --- QMP ---------------------------------------------------------------
CAP = '{"execute": "qmp_capabilities"}\n'


def qmp_seeds():
    msgs = {
        "caps": CAP + '{"execute": "query-version", "id": 1}\n',
        "commands": CAP + '{"execute": "query-commands"}\n',
        "nodes": CAP + '{"execute": "query-named-block-nodes"}\n',
        "no-caps": '{"execute": "query-version"}\n',
        "bad-json": '{"execute": \n{"execute": "qmp_capabilities"}\n',
        "bitmaps": CAP +
        '{"execute": "block-dirty-bitmap-add", "arguments": {"node": '
        '"disk0", "name": "b1", "persistent": true, "granularity": 65536}}\n'
        '{"execute": "block-dirty-bitmap-disable", "arguments": {"node": '
        '"disk0", "name": "b1"}}\n'
        '{"execute": "block-dirty-bitmap-add", "arguments": {"node": '
        '"disk0", "name": "b2"}}\n'
        '{"execute": "block-dirty-bitmap-merge", "arguments": {"node": '
        '"disk0", "target": "b2", "bitmaps": ["b1"]}}\n'
        '{"execute": "block-dirty-bitmap-clear", "arguments": {"node": '
        '"disk0", "name": "b2"}}\n'
        '{"execute": "block-dirty-bitmap-remove", "arguments": {"node": '
        '"disk0", "name": "b1"}}\n',
        "export": CAP +
        '{"execute": "block-export-add", "arguments": {"type": "nbd", '
        '"id": "e0", "node-name": "disk0", "writable": true, "name": "x"}}\n'
        '{"execute": "query-block-exports"}\n'
        '{"execute": "nbd-server-add", "arguments": {"device": "disk0", '
        '"name": "y"}}\n'
        '{"execute": "nbd-server-remove", "arguments": {"name": "y"}}\n'
        '{"execute": "block-export-del", "arguments": {"id": "e0"}}\n'
        '{"execute": "nbd-server-stop"}\n',
        "blockdev": CAP +
        '{"execute": "blockdev-add", "arguments": {"driver": "raw", '
        '"node-name": "r0", "file": "disk0"}}\n'
        '{"execute": "blockdev-del", "arguments": {"node-name": "r0"}}\n',
        "snapshot": CAP +
        '{"execute": "blockdev-snapshot-sync", "arguments": {"node-name": '
        '"disk0", "snapshot-file": "top.qcow2", "snapshot-node-name": '
        '"top", "format": "qcow2"}}\n'
        '{"execute": "block-commit", "arguments": {"device": "top", '
        '"job-id": "j0"}}\n'
        '{"execute": "query-block-jobs"}\n'
        '{"execute": "query-jobs"}\n'
        '{"execute": "job-cancel", "arguments": {"id": "j0"}}\n',
        "backup": CAP +
        '{"execute": "drive-backup", "arguments": {"device": "disk0", '
        '"job-id": "b", "target": "copy.qcow2", "format": "qcow2", '
        '"sync": "full"}}\n'
        '{"execute": "block-job-set-speed", "arguments": {"device": "b", '
        '"speed": 1000}}\n'
        '{"execute": "block-job-cancel", "arguments": {"device": "b"}}\n',
        "transaction": CAP +
        '{"execute": "transaction", "arguments": {"actions": [{"type": '
        '"block-dirty-bitmap-add", "data": {"node": "disk0", "name": '
        '"t"}}, {"type": "block-dirty-bitmap-clear", "data": {"node": '
        '"disk0", "name": "t"}}]}}\n',
        "quit": CAP + '{"execute": "quit"}\n',
        "oob": '{"exec-oob": "qmp_capabilities", "id": [1, {"a": null}]}\n',
    }
    for k, v in msgs.items():
        put("qmp", k, v)


# --- option strings ----------------------------------------------------
def opts_seeds():
    seeds = {
        "dotted": "driver=qcow2,file.driver=file,file.filename=a.qcow2",
        "implied": "disk.img,format=raw,read-only=on",
        "commas": "file.filename=a,,b.img,size=1G",
        "json": 'json:{"driver": "qcow2", "file": {"driver": "file", '
                '"filename": "x"}}',
        "json-plain": '{"driver": "raw", "size": 1048576, "read-only": true,'
                      ' "file": {"driver": "nbd", "server": {"type": "inet",'
                      ' "host": "h", "port": "10809"}}}',
        "nbd-uri": "nbd+unix:///exp?socket=/tmp/s",
        "deep": "a.b.c.d.e=1,a.b.c.f=2,a.x=off",
    }
    for k, v in seeds.items():
        put("opts", k, v)


if __name__ == "__main__":
    qcow2_seeds()
    nbd_seeds()
    qmp_seeds()
    opts_seeds()
