#!/usr/bin/env bats
# vimg stream-local and vimg rebase, with qemu-img and qemu-io as the
# oracles: the image reads the same before and after, the backing link
# is what was asked, the images stay clean, and stream-local survives
# kill -9 at any moment.
load ../helpers

setup() {
    T=$(mktemp -d "${BATS_TMPDIR:-/tmp}/vimg-test.XXXXXX")
    BG_PIDS=()
    cd "$T" || return 1
    requires qemu-img qemu-io jq
}

# base <- mid <- top, with a zero cluster in mid over base data.
make_chain3() {
    qemu-img create -q -f qcow2 base.qcow2 8M
    qemu-io -f qcow2 -c 'write -P 0x11 0 2M' -c 'write -P 0x12 6M 1M' \
        base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
    qemu-io -f qcow2 -c 'write -P 0x21 1M 1M' -c 'write -z 6M 64k' \
        mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
    qemu-io -f qcow2 -c 'write -P 0x31 1536k 100k' top.qcow2 >/dev/null
    qemu-img convert -O raw top.qcow2 before.raw
}

backing_of() {
    qemu-img info --output=json "$1" | jq -r '.["backing-filename"] // "none"'
}

@test "stream-local makes the top independent of its chain" {
    make_chain3
    run "$VIMG" stream-local top.qcow2
    assert_success
    assert_equal "$(backing_of top.qcow2)" none
    run qemu-img compare -f qcow2 -F raw top.qcow2 before.raw
    assert_success
    assert_qemu_check_clean top.qcow2
    # The chain below is untouched and the top no longer needs it.
    rm base.qcow2 mid.qcow2
    run qemu-io -r -f qcow2 -c 'read -P 0x11 0 1M' -c 'read -P 0 6M 64k' \
        -c 'read -P 0x12 6208k 960k' top.qcow2
    assert_success
    refute_output --partial "verification failed"
}

@test "stream-local does not allocate what no layer holds" {
    make_chain3
    run "$VIMG" stream-local -q top.qcow2
    assert_success
    # 8 MiB image, data in at most 2M + 1M + 100k: nothing past 7M.
    [ "$(qemu-img map --output=json top.qcow2 | jq '[.[] | select(.data and .start >= 7340032)] | length')" -eq 0 ]
}

@test "stream-local -b keeps the base and copies only the layers above" {
    make_chain3
    run "$VIMG" stream-local -q -b base.qcow2 top.qcow2
    assert_success
    assert_equal "$(backing_of top.qcow2)" base.qcow2
    assert_equal "$(qemu-img info --output=json top.qcow2 | jq -r '.["backing-filename-format"]')" qcow2
    run qemu-img compare -f qcow2 -F raw top.qcow2 before.raw
    assert_success
    assert_qemu_check_clean top.qcow2
    # Base data was not copied: the first MiB still comes from base.
    [ "$(qemu-img map --output=json top.qcow2 | jq '.[0].depth')" -eq 1 ]
}

@test "stream-local -b with the current backing file changes nothing but data" {
    make_chain3
    run "$VIMG" stream-local -q -b mid.qcow2 top.qcow2
    assert_success
    assert_equal "$(backing_of top.qcow2)" mid.qcow2
    run qemu-img compare -f qcow2 -F raw top.qcow2 before.raw
    assert_success
}

@test "stream-local errors: base not in chain, missing file" {
    make_chain3
    cp top.qcow2 top.orig
    run_split "$VIMG" stream-local -b nosuch.qcow2 top.qcow2
    assert_one_line_error
    cmp top.qcow2 top.orig
    run_split "$VIMG" stream-local nosuch.qcow2
    assert_one_line_error
}

@test "kill -9 during stream-local: the image stays valid, a rerun finishes" {
    qemu-img create -q -f qcow2 base.qcow2 256M
    qemu-io -f qcow2 -c 'write -P 0x5a 0 160M' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    qemu-io -f qcow2 -c 'write -P 0x6b 100M 1M' top.qcow2 >/dev/null
    qemu-img convert -O raw top.qcow2 before.raw
    local i pid
    for i in 1 2 3 4; do
        "$VIMG" stream-local -q top.qcow2 &
        pid=$!
        sleep "0.0$((RANDOM % 9 + 1))"
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        run qemu-img check top.qcow2
        [ "$status" -eq 0 ] || [ "$status" -eq 3 ]
        run qemu-img compare -f qcow2 -F raw top.qcow2 before.raw
        assert_success
    done
    run "$VIMG" stream-local -q top.qcow2
    assert_success
    assert_equal "$(backing_of top.qcow2)" none
    run qemu-img compare -f qcow2 -F raw top.qcow2 before.raw
    assert_success
}

