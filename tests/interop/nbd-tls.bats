#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-nbd with TLS against libnbd (GnuTLS) and qemu: PSK and x509
# (server certificate; with --tls-ca, client certificates), forced TLS
# for plaintext clients (raw ERR_TLS_REQD probe), TLS 1.2 and 1.3, and
# data integrity through a writable TLS export with 4 connections.
#
# Certificates are made here with openssl; libnbd reads a directory of
# ca-cert.pem, client-cert.pem, client-key.pem (tls-certificates=DIR),
# and so does qemu's tls-creds-x509.  libnbd only verifies the server's
# certificate on TCP by default, so the server-side x509 cases use
# 127.0.0.1.  The negotiated TLS version is read from GnuTLS's
# SSLKEYLOGFILE (TLS 1.3 logs *_TRAFFIC_SECRET_0, TLS 1.2 CLIENT_RANDOM);
# GNUTLS_SYSTEM_PRIORITY_FILE disables one version on the client.

load ../helpers

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires openssl nbdinfo nbdcopy python3
}

# A PSK file (alice with a random key) and a few bad ones.
make_psk() {
    mkdir -p psk wrong
    echo "alice:$(openssl rand -hex 32)" >psk/keys.psk
    echo "alice:$(openssl rand -hex 32)" >wrong/keys.psk
    echo "bob:$(cut -d: -f2 psk/keys.psk)" >wrong/bob.psk
}

_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out "$1" 2>/dev/null
}

# _ca NAME CN: a self-signed CA in NAME-cert.pem, NAME-key.pem.
_ca() {
    _key "$1-key.pem"
    openssl req -new -x509 -key "$1-key.pem" -out "$1-cert.pem" -days 2 \
        -subj "/CN=$2" -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign
}

# _leaf NAME CA CN EXTENSIONS: a certificate signed by CA.
_leaf() {
    _key "$1-key.pem"
    openssl req -new -key "$1-key.pem" -subj "/CN=$3" -out "$1.csr"
    printf '%s\n' "$4" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2-cert.pem" -CAkey "$2-key.pem" \
        -CAcreateserial -days 2 -out "$1-cert.pem" -extfile "$1.ext" \
        2>/dev/null
}

# In $T/pki: ca (trusted) and evil (untrusted) CAs; server (for
# localhost, by ca), eserver (by evil); client directories for libnbd and
# qemu: good (client cert by ca), evil (client cert by evil, trusting
# ca), anon (no client cert), evilca (trusting only evil).
make_pki() {
    local srv='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1'
    local cli='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth'
    mkdir -p pki && (
        cd pki || exit 1
        _ca ca "vimg test CA" && _ca evil "untrusted CA" &&
            _leaf server ca localhost "$srv" &&
            _leaf eserver evil localhost "$srv" &&
            _leaf client ca alice "$cli" &&
            _leaf eclient evil mallory "$cli" || exit 1
        mkdir good evil anon evilca
        cp ca-cert.pem good/ && cp client-cert.pem client-key.pem good/
        cp ca-cert.pem evil/
        cp eclient-cert.pem evil/client-cert.pem
        cp eclient-key.pem evil/client-key.pem
        cp ca-cert.pem anon/
        cp evil-cert.pem evilca/ca-cert.pem
    )
}

X509="--tls-cert pki/server-cert.pem --tls-key pki/server-key.pem"

# psk_uri SOCKNAME USER PSKFILE [EXPORT]
psk_uri() {
    echo "nbds+unix://$2@/${4:-}?socket=$T/$1.sock&tls-psk-file=$T/$3"
}

# vnbd_start_tcp NAME [vimg-nbd options...] IMAGE: vimg-nbd on a free
# port of 127.0.0.1.  Sets VNBD_PID and PORT.
vnbd_start_tcp() {
    local name=$1 try i hex
    shift
    for ((try = 0; try < 10; try++)); do
        PORT=$((20000 + RANDOM % 40000))
        hex=$(printf '%04X' "$PORT")
        start_bg "$VIMG_NBD" -b 127.0.0.1 -p "$PORT" "$@" 2>"$T/$name.log"
        VNBD_PID=$!
        for ((i = 0; i < 200; i++)); do
            kill -0 "$VNBD_PID" 2>/dev/null || break
            awk -v p=":$hex" '$4 == "0A" && substr($2, 9) == p { f = 1 }
                              END { exit !f }' /proc/net/tcp && return 0
            sleep 0.05
        done
        wait "$VNBD_PID" 2>/dev/null
    done
    cat "$T/$name.log" >&2
    return 1
}

