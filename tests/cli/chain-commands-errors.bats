#!/usr/bin/env bats
# Bad input for commit, stream-local and rebase: wrong formats, read-only
# (immutable) images, bad options.  Each gives one error line, exit 1,
# and leaves every image byte-identical.
load ../helpers

setup() {
    T=$(mktemp -d "${BATS_TMPDIR:-/tmp}/vimg-test.XXXXXX")
    BG_PIDS=()
    cd "$T" || return 1
    requires qemu-img qemu-io
    qemu-img create -q -f qcow2 base.qcow2 4M
    qemu-io -f qcow2 -c 'write -P 1 0 1M' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    qemu-io -f qcow2 -c 'write -P 2 512k 1M' top.qcow2 >/dev/null
    cp base.qcow2 base.orig
    cp top.qcow2 top.orig
}

teardown() {
    chattr -i base.qcow2 top.qcow2 2>/dev/null || true
    cd / && rm -rf "$T"
}

unchanged() {
    cmp base.qcow2 base.orig && cmp top.qcow2 top.orig
}

@test "a wrong -f: one line, images untouched" {
    run_split "$VIMG" commit -f raw top.qcow2
    assert_one_line_error
    run_split "$VIMG" stream-local -f raw top.qcow2
    assert_one_line_error
    run_split "$VIMG" rebase -f raw -u -b base.qcow2 -F qcow2 top.qcow2
    assert_one_line_error
    run_split "$VIMG" commit -f nosuchfmt top.qcow2
    assert_one_line_error
    unchanged
}

@test "an immutable base refuses commit; the top is untouched" {
    requires chattr
    chattr +i base.qcow2 || skip "chattr +i not supported here"
    run_split "$VIMG" commit top.qcow2
    assert_one_line_error
    chattr -i base.qcow2
    unchanged
    run qemu-img compare top.qcow2 top.orig
    assert_success
}

@test "an immutable top refuses stream-local and rebase" {
    requires chattr
    chattr +i top.qcow2 || skip "chattr +i not supported here"
    run_split "$VIMG" stream-local top.qcow2
    assert_one_line_error
    run_split "$VIMG" rebase -b '' top.qcow2
    assert_one_line_error
    run_split "$VIMG" rebase -u -b base.qcow2 -F qcow2 top.qcow2
    assert_one_line_error
    chattr -i top.qcow2
    unchanged
}

@test "bad options and missing arguments: one line" {
    run_split "$VIMG" commit
    assert_one_line_error
    run_split "$VIMG" commit --bogus top.qcow2
    assert_one_line_error
    run_split "$VIMG" stream-local -b
    assert_one_line_error
    run_split "$VIMG" rebase -u top.qcow2
    assert_one_line_error
    run_split "$VIMG" rebase -b base.qcow2 -F qcow2 top.qcow2 extra
    assert_one_line_error
    unchanged
}

@test "-b naming the image itself is refused" {
    run_split "$VIMG" commit -b top.qcow2 top.qcow2
    assert_one_line_error
    run_split "$VIMG" stream-local -b top.qcow2 top.qcow2
    assert_one_line_error
    unchanged
}