@test "rebase -u only rewrites the link" {
    make_chain3
    cp top.qcow2 top.orig
    run "$VIMG" rebase -u -b base.qcow2 -F qcow2 top.qcow2
    assert_success
    assert_equal "$(backing_of top.qcow2)" base.qcow2
    # No data was copied: top's own allocation is unchanged.
    assert_equal "$(qemu-img map --output=json top.qcow2 | jq -c '[.[] | select(.depth == 0)]')" \
        "$(qemu-img map --output=json top.orig | jq -c '[.[] | select(.depth == 0)]')"
}

@test "rebase (safe) to another backing file keeps the content" {
    make_chain3
    qemu-img create -q -f qcow2 other.qcow2 8M
    qemu-io -f qcow2 -c 'write -P 0x77 0 8M' other.qcow2 >/dev/null
    run "$VIMG" rebase -b other.qcow2 -F qcow2 top.qcow2
    assert_success
    assert_equal "$(backing_of top.qcow2)" other.qcow2
    run qemu-img compare -f qcow2 -F raw top.qcow2 before.raw
    assert_success
    assert_qemu_check_clean top.qcow2
}

@test "rebase (safe) writes only what differs, like qemu-img rebase" {
    make_chain3
    # The new base equals the old chain below top except in one MiB.
    qemu-img convert -O qcow2 mid.qcow2 flat.qcow2
    qemu-io -f qcow2 -c 'write -P 0x99 4M 1M' flat.qcow2 >/dev/null
    mkdir q && cp top.qcow2 mid.qcow2 base.qcow2 flat.qcow2 q/
    (cd q && qemu-img rebase -q -b flat.qcow2 -F qcow2 top.qcow2)
    run "$VIMG" rebase -q -b flat.qcow2 -F qcow2 top.qcow2
    assert_success
    run qemu-img compare -f qcow2 -F raw top.qcow2 before.raw
    assert_success
    # The same ranges allocated as in qemu-img's result: the top's own
    # data plus the differing MiB only.  (Where the old chain read zeroes
    # vimg writes a zero cluster and qemu-img writes zero-filled data, so
    # the "zero" flag may differ.)
    assert_equal "$(qemu-img map --output=json top.qcow2 | jq -c '[.[] | select(.depth == 0) | [.start, .length]]')" \
        "$(qemu-img map --output=json q/top.qcow2 | jq -c '[.[] | select(.depth == 0) | [.start, .length]]')"
}

@test "rebase to a shorter backing file and data where the old had none" {
    make_chain3
    qemu-img create -q -f qcow2 short.qcow2 4M
    qemu-io -f qcow2 -c 'write -P 0x44 3M 1M' short.qcow2 >/dev/null
    run "$VIMG" rebase -q -b short.qcow2 -F qcow2 top.qcow2
    assert_success
    run qemu-img compare -f qcow2 -F raw top.qcow2 before.raw
    assert_success
}

@test "rebase -b '' flattens" {
    make_chain3
    run "$VIMG" rebase -q -b '' top.qcow2
    assert_success
    assert_equal "$(backing_of top.qcow2)" none
    run qemu-img compare -f qcow2 -F raw top.qcow2 before.raw
    assert_success
    assert_qemu_check_clean top.qcow2
}

@test "rebase errors: no -F, missing new backing file, no -b" {
    make_chain3
    cp top.qcow2 top.orig
    run_split "$VIMG" rebase -b base.qcow2 top.qcow2
    assert_one_line_error
    [[ $stderr == *"backing format must be specified"* ]]
    run_split "$VIMG" rebase -b nosuch.qcow2 -F qcow2 top.qcow2
    assert_one_line_error
    [[ $stderr == *"Could not open new backing file 'nosuch.qcow2'"* ]]
    cmp top.qcow2 top.orig
    run_split "$VIMG" rebase top.qcow2
    assert_one_line_error
}
