# SPDX-License-Identifier: LGPL-2.1-or-later
"""A raw-socket NBD client for protocol conformance tests.

Standard library only.  It speaks the fixed-newstyle handshake, compact
and extended (NBD_OPT_EXTENDED_HEADERS) transmission headers, simple and
structured replies, and lets a test send anything at all (bad magic,
unknown options, flags, commands) to see what the server answers.

Use it from Python (``import nbdraw``) or as a small CLI:

    python3 nbdraw.py SOCKET greeting      # print the handshake flags
    python3 nbdraw.py SOCKET list          # OPT_LIST: name<TAB>description
    python3 nbdraw.py SOCKET info [NAME]   # OPT_INFO replies, hex

Everything on the wire is big-endian.
"""

import socket
import struct
import sys

NBD_MAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x0003E889045565A9

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST = 1, 2, 3
OPT_STARTTLS, OPT_INFO, OPT_GO = 5, 6, 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT = 9, 10
OPT_EXTENDED_HEADERS = 11

REP_ACK, REP_SERVER, REP_INFO, REP_META_CONTEXT = 1, 2, 3, 4
REP_ERR = 0x80000000
ERR_UNSUP, ERR_POLICY, ERR_INVALID = REP_ERR | 1, REP_ERR | 2, REP_ERR | 3
ERR_TLS_REQD, ERR_UNKNOWN, ERR_SHUTDOWN = REP_ERR | 5, REP_ERR | 6, REP_ERR | 7
ERR_TOO_BIG, ERR_EXT_HEADER_REQD = REP_ERR | 9, REP_ERR | 10

INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 0, 1, 2, 3

FLAG_HAS_FLAGS, FLAG_READ_ONLY, FLAG_SEND_FLUSH = 1, 2, 4
FLAG_SEND_FUA, FLAG_SEND_TRIM, FLAG_SEND_WRITE_ZEROES = 8, 0x20, 0x40
FLAG_SEND_DF, FLAG_CAN_MULTI_CONN, FLAG_SEND_CACHE = 0x80, 0x100, 0x400
FLAG_SEND_FAST_ZERO = 0x800

REQUEST_MAGIC = 0x25609513
EXT_REQUEST_MAGIC = 0x21E41C71
SIMPLE_MAGIC = 0x67446698
STRUCTURED_MAGIC = 0x668E33EF
EXT_REPLY_MAGIC = 0x6E8A278C

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
CMD_TRIM, CMD_CACHE, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS = 4, 5, 6, 7

CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, CMD_FLAG_DF = 1, 2, 4
CMD_FLAG_REQ_ONE, CMD_FLAG_FAST_ZERO, CMD_FLAG_PAYLOAD_LEN = 8, 0x10, 0x20

REPLY_FLAG_DONE = 1
TYPE_NONE, TYPE_OFFSET_DATA, TYPE_OFFSET_HOLE = 0, 1, 2
TYPE_BLOCK_STATUS, TYPE_BLOCK_STATUS_EXT = 5, 6
TYPE_ERROR, TYPE_ERROR_OFFSET = 0x8001, 0x8002

EPERM, EIO, ENOMEM, EINVAL, ENOSPC = 1, 5, 12, 22, 28
EOVERFLOW, ENOTSUP, ESHUTDOWN = 75, 95, 108


class Closed(Exception):
    """The server closed the connection."""


class Chunk:
    """One reply unit: a simple reply or one structured/extended chunk."""

    def __init__(self, magic, cookie, flags=REPLY_FLAG_DONE, type=TYPE_NONE,
                 payload=b"", error=0, hdr_offset=None):
        self.magic, self.cookie, self.flags = magic, cookie, flags
        self.type, self.payload, self.error = type, payload, error
        self.hdr_offset = hdr_offset
        self.done = bool(flags & REPLY_FLAG_DONE)

    def __repr__(self):
        return ("Chunk(magic=%#x cookie=%d flags=%d type=%#x len=%d err=%d)"
                % (self.magic, self.cookie, self.flags, self.type,
                   len(self.payload), self.error))