# tls_version VER URI: nbdinfo --size URI with TLS VER (1.2 or 1.3) the
# only one the client allows; prints the version the key log shows.
tls_version() {
    local off=tls1.2 kl
    [ "$1" = 1.2 ] && off=tls1.3
    kl=$(mktemp "$T/keylog.XXXXXX")
    printf '[overrides]\ndisabled-version = %s\ndisabled-version = tls1.1\ndisabled-version = tls1.0\n' \
        "$off" >"$T/prio.conf"
    GNUTLS_SYSTEM_PRIORITY_FILE=$T/prio.conf SSLKEYLOGFILE=$kl \
        timeout 20 nbdinfo --size "$2" >/dev/null || return 1
    if grep -q '^CLIENT_TRAFFIC_SECRET_0 ' "$kl"; then
        echo 1.3
    elif grep -q '^CLIENT_RANDOM ' "$kl"; then
        echo 1.2
    else
        echo unknown
    fi
}

# The raw probe of a forced-TLS server on SOCKET: every option but
# STARTTLS and ABORT gets ERR_TLS_REQD, ABORT gets ACK; in a second
# connection, EXPORT_NAME before TLS is a hard close.  Prints one line
# per reply: "OPTION 0xTYPE", then "export-name: closed".
nbd_probe_plain() {
    python3 - "$1" <<'EOF'
import socket, struct, sys

IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9

def connect():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sys.argv[1])
    magic, opt, flags = struct.unpack(">QQH", rd(s, 18))
    assert magic == 0x4E42444D41474943 and opt == IHAVEOPT, "bad greeting"
    assert flags & 1, "not fixed newstyle"
    s.sendall(struct.pack(">I", 1))
    return s

def rd(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b

def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

def reply(s):
    magic, opt, typ, ln = struct.unpack(">QIII", rd(s, 20))
    assert magic == REPLY_MAGIC, "bad reply magic"
    rd(s, ln)
    return opt, typ

s = connect()
noname = struct.pack(">IH", 0, 0)
# LIST, INFO, GO, STRUCTURED_REPLY, LIST_META_CONTEXT, an unknown one.
for opt, data in ((3, b""), (6, noname), (7, noname), (8, b""),
                  (9, noname[:4] + struct.pack(">I", 0)), (99, b"")):
    option(s, opt, data)
    o, t = reply(s)
    print("%d 0x%x" % (o, t))
option(s, 2)  # ABORT
o, t = reply(s)
print("%d 0x%x" % (o, t))
s.close()

s = connect()
option(s, 1, b"")  # EXPORT_NAME ""
try:
    rd(s, 1)
    print("export-name: answered")
except EOFError:
    print("export-name: closed")
except ConnectionResetError:
    print("export-name: closed")
EOF
}

@test "PSK: --list and --map work with the key; a wrong key or user is refused" {
    make_psk
    truncate -s 64M d.raw
    printf 'x%.0s' {1..4096} | dd of=d.raw bs=1M seek=1 conv=notrunc status=none
    vnbd_start p -t -f raw -x disk -D "tls disk" --tls-psk psk/keys.psk d.raw
    run timeout 20 nbdinfo --list "$(psk_uri p alice psk/keys.psk)"
    assert_success
    assert_output --partial 'export="disk":'
    assert_output --partial 'description: tls disk'
    assert_output --partial 'with TLS'
    run timeout 20 nbdinfo --map "$(psk_uri p alice psk/keys.psk disk)"
    assert_success
    assert_line --index 0 --regexp '^ +0 +1048576 +3 +hole,zero$'
    assert_line --index 1 --regexp '^ +1048576 +[0-9]+ +0 +data$'

    run timeout 20 nbdinfo --size "$(psk_uri p alice wrong/keys.psk disk)"
    assert_failure
    [ "$status" -ne 124 ]
    run timeout 20 nbdinfo --size "$(psk_uri p bob wrong/bob.psk disk)"
    assert_failure
    [ "$status" -ne 124 ]
    # Also in TLS 1.2 (the wrong key shows in the Finished MAC there).
    printf '[overrides]\ndisabled-version = tls1.3\n' >no13.conf
    run env GNUTLS_SYSTEM_PRIORITY_FILE=no13.conf timeout 20 \
        nbdinfo --size "$(psk_uri p alice wrong/keys.psk disk)"
    assert_failure
    [ "$status" -ne 124 ]

    # The server is still there for the right key.
    run timeout 20 nbdinfo --size "$(psk_uri p alice psk/keys.psk disk)"
    assert_success
    assert_output 67108864
    grep -q 'TLS handshake' "$T/p.log"
    vnbd_stop
}

