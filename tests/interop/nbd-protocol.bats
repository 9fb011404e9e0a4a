#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# NBD protocol conformance of vimg-nbd, driven by the raw-socket client
# tests/interop/nbdraw.py (libnbd 1.14 here has no extended headers).
# Where another server's answer is the reference, qemu-nbd 7.2 serves a
# copy of the same image and the replies are compared byte for byte.
# Every test stops the servers it started (vnbd_stop checks exit 0).

load ../helpers

NBDRAW_DIR=$VIMG_SRC/tests/interop

# py ARGS... <<'EOF': run a Python snippet with nbdraw importable.
py() {
    PYTHONPATH=$NBDRAW_DIR timeout 120 python3 - "$@"
}

# The test image: 64 MiB qcow2 with data, a zero cluster range,
# unallocated ranges and two bitmaps (bm0 sees all but the first write,
# bm1 only the last two).
mkimg() {
    local img=${1:-disk.qcow2}
    qemu-img create -q -f qcow2 "$img" 64M
    qemu-io -f qcow2 -c "write -P 0xa5 0 1M" "$img" >/dev/null
    qemu-img bitmap --add "$img" bm0
    qemu-io -f qcow2 -c "write -P 0x5a 4M 64k" "$img" >/dev/null
    qemu-img bitmap --add "$img" bm1
    qemu-io -f qcow2 -c "write -P 0x11 63M 1M" -c "write -z 2M 1M" \
        "$img" >/dev/null
}