class Reply:
    """All chunks answering one request."""

    def __init__(self, cookie, chunks):
        self.cookie, self.chunks = cookie, chunks

    @property
    def error(self):
        for c in self.chunks:
            if c.error:
                return c.error
        return 0

    @property
    def magics(self):
        return {c.magic for c in self.chunks}

    def data_chunks(self):
        """[(offset, bytes or None for a hole, length)] of a READ."""
        out = []
        for c in self.chunks:
            if c.type == TYPE_OFFSET_DATA:
                off = struct.unpack(">Q", c.payload[:8])[0]
                out.append((off, c.payload[8:], len(c.payload) - 8))
            elif c.type == TYPE_OFFSET_HOLE:
                off, ln = struct.unpack(">QI", c.payload)
                out.append((off, None, ln))
        return out

    def data(self, offset, length):
        """Reassemble a READ; checks exact, non-overlapping coverage."""
        if any(c.magic == SIMPLE_MAGIC for c in self.chunks):
            return self.chunks[0].payload
        buf = bytearray(length)
        seen = []
        for off, d, ln in self.data_chunks():
            assert offset <= off and off + ln <= offset + length, \
                "chunk %d+%d outside %d+%d" % (off, ln, offset, length)
            assert ln > 0, "empty chunk"
            seen.append((off, ln))
            if d is not None:
                buf[off - offset:off - offset + ln] = d
        seen.sort()
        pos = offset
        for off, ln in seen:
            assert off == pos, "gap or overlap at %d (expected %d)" % (off,
                                                                      pos)
            pos += ln
        assert pos == offset + length, "short coverage %d" % pos
        return bytes(buf)

    def extents(self):
        """{context id: [(length, flags)]} of a BLOCK_STATUS reply."""
        out = {}
        for c in self.chunks:
            if c.type == TYPE_BLOCK_STATUS:
                cid = struct.unpack(">I", c.payload[:4])[0]
                p = c.payload[4:]
                assert len(p) % 8 == 0
                out[cid] = [struct.unpack(">II", p[i:i + 8])
                            for i in range(0, len(p), 8)]
            elif c.type == TYPE_BLOCK_STATUS_EXT:
                cid, n = struct.unpack(">II", c.payload[:8])
                p = c.payload[8:]
                assert len(p) == 16 * n, "count %d vs %d bytes" % (n, len(p))
                out[cid] = [struct.unpack(">QQ", p[i:i + 16])
                            for i in range(0, len(p), 16)]
        return out