@test "x509 without --tls-ca: the client verifies the server's certificate" {
    make_pki
    truncate -s 16M d.raw
    vnbd_start_tcp t -t -f raw $X509 d.raw
    run timeout 20 nbdinfo --size "nbds://localhost:$PORT/?tls-certificates=$T/pki/anon"
    assert_success
    assert_output 16777216
    # A client certificate is not asked for, and is harmless.
    run timeout 20 nbdinfo --size "nbds://localhost:$PORT/?tls-certificates=$T/pki/good"
    assert_success
    # A client that trusts only the other CA refuses the server.
    run timeout 20 nbdinfo --size "nbds://localhost:$PORT/?tls-certificates=$T/pki/evilca"
    assert_failure
    [ "$status" -ne 124 ]
    assert_output --partial 'certificate'
    # nbdinfo over a unix socket does not verify by default; it works.
    vnbd_stop
    vnbd_start u -t -f raw $X509 d.raw
    run timeout 20 nbdinfo --size "nbds+unix:///?socket=$T/u.sock&tls-certificates=$T/pki/anon"
    assert_success
    vnbd_stop
}

@test "x509 with an untrusted server certificate is refused by the client" {
    make_pki
    truncate -s 16M d.raw
    vnbd_start_tcp t -t -f raw --tls-cert pki/eserver-cert.pem \
        --tls-key pki/eserver-key.pem d.raw
    run timeout 20 nbdinfo --size "nbds://localhost:$PORT/?tls-certificates=$T/pki/anon"
    assert_failure
    [ "$status" -ne 124 ]
    assert_output --partial 'certificate'
    vnbd_stop
}

@test "x509 with --tls-ca: only client certificates signed by the CA get in" {
    make_pki
    truncate -s 16M d.raw
    vnbd_start c -t -f raw $X509 --tls-ca pki/ca-cert.pem d.raw
    run timeout 20 nbdinfo --size "nbds+unix:///?socket=$T/c.sock&tls-certificates=$T/pki/good"
    assert_success
    assert_output 16777216
    run timeout 20 nbdinfo --size "nbds+unix:///?socket=$T/c.sock&tls-certificates=$T/pki/anon"
    assert_failure
    [ "$status" -ne 124 ]
    run timeout 20 nbdinfo --size "nbds+unix:///?socket=$T/c.sock&tls-certificates=$T/pki/evil"
    assert_failure
    [ "$status" -ne 124 ]
    run timeout 20 nbdinfo --size "nbds+unix:///?socket=$T/c.sock&tls-certificates=$T/pki/good"
    assert_success
    grep -q 'peer did not return a certificate' "$T/c.log"
    grep -q 'certificate verify failed' "$T/c.log"
    vnbd_stop
}

@test "plaintext clients are refused: ERR_TLS_REQD, ABORT is ACKed" {
    make_psk
    truncate -s 16M d.raw
    vnbd_start p -t -f raw --tls-psk psk/keys.psk d.raw
    run timeout 20 nbdinfo --size "$U"
    assert_failure
    [ "$status" -ne 124 ]
    run nbd_probe_plain "$T/p.sock"
    assert_success
    assert_output "3 0x80000005
6 0x80000005
7 0x80000005
8 0x80000005
9 0x80000005
99 0x80000005
2 0x1
export-name: closed"
    run timeout 20 nbdinfo --size "$(psk_uri p alice psk/keys.psk)"
    assert_success
    vnbd_stop
}

@test "nbdcopy -C 4 copies 64 MiB into a TLS export and back, byte for byte" {
    make_psk
    make_pki
    head -c 64M /dev/urandom >in.raw
    truncate -s 64M w.raw
    vnbd_start w -t -e 4 -f raw --tls-psk psk/keys.psk w.raw
    timeout 120 nbdcopy -C 4 in.raw "$(psk_uri w alice psk/keys.psk)"
    timeout 120 nbdcopy -C 4 "$(psk_uri w alice psk/keys.psk)" out.raw
    cmp in.raw out.raw
    cmp in.raw w.raw
    vnbd_stop

    # The same with x509 and a client certificate.
    truncate -s 0 w.raw && truncate -s 64M w.raw
    vnbd_start x -t -e 4 -f raw $X509 --tls-ca pki/ca-cert.pem w.raw
    local u="nbds+unix:///?socket=$T/x.sock&tls-certificates=$T/pki/good"
    timeout 120 nbdcopy -C 4 in.raw "$u"
    timeout 120 nbdcopy -C 4 "$u" out2.raw
    cmp in.raw out2.raw
    cmp in.raw w.raw
    vnbd_stop
}

