# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-nbd's program options: --help, -V, and option errors.  Every
# error must be one line on stderr, exit 1, and leave no socket behind.
load ../helpers
bats_require_minimum_version 1.5.0

setup_file() {
    export LONG_OPTS="help version read-only export-name description format
        image-opts socket bind port shared persistent bitmap allocation-depth
        fork pid-file tls-cert tls-key tls-ca tls-psk handshake-timeout
        max-connections workers blockdev nbd-server export"
}

# A small qcow2 image in $T.
mkimg() {
    "$VIMG" create -q -f qcow2 "${1:-d.qcow2}" 1M
}

# run_split vimg-nbd -k $T/s.sock ARGS..., then check the error is one
# line matching REGEX and no socket was left.  nbd_fails REGEX ARGS...
nbd_fails() {
    local re=$1
    shift
    run_split "$VIMG_NBD" "$@"
    assert_one_line_error
    [[ $stderr =~ $re ]] || {
        echo "stderr '$stderr' does not match '$re'" >&2
        return 1
    }
    [ ! -e "$T/s.sock" ] || {
        echo "socket $T/s.sock left behind" >&2
        return 1
    }
}

@test "--help lists every long option and exits 0" {
    run_split "$VIMG_NBD" --help
    assert_equal "$status" 0
    assert_equal "$stderr" ""
    local o
    for o in $LONG_OPTS; do
        [[ $output == *"--$o"* ]] || {
            echo "--help does not mention --$o" >&2
            return 1
        }
    done
    run_split "$VIMG_NBD" -h
    assert_equal "$status" 0
    [[ ${lines[0]} == Usage:\ vimg-nbd* ]]
}

@test "-V and --version print a version" {
    run_split "$VIMG_NBD" -V
    assert_equal "$status" 0
    assert_output --regexp '^vimg-nbd [0-9]+\.[0-9]+'
    run_split "$VIMG_NBD" --version
    assert_equal "$status" 0
    assert_output --regexp '^vimg-nbd [0-9]+\.[0-9]+'
}

@test "-e abc is refused" {
    mkimg
    nbd_fails "^vimg-nbd: Invalid shared count 'abc'$" -e abc -k "$T/s.sock" d.qcow2
}

@test "--handshake-timeout -1 is refused" {
    mkimg
    nbd_fails "^vimg-nbd: Invalid handshake timeout '-1'$" \
        --handshake-timeout -1 -k "$T/s.sock" d.qcow2
}

@test "--max-connections 0 is refused" {
    mkimg
    nbd_fails "^vimg-nbd: Invalid connection limit '0'$" \
        --max-connections 0 -k "$T/s.sock" d.qcow2
}

@test "--workers 0 (and 65) is refused" {
    mkimg
    nbd_fails "^vimg-nbd: Invalid worker count '0'$" --workers 0 \
        -k "$T/s.sock" d.qcow2
    nbd_fails "^vimg-nbd: Invalid worker count '65'$" --workers 65 \
        -k "$T/s.sock" d.qcow2
}

@test "no image is refused" {
    nbd_fails "^vimg-nbd: Expected one argument" -k "$T/s.sock"
}

@test "two images are refused" {
    mkimg a.qcow2
    mkimg b.qcow2
    nbd_fails "^vimg-nbd: Expected only one argument" -k "$T/s.sock" \
        a.qcow2 b.qcow2
}

@test "an unknown option is refused" {
    mkimg
    nbd_fails "^vimg-nbd: .*bogus" --bogus -k "$T/s.sock" d.qcow2
}

@test "--image-opts with -f is refused" {
    mkimg
    nbd_fails "^vimg-nbd: --image-opts and --format are mutually exclusive$" \
        --image-opts -f qcow2 -k "$T/s.sock" driver=qcow2,file.filename=d.qcow2
}

@test "-k with -p (or -b) is refused" {
    mkimg
    nbd_fails "^vimg-nbd: --socket cannot be used with --bind or --port$" \
        -k "$T/s.sock" -p 10809 d.qcow2
    nbd_fails "^vimg-nbd: --socket cannot be used with --bind or --port$" \
        -k "$T/s.sock" -b 127.0.0.1 d.qcow2
}

@test "a missing image file is refused" {
    nbd_fails "^vimg-nbd: Failed to open 'missing.qcow2': .*No such file" \
        -k "$T/s.sock" -f qcow2 missing.qcow2
}

@test "an unknown --export key is refused" {
    mkimg
    nbd_fails "^vimg-nbd: --export does not support the option 'foo'$" \
        --blockdev driver=qcow2,node-name=n0,file.driver=file,file.filename=d.qcow2 \
        --nbd-server "addr.type=unix,addr.path=$T/s.sock" \
        --export type=nbd,id=e0,node-name=n0,foo=bar
}

@test "--tls-ca without --tls-cert is refused" {
    mkimg
    touch ca.pem
    nbd_fails "^vimg-nbd: --tls-ca needs --tls-cert and --tls-key$" \
        --tls-ca ca.pem -k "$T/s.sock" d.qcow2
}

@test "a non-existent PSK file is refused" {
    mkimg
    nbd_fails "^vimg-nbd: nope.psk: No such file or directory$" \
        --tls-psk nope.psk -k "$T/s.sock" d.qcow2
}

@test "a malformed PSK line is refused" {
    mkimg
    printf 'alice:0011\nbob\n' >bad.psk
    nbd_fails "^vimg-nbd: bad.psk:2: expected username:hexkey$" \
        --tls-psk bad.psk -k "$T/s.sock" d.qcow2
    printf 'alice:zz\n' >hex.psk
    nbd_fails "^vimg-nbd: hex.psk:1: bad hex key$" \
        --tls-psk hex.psk -k "$T/s.sock" d.qcow2
    : >empty.psk
    nbd_fails "^vimg-nbd: empty.psk: no keys$" \
        --tls-psk empty.psk -k "$T/s.sock" d.qcow2
}