class NBD:
    def __init__(self, path, timeout=20):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.extended = False
        self.structured = False
        self.pending = {}   # cookie -> (type, length)
        self.stash = {}     # cookie -> [Chunk] not yet complete
        self.next_cookie = 1
        self.hflags = None

    # --- bytes ---------------------------------------------------------
    def recv(self, n):
        buf = b""
        while len(buf) < n:
            try:
                d = self.sock.recv(n - len(buf))
            except ConnectionResetError:
                d = b""
            if not d:
                raise Closed("closed after %d of %d bytes" % (len(buf), n))
            buf += d
        return buf

    def send(self, data):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Closed(str(e))

    def is_closed(self, timeout=5):
        """True if the server closes without sending anything more."""
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(1)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return d == b""

    def close(self):
        self.sock.close()

    # --- handshake -----------------------------------------------------
    def greeting(self):
        magic, opt, fl = struct.unpack(">QQH", self.recv(18))
        assert magic == NBD_MAGIC, hex(magic)
        assert opt == IHAVEOPT, hex(opt)
        self.hflags = fl
        return fl

    def start(self, cflags=3):
        """Greeting and client flags."""
        self.greeting()
        self.cflags = cflags
        self.send(struct.pack(">I", cflags))
        return self.hflags

    def opt(self, opt, data=b"", length=None):
        ln = len(data) if length is None else length
        self.send(struct.pack(">QII", IHAVEOPT, opt, ln) + data)

    def opt_reply(self):
        magic, opt, typ, ln = struct.unpack(">QIII", self.recv(20))
        assert magic == REP_MAGIC, hex(magic)
        return opt, typ, self.recv(ln)

    def opt_replies(self, opt):
        """Replies to OPT up to and including ACK or an error."""
        out = []
        while True:
            o, t, d = self.opt_reply()
            assert o == opt, "reply for option %d, expected %d" % (o, opt)
            out.append((t, d))
            if t == REP_ACK or t & REP_ERR:
                return out

    def option(self, opt, data=b""):
        self.opt(opt, data)
        return self.opt_replies(opt)

    def simple_option(self, opt, data=b""):
        """Reply type of an option answered by one reply."""
        r = self.option(opt, data)
        return r[-1][0]

    def structured_reply(self):
        t = self.simple_option(OPT_STRUCTURED_REPLY)
        if t == REP_ACK:
            self.structured = True
        return t

    def extended_headers(self):
        t = self.simple_option(OPT_EXTENDED_HEADERS)
        if t == REP_ACK:
            self.extended = self.structured = True
        return t

    @staticmethod
    def info_payload(name, infos):
        n = name.encode()
        return (struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos))
                + b"".join(struct.pack(">H", i) for i in infos))

    def info(self, name="", infos=(), opt=OPT_INFO):
        """Raw replies [(type, data)] of INFO or GO."""
        r = self.option(opt, self.info_payload(name, list(infos)))
        if opt == OPT_GO and r[-1][0] == REP_ACK:
            for t, d in r:
                if t == REP_INFO and struct.unpack(">H", d[:2])[0] == 0:
                    self.size, self.eflags = struct.unpack(">QH", d[2:])
        return r

    def go(self, name="", infos=()):
        r = self.info(name, infos, OPT_GO)
        assert r[-1][0] == REP_ACK, "GO failed: %r" % (r,)
        return r

    def export_name(self, name=""):
        self.opt(OPT_EXPORT_NAME, name.encode())
        self.size, self.eflags = struct.unpack(">QH", self.recv(10))
        if not (self.cflags & 2 and self.hflags & 2):
            z = self.recv(124)
            assert z == bytes(124)

    @staticmethod
    def meta_payload(name, queries):
        n = name.encode()
        p = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
        for q in queries:
            q = q.encode()
            p += struct.pack(">I", len(q)) + q
        return p

    def meta(self, opt, name, queries):
        """[(id, context)] and the final reply type."""
        r = self.option(opt, self.meta_payload(name, queries))
        ctx = []
        for t, d in r[:-1]:
            assert t == REP_META_CONTEXT, t
            ctx.append((struct.unpack(">I", d[:4])[0], d[4:].decode()))
        return ctx, r[-1][0]

    def list_meta(self, name="", queries=()):
        return self.meta(OPT_LIST_META_CONTEXT, name, list(queries))

    def set_meta(self, name="", queries=("base:allocation",)):
        return self.meta(OPT_SET_META_CONTEXT, name, list(queries))

    def connect(self, name="", structured=True, extended=False,
                meta=None):
        """The usual way in: flags, SR/EH, optional SET_META, GO."""
        self.start()
        if extended:
            assert self.extended_headers() == REP_ACK
        elif structured:
            assert self.structured_reply() == REP_ACK
        ids = None
        if meta:
            ids, t = self.set_meta(name, meta)
            assert t == REP_ACK
        self.go(name)
        return ids

    # --- transmission --------------------------------------------------
    def request(self, typ, offset=0, length=0, flags=0, data=b"",
                cookie=None, magic=None):
        if cookie is None:
            cookie = self.next_cookie
            self.next_cookie += 1
        if self.extended:
            if data and typ != CMD_WRITE:
                flags |= CMD_FLAG_PAYLOAD_LEN
            h = struct.pack(">IHHQQQ", magic or EXT_REQUEST_MAGIC, flags,
                            typ, cookie, offset, length)
        else:
            h = struct.pack(">IHHQQI", magic or REQUEST_MAGIC, flags, typ,
                            cookie, offset, length)
        self.pending[cookie] = (typ, length)
        self.send(h + data)
        return cookie

    def recv_chunk(self):
        magic = struct.unpack(">I", self.recv(4))[0]
        if magic == SIMPLE_MAGIC:
            err, cookie = struct.unpack(">IQ", self.recv(12))
            typ, ln = self.pending.get(cookie, (None, 0))
            data = b""
            if typ == CMD_READ and err == 0:
                data = self.recv(ln)
            return Chunk(magic, cookie, error=err, payload=data)
        if magic == STRUCTURED_MAGIC:
            fl, typ, cookie, ln = struct.unpack(">HHQI", self.recv(16))
            hoff = None
        elif magic == EXT_REPLY_MAGIC:
            fl, typ, cookie, hoff, ln = struct.unpack(">HHQQQ",
                                                      self.recv(28))
        else:
            raise AssertionError("bad reply magic %#x" % magic)
        p = self.recv(ln)
        err = 0
        if typ & 0x8000:
            err = struct.unpack(">I", p[:4])[0]
            assert err != 0, "error chunk with error 0"
        return Chunk(magic, cookie, fl, typ, p, err, hoff)

    def reply(self):
        """The next complete reply (any cookie)."""
        while True:
            c = self.recv_chunk()
            assert c.cookie in self.pending, "unknown cookie %d" % c.cookie
            self.stash.setdefault(c.cookie, []).append(c)
            if c.done:
                del self.pending[c.cookie]
                return Reply(c.cookie, self.stash.pop(c.cookie))

    def cmd(self, typ, offset=0, length=0, flags=0, data=b""):
        ck = self.request(typ, offset, length, flags, data)
        r = self.reply()
        assert r.cookie == ck
        return r

    def pread(self, offset, length, flags=0):
        return self.cmd(CMD_READ, offset, length, flags)

    def pwrite(self, offset, data, flags=0):
        return self.cmd(CMD_WRITE, offset, len(data), flags, data)

    def block_status(self, offset, length, flags=0):
        return self.cmd(CMD_BLOCK_STATUS, offset, length, flags)

    def disc(self):
        self.request(CMD_DISC)


def main(argv):
    path, what = argv[1], argv[2]
    c = NBD(path)
    if what == "greeting":
        print("%#06x" % c.greeting())
        return 0
    c.start()
    if what == "list":
        for t, d in c.option(OPT_LIST):
            if t == REP_SERVER:
                n = struct.unpack(">I", d[:4])[0]
                print("%s\t%s" % (d[4:4 + n].decode(), d[4 + n:].decode()))
            elif t != REP_ACK:
                print("error %#x" % t)
                return 1
    elif what == "info":
        name = argv[3] if len(argv) > 3 else ""
        for t, d in c.info(name, [INFO_NAME, INFO_DESCRIPTION,
                                  INFO_BLOCK_SIZE]):
            print("%#x %s" % (t, d.hex()))
    c.opt(OPT_ABORT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