@test "TLS 1.3 and TLS 1.2 both work, with PSK and with x509" {
    make_psk
    make_pki
    truncate -s 16M d.raw
    vnbd_start p -t -f raw --tls-psk psk/keys.psk d.raw
    run tls_version 1.3 "$(psk_uri p alice psk/keys.psk)"
    assert_success
    assert_output 1.3
    run tls_version 1.2 "$(psk_uri p alice psk/keys.psk)"
    assert_success
    assert_output 1.2
    vnbd_stop
    vnbd_start x -t -f raw $X509 --tls-ca pki/ca-cert.pem d.raw
    local u="nbds+unix:///?socket=$T/x.sock&tls-certificates=$T/pki/good"
    run tls_version 1.3 "$u"
    assert_success
    assert_output 1.3
    run tls_version 1.2 "$u"
    assert_success
    assert_output 1.2
    vnbd_stop
}

@test "qemu-img compare reads a TLS export (PSK and x509)" {
    requires qemu-img
    make_psk
    make_pki
    head -c 8M /dev/urandom >in.raw
    vnbd_start p -t -f raw -r --tls-psk psk/keys.psk in.raw
    timeout 60 qemu-img compare \
        --object tls-creds-psk,id=tls0,endpoint=client,dir=psk,username=alice \
        --image-opts \
        "driver=nbd,server.type=unix,server.path=$T/p.sock,tls-creds=tls0" \
        "driver=file,filename=in.raw"
    vnbd_stop
    vnbd_start x -t -f raw -r $X509 --tls-ca pki/ca-cert.pem in.raw
    timeout 60 qemu-img compare \
        --object tls-creds-x509,id=tls0,endpoint=client,dir=pki/good \
        --image-opts \
        "driver=nbd,server.type=unix,server.path=$T/x.sock,tls-creds=tls0,tls-hostname=localhost" \
        "driver=file,filename=in.raw"
    vnbd_stop
}

# A client that resumes its TLS session (python's ssl, OpenSSL): with
# --tls-ca, OpenSSL refuses resumption unless the server set a session id
# context.  nbd_resume SOCKET CERTDIR TLSv1_2|TLSv1_3 prints, for two
# connections, the version, "new"/"reused", and the first LIST reply.
nbd_resume() {
    python3 - "$@" <<'PY'
import socket, ssl, struct, sys

IHAVEOPT = 0x49484156454F5054

def rd(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[sys.argv[3]]
ctx.load_verify_locations(sys.argv[2] + "/ca-cert.pem")
ctx.load_cert_chain(sys.argv[2] + "/client-cert.pem",
                    sys.argv[2] + "/client-key.pem")
sess = None
for i in range(2):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sys.argv[1])
    rd(s, 18)
    s.sendall(struct.pack(">I", 1))
    s.sendall(struct.pack(">QII", IHAVEOPT, 5, 0))  # STARTTLS
    assert struct.unpack(">QIII", rd(s, 20))[2] == 1, "STARTTLS not ACKed"
    t = ctx.wrap_socket(s, server_hostname="localhost", session=sess)
    t.sendall(struct.pack(">QII", IHAVEOPT, 3, 0))  # LIST
    typ = struct.unpack(">QIII", rd(t, 20))[2]
    print(t.version(), "reused" if t.session_reused else "new", hex(typ))
    sess = t.session
    t.sendall(struct.pack(">QII", IHAVEOPT, 2, 0))  # ABORT
    t.close()
PY
}

@test "x509 with --tls-ca: a client may resume its TLS session" {
    make_pki
    truncate -s 16M d.raw
    vnbd_start c -t -f raw $X509 --tls-ca pki/ca-cert.pem d.raw
    run nbd_resume "$T/c.sock" "$T/pki/good" TLSv1_2
    assert_success
    assert_output "TLSv1.2 new 0x2
TLSv1.2 reused 0x2"
    run nbd_resume "$T/c.sock" "$T/pki/good" TLSv1_3
    assert_success
    assert_output "TLSv1.3 new 0x2
TLSv1.3 reused 0x2"
    vnbd_stop
}