# wait_exit PID: wait up to 20 s for PID to end by itself; require 0.
wait_exit() {
    local pid=$1 i rc=0
    for ((i = 0; i < 400; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "vimg-nbd $pid did not exit" >&2
        return 1
    fi
    wait "$pid" || rc=$?
    [ "$rc" -eq 0 ] || { echo "vimg-nbd exited $rc" >&2; return 1; }
}

# qnbd_stop NAME: stop the qemu-nbd started by qnbd_start NAME, wait for
# it to go, and remove its pid file and socket (so that NAME can be
# started again).
qnbd_stop() {
    local pid i
    pid=$(cat "$T/$1.pid") || return 1
    kill "$pid"
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    rm -f "$T/$1.pid" "$T/$1.sock"
}

# ---------------------------------------------------------------------
# Handshake

@test "nbd-protocol: greeting flags, as qemu-nbd" {
    mkimg && cp disk.qcow2 q.qcow2
    vnbd_start v -t -f qcow2 disk.qcow2
    qnbd_start q -f qcow2 q.qcow2
    py "$T/v.sock" "$T/q.sock" <<'EOF'
import sys
from nbdraw import *
v = NBD(sys.argv[1]).greeting()
q = NBD(sys.argv[2]).greeting()
assert v == q == 3, (v, q)
EOF
    vnbd_stop
    qnbd_stop q
}

@test "nbd-protocol: unknown client flag bits close the connection" {
    mkimg
    vnbd_start v -t -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
for fl in (0x7, 0x80000003):
    c = NBD(sys.argv[1])
    try:
        c.start(fl)
        c.opt(OPT_LIST)
    except Closed:
        continue
    assert c.is_closed(), "client flags %#x accepted" % fl
# the server still serves others
c = NBD(sys.argv[1]); c.start()
assert c.option(OPT_LIST)[-1][0] == REP_ACK
EOF
    vnbd_stop
}

@test "nbd-protocol: OPT_LIST with and without data, as qemu-nbd" {
    mkimg && cp disk.qcow2 q.qcow2
    vnbd_start v -t -x disk -D "test disk" -f qcow2 disk.qcow2
    qnbd_start q -x disk -D "test disk" -f qcow2 q.qcow2
    py "$T/v.sock" "$T/q.sock" <<'EOF'
import sys
from nbdraw import *
def run(path):
    c = NBD(path); c.start()
    plain = c.option(OPT_LIST)
    bad = c.option(OPT_LIST, b"junk")
    assert bad[-1][0] == ERR_INVALID, bad
    again = c.option(OPT_LIST)
    assert again == plain
    info = c.info("disk")
    assert info[-1][0] == REP_ACK
    return plain
v, q = run(sys.argv[1]), run(sys.argv[2])
assert v == q, (v, q)
assert v[0] == (REP_SERVER, b"\0\0\0\4disktest disk"), v
EOF
    vnbd_stop
    qnbd_stop q
}

@test "nbd-protocol: unknown option gets ERR_UNSUP and the next one works" {
    mkimg && cp disk.qcow2 q.qcow2
    vnbd_start v -t -f qcow2 disk.qcow2
    qnbd_start q -f qcow2 q.qcow2
    py "$T/v.sock" "$T/q.sock" <<'EOF'
import sys
from nbdraw import *
for p in sys.argv[1:]:
    c = NBD(p); c.start()
    r = c.option(99, b"some payload")
    assert len(r) == 1 and r[0][0] == ERR_UNSUP, r
    assert c.simple_option(4) == ERR_UNSUP   # withdrawn PEEK_EXPORT
    assert c.structured_reply() == REP_ACK
    c.go()
    assert c.pread(0, 512).data(0, 512) == b"\xa5" * 512
EOF
    vnbd_stop
    qnbd_stop q
}

@test "nbd-protocol: over-long options are refused without desync" {
    mkimg
    vnbd_start v -t -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
# 1 MiB, sent whole: ERR_TOO_BIG (or a close), never garbage.
c = NBD(sys.argv[1]); c.start()
c.opt(OPT_LIST_META_CONTEXT, bytes(1 << 20))
try:
    t = c.opt_replies(OPT_LIST_META_CONTEXT)[-1][0]
except Closed:
    t = None
if t is not None:
    assert t == ERR_TOO_BIG, hex(t)
    assert c.option(OPT_LIST)[-1][0] == REP_ACK
# 4 GiB declared: the server must not wait for it all (and the
# handshake timeout, 10 s by default, must not be what ends it).
c = NBD(sys.argv[1], timeout=4); c.start()
try:
    c.opt(OPT_INFO, bytes(65536), length=0xffffffff)
    t = c.opt_replies(OPT_INFO)[-1][0]
    assert t == ERR_TOO_BIG, hex(t)
except Closed:
    pass
except socket.timeout:
    raise AssertionError("server waits for a 4 GiB option")
c = NBD(sys.argv[1]); c.start()
assert c.option(OPT_LIST)[-1][0] == REP_ACK
EOF
    vnbd_stop
}

@test "nbd-protocol: OPT_ABORT gets ACK, as qemu-nbd" {
    mkimg && cp disk.qcow2 q.qcow2
    vnbd_start v -t -f qcow2 disk.qcow2
    qnbd_start q -f qcow2 q.qcow2
    py "$T/v.sock" "$T/q.sock" <<'EOF'
import sys
from nbdraw import *
for p in sys.argv[1:]:
    c = NBD(p); c.start()
    r = c.option(OPT_ABORT)
    assert r == [(REP_ACK, b"")], r
    assert c.is_closed()
EOF
    vnbd_stop
    qnbd_stop q
}

@test "nbd-protocol: INFO and GO replies identical, as qemu-nbd" {
    mkimg && cp disk.qcow2 q.qcow2
    for ro in "" -r "-e 2" "-r -e 3"; do
        vnbd_start v -t $ro -x disk -D "test disk" -f qcow2 disk.qcow2
        qnbd_start q $ro -x disk -D "test disk" -f qcow2 q.qcow2
        py "$T/v.sock" "$T/q.sock" <<'EOF'
import sys
from nbdraw import *
want = [INFO_BLOCK_SIZE, INFO_NAME, INFO_DESCRIPTION, 77]
def run(path, sr):
    c = NBD(path); c.start()
    if sr:
        assert c.structured_reply() == REP_ACK
    assert c.info("nope")[-1][0] == ERR_UNKNOWN
    assert c.info("nope", opt=OPT_GO)[-1][0] == ERR_UNKNOWN
    i = c.info("disk", want)
    bare = c.info("disk")
    g = c.info("disk", want, opt=OPT_GO)
    assert i == g, (i, g)
    assert [t for t, d in i].count(REP_INFO) == 4, i
    assert any(d[:2] == b"\0\0" for t, d in bare), bare
    c.close()
    return i, bare
for sr in (False, True):
    v, q = run(sys.argv[1], sr), run(sys.argv[2], sr)
    assert v == q, "vimg %r\nqemu %r" % (v, q)
EOF
        vnbd_stop
        qnbd_stop q
    done
}

@test "nbd-protocol: EXPORT_NAME with and without NO_ZEROES, as qemu-nbd" {
    mkimg && cp disk.qcow2 q.qcow2
    vnbd_start v -t -x disk -f qcow2 disk.qcow2
    qnbd_start q -x disk -f qcow2 q.qcow2
    py "$T/v.sock" "$T/q.sock" <<'EOF'
import sys
from nbdraw import *
def run(path, cflags):
    c = NBD(path); c.start(cflags)
    c.opt(OPT_EXPORT_NAME, b"disk")
    n = 10 if cflags & 2 else 134
    raw = c.recv(n)
    assert raw[10:] == bytes(n - 10)
    # nothing else before the first reply
    r = c.pread(0, 4096)
    assert r.error == 0 and r.data(0, 4096) == b"\xa5" * 4096
    c.disc()
    return raw
for fl in (1, 3):
    v, q = run(sys.argv[1], fl), run(sys.argv[2], fl)
    assert v == q, (v.hex(), q.hex())
# unknown export: hard close
c = NBD(sys.argv[1]); c.start()
c.opt(OPT_EXPORT_NAME, b"nope")
assert c.is_closed()
EOF
    vnbd_stop
    qnbd_stop q
}

@test "nbd-protocol: STRUCTURED_REPLY twice gets ERR_INVALID" {
    mkimg
    vnbd_start v -t -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
c = NBD(sys.argv[1]); c.start()
assert c.structured_reply() == REP_ACK
assert c.simple_option(OPT_STRUCTURED_REPLY) == ERR_INVALID
assert c.simple_option(OPT_STRUCTURED_REPLY, b"x") == ERR_INVALID
c.go()
r = c.pread(0, 512)
assert r.magics == {STRUCTURED_MAGIC}
EOF
    vnbd_stop
}

@test "nbd-protocol: SET_META_CONTEXT needs structured replies" {
    mkimg && cp disk.qcow2 q.qcow2
    vnbd_start v -t -f qcow2 disk.qcow2
    qnbd_start q -f qcow2 q.qcow2
    py "$T/v.sock" "$T/q.sock" <<'EOF'
import sys
from nbdraw import *
for p in sys.argv[1:]:
    c = NBD(p); c.start()
    ctx, t = c.set_meta("", ["base:allocation"])
    assert ctx == [] and t == ERR_INVALID, (p, ctx, hex(t))
    # LIST is allowed without them
    ctx, t = c.list_meta("", ["base:allocation"])
    assert t == REP_ACK and ctx == [(0, "base:allocation")], ctx
EOF
    vnbd_stop
    qnbd_stop q
}

@test "nbd-protocol: LIST_META_CONTEXT queries, as qemu-nbd" {
    mkimg && cp disk.qcow2 q.qcow2
    vnbd_start v -t -A -B bm0 -B bm1 -f qcow2 disk.qcow2
    qnbd_start q -A -B bm0 -B bm1 -f qcow2 q.qcow2
    py "$T/v.sock" "$T/q.sock" <<'EOF'
import sys
from nbdraw import *
queries = [[], ["qemu:"], ["qemu:dirty-bitmap:"], ["base:"],
           ["x-unknown:thing"], ["base:allocation", "nbd-server:foo"],
           ["qemu:dirty-bitmap:bm1", "qemu:allocation-depth"]]
def run(path):
    c = NBD(path); c.start()
    assert c.structured_reply() == REP_ACK
    out = [c.list_meta("", q) for q in queries]
    assert c.list_meta("nope", [])[1] == ERR_UNKNOWN
    return out
v, q = run(sys.argv[1]), run(sys.argv[2])
for qq, a, b in zip(queries, v, q):
    assert sorted(a[0]) == sorted(b[0]) and a[1] == b[1], (qq, a, b)
assert v[4] == ([], REP_ACK)
assert len(v[0][0]) == 4, v[0]
EOF
    vnbd_stop
    qnbd_stop q
}

@test "nbd-protocol: malformed INFO and META options, as qemu-nbd" {
    mkimg && cp disk.qcow2 q.qcow2
    vnbd_start v -t -B bm0 -f qcow2 disk.qcow2
    qnbd_start q -B bm0 -f qcow2 q.qcow2
    py "$T/v.sock" "$T/q.sock" <<'EOF'
import sys
from nbdraw import *
bad = [
    (OPT_INFO, b""),
    (OPT_INFO, struct.pack(">I", 10) + b"ab"),
    (OPT_INFO, struct.pack(">IH", 0, 2) + b"\0\1"),      # 1 id of 2
    (OPT_GO, struct.pack(">IH", 0, 0) + b"x"),         # trailing byte
    (OPT_LIST_META_CONTEXT, struct.pack(">II", 0, 1)),  # query missing
    (OPT_SET_META_CONTEXT, struct.pack(">III", 0, 1, 99) + b"base:"),
    (OPT_SET_META_CONTEXT, struct.pack(">I", 5)),
]
def run(path):
    c = NBD(path); c.start()
    assert c.structured_reply() == REP_ACK
    out = [c.simple_option(o, d) for o, d in bad]
    # a failed SET drops the earlier selection
    ctx, t = c.set_meta("", ["base:allocation"])
    assert t == REP_ACK and len(ctx) == 1
    assert c.simple_option(*bad[-1]) == ERR_INVALID
    c.go()
    assert c.block_status(0, 4096).error == EINVAL
    return out
v, q = run(sys.argv[1]), run(sys.argv[2])
assert v == q, ([hex(x) for x in v], [hex(x) for x in q])
assert all(t == ERR_INVALID for t in v), [hex(x) for x in v]
EOF
    vnbd_stop
    qnbd_stop q
}

@test "nbd-protocol: SET_META_CONTEXT with two bitmaps gives distinct ids" {
    mkimg
    vnbd_start v -t -A -B bm0 -B bm1 -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
c = NBD(sys.argv[1]); c.start()
assert c.structured_reply() == REP_ACK
names = ["base:allocation", "qemu:dirty-bitmap:bm0",
         "qemu:dirty-bitmap:bm1", "qemu:allocation-depth", "x-no:such"]
ctx, t = c.set_meta("", names)
assert t == REP_ACK
ids = dict((n, i) for i, n in ctx)
assert sorted(ids) == sorted(names[:4]), ctx
assert len(set(ids.values())) == 4, ctx
c.go()
ext = c.block_status(0, 8 << 20).extents()
assert sorted(ext) == sorted(ids.values()), ext
# bm0 saw the 4M write and the 2M zeroing, bm1 only the zeroing
bm0, bm1 = ext[ids[names[1]]], ext[ids[names[2]]]
M = 1 << 20
assert bm0 == [(2 * M, 0), (M, 1), (M, 0), (65536, 1),
               (4 * M - 65536, 0)], bm0
assert bm1 == [(2 * M, 0), (M, 1), (5 * M, 0)], bm1
EOF
    vnbd_stop
}

@test "nbd-protocol: STARTTLS without TLS gets ERR_POLICY, as qemu-nbd" {
    mkimg && cp disk.qcow2 q.qcow2
    vnbd_start v -t -f qcow2 disk.qcow2
    qnbd_start q -f qcow2 q.qcow2
    py "$T/v.sock" "$T/q.sock" <<'EOF'
import sys
from nbdraw import *
for p in sys.argv[1:]:
    c = NBD(p); c.start()
    assert c.simple_option(OPT_STARTTLS) == ERR_POLICY, p
    assert c.structured_reply() == REP_ACK
    c.go()
    assert c.pread(0, 512).error == 0
EOF
    vnbd_stop
    qnbd_stop q
}

# ---------------------------------------------------------------------
# Transmission, compact headers

@test "nbd-protocol: READ with simple replies equals the image" {
    mkimg
    qemu-img convert -f qcow2 -O raw disk.qcow2 disk.raw
    vnbd_start v -t -r -f qcow2 disk.qcow2
    py "$T/v.sock" "$T/disk.raw" <<'EOF'
import sys
from nbdraw import *
img = open(sys.argv[2], "rb").read()
c = NBD(sys.argv[1]); c.connect(structured=False)
assert not c.eflags & FLAG_SEND_DF
step = 3 << 20
for off in range(0, len(img), step):
    n = min(step, len(img) - off)
    r = c.pread(off, n)
    assert r.magics == {SIMPLE_MAGIC} and r.error == 0
    assert r.data(off, n) == img[off:off + n], off
EOF
    vnbd_stop
}

@test "nbd-protocol: structured READ: holes, data, exact coverage" {
    mkimg
    qemu-img convert -f qcow2 -O raw disk.qcow2 disk.raw
    vnbd_start v -t -r -f qcow2 disk.qcow2
    py "$T/v.sock" "$T/disk.raw" <<'EOF'
import sys
from nbdraw import *
img = open(sys.argv[2], "rb").read()
c = NBD(sys.argv[1]); c.connect()
assert c.eflags & FLAG_SEND_DF
for off, n in [(0, 8 << 20), (12345, 3 << 20), (60 << 20, 4 << 20),
               ((2 << 20) + 100, 1000)]:
    r = c.pread(off, n)
    assert r.magics == {STRUCTURED_MAGIC} and r.error == 0
    assert r.data(off, n) == img[off:off + n], off
# 0..1M data, 1M..2M unallocated, 2M..3M zero cluster, 4M data
r = c.pread(0, 5 << 20)
kinds = [(o, d is None, l) for o, d, l in sorted(r.data_chunks())]
assert (0, False, 1 << 20) in kinds, kinds
assert (1 << 20, True, 3 << 20) in kinds, kinds
assert any(o == 4 << 20 and not h for o, h, l in kinds), kinds
assert sum(1 for c_ in r.chunks if c_.done) == 1 and r.chunks[-1].done
EOF
    vnbd_stop
}

@test "nbd-protocol: DF READ gives one data chunk" {
    mkimg
    qemu-img convert -f qcow2 -O raw disk.qcow2 disk.raw
    vnbd_start v -t -r -f qcow2 disk.qcow2
    py "$T/v.sock" "$T/disk.raw" <<'EOF'
import sys
from nbdraw import *
img = open(sys.argv[2], "rb").read()
c = NBD(sys.argv[1]); c.connect()
r = c.pread(0, 5 << 20, CMD_FLAG_DF)
assert r.error == 0
ch = r.data_chunks()
assert len(ch) == 1 and ch[0][1] is not None, [(o, l) for o, d, l in ch]
assert r.data(0, 5 << 20) == img[:5 << 20]
EOF
    vnbd_stop
}

@test "nbd-protocol: READ errors: past the end, over 32 MiB, DF" {
    mkimg
    vnbd_start v -t -r -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
M = 1 << 20
for sr in (False, True):
    c = NBD(sys.argv[1]); c.connect(structured=sr)
    assert c.pread(64 * M - 512, 1024).error == EINVAL
    assert c.pread(64 * M, 1).error == EINVAL
    assert c.pread(1 << 62, 512).error == EINVAL
    assert c.pread(0xffffffffffffffff, 2).error == EINVAL
    assert c.pread(0, 32 * M + 1).error == EINVAL
    if sr:
        assert c.pread(0, 32 * M + 1, CMD_FLAG_DF).error == EOVERFLOW
    # still in sync
    r = c.pread(0, 32 * M)
    assert r.error == 0 and r.data(0, 32 * M)[:4] == b"\xa5" * 4
    c.close()
EOF
    vnbd_stop
}

@test "nbd-protocol: WRITE past the end gets ENOSPC" {
    mkimg
    vnbd_start v -t -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
M = 1 << 20
c = NBD(sys.argv[1]); c.connect()
assert c.pwrite(64 * M - 512, bytes(1024)).error == ENOSPC
assert c.pwrite(64 * M, b"x").error == ENOSPC
assert c.cmd(CMD_WRITE_ZEROES, 64 * M - 512, 1024).error == ENOSPC
assert c.cmd(CMD_TRIM, 64 * M - 512, 1024).error == EINVAL
assert c.pwrite(64 * M - 512, b"y" * 512).error == 0
assert c.pread(64 * M - 512, 512).data(64 * M - 512, 512) == b"y" * 512
EOF
    vnbd_stop
}

@test "nbd-protocol: writes on a read-only export get EPERM" {
    mkimg
    vnbd_start v -t -r -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
for sr in (False, True):
    c = NBD(sys.argv[1]); c.connect(structured=sr)
    assert c.eflags & FLAG_READ_ONLY
    assert c.pwrite(0, b"z" * 4096).error == EPERM
    assert c.cmd(CMD_TRIM, 0, 4096).error == EPERM
    assert c.cmd(CMD_WRITE_ZEROES, 0, 4096).error == EPERM
    assert c.pread(0, 4096).data(0, 4096) == b"\xa5" * 4096
    c.close()
EOF
    vnbd_stop
}

@test "nbd-protocol: unknown command and unknown flags get EINVAL" {
    mkimg
    vnbd_start v -t -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
for sr in (False, True):
    c = NBD(sys.argv[1]); c.connect(structured=sr)
    assert c.cmd(99, 0, 512).error == EINVAL
    assert c.cmd(CMD_READ, 0, 512, 0x100).error == EINVAL
    assert c.cmd(CMD_READ, 0, 512, CMD_FLAG_REQ_ONE).error == EINVAL
    assert c.cmd(CMD_WRITE, 0, 512, 0x40, b"q" * 512).error == EINVAL
    assert c.cmd(CMD_FLUSH, 0, 0, CMD_FLAG_NO_HOLE).error == EINVAL
    assert c.cmd(CMD_CACHE, 0, 512, 0x80).error == EINVAL
    if not sr:
        assert c.cmd(CMD_READ, 0, 512, CMD_FLAG_DF).error == EINVAL
    r = c.pread(0, 512)
    assert r.error == 0 and r.data(0, 512) == b"\xa5" * 512
    c.close()
EOF
    vnbd_stop
}

@test "nbd-protocol: a request with a bad magic ends the connection" {
    mkimg
    vnbd_start v -t -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
for ext, magic in ((False, 0x25609514), (False, EXT_REQUEST_MAGIC),
                   (True, REQUEST_MAGIC)):
    c = NBD(sys.argv[1]); c.connect(extended=ext)
    c.request(CMD_READ, 0, 512, magic=magic)
    assert c.is_closed(), (ext, hex(magic))
c = NBD(sys.argv[1]); c.connect()
assert c.pread(0, 512).error == 0
EOF
    vnbd_stop
}

@test "nbd-protocol: BLOCK_STATUS without SET_META_CONTEXT gets EINVAL" {
    mkimg
    vnbd_start v -t -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
c = NBD(sys.argv[1]); c.connect()
assert c.block_status(0, 65536).error == EINVAL
assert c.pread(0, 512).error == 0
# a selection for another export name does not count either
c = NBD(sys.argv[1]); c.start()
assert c.structured_reply() == REP_ACK
ctx, t = c.set_meta("", ["x-none:foo"])
assert ctx == [] and t == REP_ACK
c.go()
assert c.block_status(0, 65536).error == EINVAL
EOF
    vnbd_stop
}

@test "nbd-protocol: BLOCK_STATUS REQ_ONE gives one extent per context" {
    mkimg
    vnbd_start v -t -A -B bm0 -B bm1 -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
c = NBD(sys.argv[1])
ids = c.connect(meta=["base:allocation", "qemu:allocation-depth",
                      "qemu:dirty-bitmap:bm0", "qemu:dirty-bitmap:bm1"])
for off, n in [(0, 8 << 20), (0, 4096), (12345, 999), (4 << 20, 1 << 20),
               ((64 << 20) - 100, 100)]:
    ext = c.block_status(off, n, CMD_FLAG_REQ_ONE).extents()
    assert len(ext) == 4, ext
    for cid, e in ext.items():
        assert len(e) == 1 and 0 < e[0][0] <= n, (off, n, cid, e)
EOF
    vnbd_stop
}

@test "nbd-protocol: BLOCK_STATUS at an unaligned offset, length 0xffffffff" {
    qemu-img create -q -f qcow2 disk.qcow2 8G
    qemu-img bitmap --add disk.qcow2 bm0
    qemu-io -f qcow2 -c "write -P 1 0 1M" -c "write -P 2 4G 64k" \
        -c "write -z 5G 1M" disk.qcow2 >/dev/null
    cp disk.qcow2 q.qcow2
    vnbd_start v -t -A -B bm0 -f qcow2 disk.qcow2
    qnbd_start q -A -B bm0 -f qcow2 q.qcow2
    py "$T/v.sock" "$T/q.sock" <<'EOF'
import sys
from nbdraw import *
size = 8 << 30
c = NBD(sys.argv[1])
c.connect(meta=["base:allocation", "qemu:allocation-depth",
                "qemu:dirty-bitmap:bm0"])
# out of bounds: EINVAL, as qemu-nbd
q = NBD(sys.argv[2])
q.connect(meta=["base:allocation"])
for off, n in [(size - 100, 0xffffffff), (size, 1), (size + 1, 1)]:
    assert c.block_status(off, n).error == q.block_status(off, n).error \
        == EINVAL, (off, n)
for off in (0, 12345, (1 << 20) - 1, 4 << 30, (3 << 30) + 4095,
            size - 0xffffffff):
    r = c.block_status(off, 0xffffffff)
    assert r.error == 0, r.error
    ext = r.extents()
    assert len(ext) == 3
    for cid, e in ext.items():
        assert e and all(l > 0 for l, f in e), (off, cid, e)
        assert sum(l for l, f in e) <= size - off, (off, cid, e)
    # base:allocation from 0 covers the whole disk in one reply
    if off == 0:
        assert ext[0][0] == (1 << 20, 0), ext[0]
EOF
    vnbd_stop
    qnbd_stop q
}

@test "nbd-protocol: WRITE_ZEROES with FAST_ZERO and NO_HOLE" {
    mkimg
    vnbd_start v -t -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
c = NBD(sys.argv[1]); c.connect()
assert c.eflags & FLAG_SEND_FAST_ZERO and c.eflags & FLAG_SEND_WRITE_ZEROES
r = c.cmd(CMD_WRITE_ZEROES, 0, 65536, CMD_FLAG_FAST_ZERO)
assert r.error in (0, ENOTSUP), r.error
if r.error == 0:
    assert c.pread(0, 65536).data(0, 65536) == bytes(65536)
else:
    assert c.pread(0, 65536).data(0, 65536) == b"\xa5" * 65536
r = c.cmd(CMD_WRITE_ZEROES, 4 << 20, 4096, CMD_FLAG_NO_HOLE | CMD_FLAG_FUA)
assert r.error == 0
assert c.pread(4 << 20, 8192).data(4 << 20, 8192) == bytes(4096) + b"\x5a" * 4096
r = c.cmd(CMD_WRITE_ZEROES, 123, 4567, CMD_FLAG_FAST_ZERO | CMD_FLAG_NO_HOLE)
assert r.error in (0, ENOTSUP), r.error
r = c.cmd(CMD_WRITE_ZEROES, 63 << 20, 1 << 20)
assert r.error == 0
assert c.pread(63 << 20, 1 << 20).data(63 << 20, 1 << 20) == bytes(1 << 20)
EOF
    vnbd_stop
}

@test "nbd-protocol: FLUSH, CACHE and FUA writes" {
    mkimg
    vnbd_start v -t -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
for sr in (False, True):
    c = NBD(sys.argv[1]); c.connect(structured=sr)
    assert c.eflags & FLAG_SEND_FLUSH and c.eflags & FLAG_SEND_FUA
    assert c.eflags & FLAG_SEND_CACHE
    assert c.pwrite(8 << 20, b"F" * 8192, CMD_FLAG_FUA).error == 0
    assert c.cmd(CMD_FLUSH).error == 0
    assert c.cmd(CMD_CACHE, 0, 1 << 20).error == 0
    assert c.cmd(CMD_TRIM, 9 << 20, 1 << 20, CMD_FLAG_FUA).error == 0
    assert c.pread(8 << 20, 8192).data(8 << 20, 8192) == b"F" * 8192
    c.close()
EOF
    vnbd_stop
    run qemu-io -f qcow2 -c "read -P 0x46 8M 8k" disk.qcow2
    assert_success
}

@test "nbd-protocol: DISC makes the server close" {
    mkimg
    vnbd_start v -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
c = NBD(sys.argv[1]); c.connect()
assert c.pwrite(0, b"d" * 512).error == 0
c.disc()
assert c.is_closed()
EOF
    # without -t, the last client leaving ends the server cleanly
    wait_exit "$VNBD_PID"
    run qemu-io -f qcow2 -c "read -P 0x64 0 512" disk.qcow2
    assert_success
}

@test "nbd-protocol: 32 pipelined requests all answered" {
    mkimg
    qemu-img convert -f qcow2 -O raw disk.qcow2 disk.raw
    vnbd_start v -t -f qcow2 disk.qcow2
    py "$T/v.sock" "$T/disk.raw" <<'EOF'
import sys
from nbdraw import *
img = open(sys.argv[2], "rb").read()
for sr in (False, True):
    c = NBD(sys.argv[1]); c.connect(structured=sr)
    want = {}
    for i in range(32):
        ck = 1000 + i * 7919
        off = (i * 1999 * 512) % (60 << 20)
        if i % 4 == 3:
            c.request(CMD_WRITE, (32 << 20) + i * 4096, 4096, 0,
                      bytes([i]) * 4096, cookie=ck)
            want[ck] = None
        else:
            c.request(CMD_READ, off, 65536, cookie=ck)
            want[ck] = (off, img[off:off + 65536])
    got = set()
    while len(got) < 32:
        r = c.reply()
        assert r.cookie in want and r.cookie not in got, r.cookie
        got.add(r.cookie)
        assert r.error == 0
        if want[r.cookie]:
            off, d = want[r.cookie]
            assert r.data(off, 65536) == d, r.cookie
    assert got == set(want)
    c.close()
EOF
    vnbd_stop
}

# ---------------------------------------------------------------------
# Extended headers

@test "nbd-protocol: extended headers: READ, WRITE, BLOCK_STATUS_EXT" {
    mkimg
    qemu-img convert -f qcow2 -O raw disk.qcow2 disk.raw
    vnbd_start v -t -B bm0 -f qcow2 disk.qcow2
    py "$T/v.sock" "$T/disk.raw" <<'EOF'
import sys
from nbdraw import *
img = open(sys.argv[2], "rb").read()
c = NBD(sys.argv[1]); c.start()
assert c.extended_headers() == REP_ACK
# SR after EH: refused, EH again: refused
assert c.simple_option(OPT_STRUCTURED_REPLY) in (ERR_EXT_HEADER_REQD,
                                                 ERR_INVALID)
assert c.simple_option(OPT_EXTENDED_HEADERS) == ERR_INVALID
ctx, t = c.set_meta("", ["base:allocation", "qemu:dirty-bitmap:bm0"])
assert t == REP_ACK and len(ctx) == 2
ids = dict((n, i) for i, n in ctx)
c.go()
assert c.eflags & FLAG_SEND_DF
replies = []
def do(typ, off=0, n=0, *a, **k):
    r = c.cmd(typ, off, n, *a, **k)
    replies.append((off, r))
    return r
r = do(CMD_READ, 0, 5 << 20)
assert r.error == 0 and r.data(0, 5 << 20) == img[:5 << 20]
assert any(d is None for o, d, l in r.data_chunks())
r = do(CMD_READ, 0, 1 << 20, CMD_FLAG_DF)
assert len(r.data_chunks()) == 1
assert do(CMD_WRITE, 40 << 20, 8192, CMD_FLAG_PAYLOAD_LEN,
          b"E" * 8192).error == 0
assert do(CMD_READ, 40 << 20, 8192).data(40 << 20, 8192) == b"E" * 8192
ext = do(CMD_BLOCK_STATUS, 0, 64 << 20).extents()
assert set(ext) == set(ids.values())
base = ext[ids["base:allocation"]]
assert sum(l for l, f in base) == 64 << 20, base
assert base[0] == (1 << 20, 0), base
bm = ext[ids["qemu:dirty-bitmap:bm0"]]
assert bm[:4] == [(2 << 20, 0), (1 << 20, 1), (1 << 20, 0),
                  (65536, 1)], bm
ext = do(CMD_BLOCK_STATUS, 0, 64 << 20, CMD_FLAG_REQ_ONE).extents()
assert all(len(e) == 1 for e in ext.values()), ext
# errors and data-less commands use the extended header too
assert do(CMD_READ, 64 << 20, 512).error == EINVAL
assert do(99, 0, 0).error == EINVAL
assert do(CMD_FLUSH).error == 0
assert do(CMD_WRITE_ZEROES, 41 << 20, 4096).error == 0
assert do(CMD_TRIM, 42 << 20, 4096).error == 0
assert do(CMD_CACHE, 0, 4096).error == 0
# a payload where none is expected: consumed, then EINVAL
assert do(CMD_CACHE, 4096, 16, 0, b"p" * 16).error == EINVAL
assert do(CMD_READ, 4096, 16).data(4096, 16) == img[4096:4112]
for off, r in replies:
    assert r.magics == {EXT_REPLY_MAGIC}, r.chunks
    assert all(ch.hdr_offset == off for ch in r.chunks), (off, r.chunks)
c.disc()
assert c.is_closed()
EOF
    vnbd_stop
}

@test "nbd-protocol: extended headers: one BLOCK_STATUS over 16 GiB" {
    qemu-img create -q -f qcow2 big.qcow2 16G
    qemu-io -f qcow2 -c "write -P 1 0 64k" -c "write -P 2 5G 1M" \
        -c "write -P 3 10G 64k" -c "write -P 4 17179803648 64k" \
        big.qcow2 >/dev/null
    vnbd_start v -t -f qcow2 big.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
G = 1 << 30
c = NBD(sys.argv[1])
c.connect(extended=True, meta=["base:allocation"])
assert c.size == 16 * G
r = c.block_status(0, 16 * G)
assert r.error == 0 and r.magics == {EXT_REPLY_MAGIC}
assert [ch.type for ch in r.chunks] == [TYPE_BLOCK_STATUS_EXT]
e = r.extents()[0]
assert sum(l for l, f in e) == 16 * G, e
assert any(l > 4 * G for l, f in e), e     # 64-bit lengths are used
pos, data = 0, []
for l, f in e:
    if not f & 1:
        data.append((pos, l))
    pos += l
assert data == [(0, 65536), (5 * G, 1 << 20), (10 * G, 65536),
                (16 * G - 65536, 65536)], data
r = c.pread(5 * G, 1 << 20)
assert r.data(5 * G, 1 << 20) == b"\2" * (1 << 20)
EOF
    vnbd_stop
}

@test "nbd-protocol: extended headers: an over-long payload hangs up" {
    mkimg
    vnbd_start v -t -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
c = NBD(sys.argv[1]); c.connect(extended=True)
# declared payload over the 32 MiB maximum: hard disconnect
c.send(struct.pack(">IHHQQQ", EXT_REQUEST_MAGIC, CMD_FLAG_PAYLOAD_LEN,
                   CMD_WRITE, 7, 0, (32 << 20) + 1))
assert c.is_closed()
c = NBD(sys.argv[1]); c.connect(extended=True)
assert c.pread(0, 512).error == 0
EOF
    vnbd_stop
}

@test "nbd-protocol: EXPORT_NAME after EXTENDED_HEADERS closes" {
    mkimg
    vnbd_start v -t -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys
from nbdraw import *
c = NBD(sys.argv[1]); c.start()
assert c.extended_headers() == REP_ACK
c.opt(OPT_EXPORT_NAME, b"")
assert c.is_closed()
c = NBD(sys.argv[1]); c.connect(extended=True)
assert c.pread(0, 512).error == 0
EOF
    vnbd_stop
}

# ---------------------------------------------------------------------
# Server life: stopping, timeouts, the connection cap

@test "nbd-protocol: requests during shutdown: ESHUTDOWN or a clean close" {
    mkimg
    vnbd_start v -t -f qcow2 disk.qcow2
    py "$T/v.sock" "$VNBD_PID" <<'EOF'
import os, signal, sys, time
from nbdraw import *
for ext in (False, True):
    c = NBD(sys.argv[1]); c.connect(extended=ext)
    assert c.pread(0, 512).error == 0
    if ext:
        break
    c.close()
os.kill(int(sys.argv[2]), signal.SIGTERM)
time.sleep(0.3)
try:
    r = c.pread(0, 512)
    assert r.error == ESHUTDOWN, r.error
    assert c.is_closed()
except Closed:
    pass
EOF
    wait_exit "$VNBD_PID"
}

@test "nbd-protocol: a silent client is dropped after the handshake timeout" {
    # "about 1 s": not before 0.5 s (a deadline kept in whole seconds
    # would drop clients anywhere between 0 and 1 s after they connect).
    mkimg
    vnbd_start v -t -e 0 --handshake-timeout 1 -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys, time
from nbdraw import *
for i in range(3):
    t0 = time.monotonic()
    idle = NBD(sys.argv[1])
    idle.greeting()
    # someone else is served meanwhile, and stays connected past 1 s
    c = NBD(sys.argv[1]); c.connect()
    assert idle.is_closed(timeout=5)
    dt = time.monotonic() - t0
    assert 0.5 <= dt <= 3, "dropped after %.2f s" % dt
    time.sleep(0.5)
    assert c.pread(0, 512).error == 0
    c.close()
EOF
    vnbd_stop
}

@test "nbd-protocol: --max-connections 2: a third client waits its turn" {
    mkimg
    vnbd_start v --max-connections 2 -e 0 -t -f qcow2 disk.qcow2
    py "$T/v.sock" <<'EOF'
import sys, time
from nbdraw import *
a = NBD(sys.argv[1]); a.connect()
b = NBD(sys.argv[1]); b.connect()
c = NBD(sys.argv[1])
c.sock.settimeout(1.5)
try:
    c.sock.recv(1, socket.MSG_PEEK)
    raise AssertionError("third client served")
except socket.timeout:
    pass
a.disc(); a.close()
c.sock.settimeout(5)
c.connect()
assert c.pread(0, 512).error == 0
assert b.pread(0, 512).error == 0
EOF
    vnbd_stop
}
