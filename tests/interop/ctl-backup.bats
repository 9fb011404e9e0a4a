#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg-ctl against vimg-nbd: the README's nightly incremental backup
# recipe run as written (daemon line, bitmap and full backup, the
# crontab line on two nights, the restore), the same chain by hand
# checked against the live disk read over NBD with qemu-img compare,
# and the failures a crontab line must see: exit 1 and one line.
load ../helpers
bats_require_minimum_version 1.5.0

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io jq
    VIMG_CTL=$VIMG_BUILD/vimg-ctl
    mkdir -p "$T/bin" "$T/run" "$T/vm" "$T/backup"
    # Fakes for the crontab line: date prints $T/today, mail keeps its
    # input.
    printf '#!/bin/sh\ncat %q\n' "$T/today" >"$T/bin/date"
    printf '#!/bin/sh\ncat >>%q\n' "$T/mail.txt" >"$T/bin/mail"
    chmod +x "$T/bin/date" "$T/bin/mail"
    RPATH=$T/bin:$VIMG_BUILD:$PATH
}

# readme_blocks: the fenced blocks of the README's recipe, one per
# line, continuation lines joined, with its paths moved under $T.
readme_blocks() {
    awk '/^## Nightly incremental backup with cron/ { on = 1; next }
         on && /^## / { exit }
         on && /^```/ { inb = !inb; if (!inb) print "----"; next }
         on && inb { print }' "$VIMG_SRC/README.md" |
        sed -e ':a' -e '/\\$/N; s/\\\n *//; ta' \
            -e "s#/run/vimg/#$T/run/#g; s#/var/lib/vm/#$T/vm/#g" \
            -e "s#/backup/#$T/backup/#g"
}

# block N: the lines of the Nth block (from 1).
block() {
    readme_blocks | awk -v n="$1" '$0 == "----" { i++; next } i == n - 1'
}

# start_daemon LINE: run the daemon command line in the background.
# Sets DPID, S (its QMP socket) and U (the NBD URI of export d0).
start_daemon() {
    PATH=$RPATH bash -c "exec $1" 2>"$T/d.log" &
    DPID=$!
    BG_PIDS+=("$DPID")
    S=$T/run/qmp.sock
    _wait_socket "$S" "$DPID" || {
        cat "$T/d.log" >&2
        return 1
    }
    U="nbd+unix:///d0?socket=$T/run/nbd.sock"
}

# nbd_write ARGS...: qemu-io writes through the daemon's export.
nbd_write() {
    local c=()
    for a in "$@"; do c+=(-c "write $a"); done
    qemu-io -f raw "${c[@]}" "$U" >/dev/null
}

# data_bytes IMG: bytes allocated with data in IMG's own layer.
data_bytes() {
    qemu-img map -U --output=json "$1" |
        jq '[.[] | select(.data and .depth == 0) | .length] | add // 0'
}

@test "README: nightly incremental backup with cron, as written" {
    local daemon bitmap full cron
    daemon=$(block 1)
    bitmap=$(block 2 | sed -n 1p)
    full=$(block 2 | sed -n 2p)
    cron=$(block 3)
    [[ $daemon == vimg-nbd\ --qmp* ]]
    [[ $bitmap == *block-dirty-bitmap-add* ]]
    [[ $full == *"backup d0"*"--sync full"*"--wait"* ]]
    [[ $cron == "0 2 * * * vimg-ctl "*"--sync incremental"*"--wait ||"* ]]
    cron=${cron#0 2 \* \* \* } # what cron runs

    qemu-img create -f qcow2 "$T/vm/d0.qcow2" 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x11 0 8M' -c 'write -P 0x12 40M 2M' \
        "$T/vm/d0.qcow2" >/dev/null
    start_daemon "$daemon"
    PATH=$RPATH bash -c "$bitmap"
    PATH=$RPATH bash -c "$full"
    qemu-img compare -U "$T/backup/d0-full.qcow2" "$U"

    # Night 1.
    nbd_write '-P 0x22 4M 1M' '-z 40M 64k'
    echo 2024-06-02 >"$T/today"
    PATH=$RPATH bash -c "$cron"
    [ ! -e "$T/mail.txt" ]
    [ "$(data_bytes "$T/backup/d0-2024-06-02.qcow2")" = $((1024 * 1024)) ]
    # Night 2.
    nbd_write '-P 0x33 20M 64k' '-P 0x34 60M 128k'
    echo 2024-06-03 >"$T/today"
    PATH=$RPATH bash -c "$cron"
    [ ! -e "$T/mail.txt" ]
    [ "$(data_bytes "$T/backup/d0-2024-06-03.qcow2")" = $((192 * 1024)) ]

    # Restore as the README says, and compare with the live disk.
    (cd "$T/backup" && block 4 | PATH=$RPATH bash -e)
    qemu-img compare "$T/backup/restored.qcow2" "$U"
    vnbd_stop "$DPID"
    qemu-img compare "$T/backup/restored.qcow2" "$T/vm/d0.qcow2"
    qemu-img check "$T/vm/d0.qcow2"
}

@test "full then incremental backup by hand, restored by rebase" {
    qemu-img create -f qcow2 "$T/vm/d0.qcow2" 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x11 0 8M' "$T/vm/d0.qcow2" >/dev/null
    start_daemon "vimg-nbd --qmp $T/run/qmp.sock \
        --blockdev driver=qcow2,node-name=d0,file.driver=file,file.filename=$T/vm/d0.qcow2 \
        --nbd-server addr.type=unix,addr.path=$T/run/nbd.sock \
        --export type=nbd,id=e0,node-name=d0,writable=on"
    "$VIMG_CTL" -s "$S" block-dirty-bitmap-add node=d0 name=b0 \
        persistent=true
    nbd_write '-P 0x21 1M 64k'
    cd "$T/backup"
    run_split "$VIMG_CTL" -s "$S" backup d0 full.qcow2 --sync full --wait
    assert_equal "$status" 0
    assert_equal "$output$stderr" ""
    qemu-img compare -U full.qcow2 "$U"

    "$VIMG_CTL" -s "$S" events >"$T/events.jsonl" &
    local epid=$!
    BG_PIDS+=("$epid")
    sleep 1
    nbd_write '-P 0x22 4M 1M' '-P 0x23 30M 64k'
    run_split "$VIMG_CTL" -s "$S" backup d0 inc1.qcow2 --sync incremental \
        --bitmap b0 --wait --progress
    assert_equal "$status" 0
    assert_equal "$output" ""
    [[ ${stderr##*$'\n'} == "d0: 100%" ]]
    # The full backup did not clear b0: the increment also holds the
    # 64k written before it.
    [ "$(data_bytes inc1.qcow2)" = $(((1024 + 128) * 1024)) ]
    qemu-img rebase -u -b full.qcow2 -F qcow2 inc1.qcow2
    qemu-img compare inc1.qcow2 "$U"

    kill "$epid"
    jq -e -s 'map(select(.event == "BLOCK_JOB_COMPLETED" and
                         .data.device == "d0" and .data.type == "backup" and
                         (.data | has("error") | not))) | length == 1' \
        "$T/events.jsonl"
    jq -e -s 'map(select(.event == "JOB_STATUS_CHANGE") | .data.status) |
              index("concluded") != null' "$T/events.jsonl"
    # The bitmap was cleared by the incremental backup.
    run "$VIMG_CTL" -s "$S" query-named-block-nodes
    [ "$(jq '.[] | select(.["node-name"] == "d0") |
            .["dirty-bitmaps"][0].count' <<<"$output")" = 0 ]
    vnbd_stop "$DPID"
}

@test "a failed backup exits 1 with one line; the crontab line alerts" {
    local cron
    cron=$(block 3)
    cron=${cron#0 2 \* \* \* }
    qemu-img create -f qcow2 "$T/vm/d0.qcow2" 64M >/dev/null
    start_daemon "$(block 1)"
    "$VIMG_CTL" -s "$S" block-dirty-bitmap-add node=d0 name=nightly \
        persistent=true
    run_split "$VIMG_CTL" -s "$S" backup d0 "$T/nodir/x.qcow2" --wait
    assert_one_line_error
    [[ $stderr == "vimg-ctl: backup: "*"nodir/x.qcow2"* ]]
    run_split "$VIMG_CTL" -s "$S" backup d0 x.qcow2 --sync incremental \
        --bitmap nosuch --wait
    assert_one_line_error
    [[ $stderr == "vimg-ctl: backup: "*nosuch* ]]

    # The crontab line with its backup folder gone: mail is sent.
    rmdir "$T/backup"
    echo 2024-06-02 >"$T/today"
    run_split env PATH="$RPATH" bash -c "$cron"
    assert_equal "$status" 0 # mail's status
    [[ $stderr == "vimg-ctl: backup: "* ]]
    [ "$(cat "$T/mail.txt")" = "backup of d0 failed" ]
    vnbd_stop "$DPID"
}

@test "wait: failed, cancelled, concluded and unknown jobs" {
    requires qemu-nbd
    qemu-img create -f qcow2 "$T/vm/d0.qcow2" 64M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x11 0 32M' "$T/vm/d0.qcow2" >/dev/null
    qemu-img create -f raw t.raw 64M >/dev/null
    qnbd_start t -f raw t.raw
    local qpid=${BG_PIDS[-1]}
    start_daemon "$(block 1)"

    # A job whose target (an NBD export) goes away: its error is printed.
    "$VIMG_CTL" -s "$S" blockdev-add driver=raw node-name=t0 \
        file.driver=nbd file.server.type=unix file.server.path="$T/t.sock"
    "$VIMG_CTL" -s "$S" blockdev-backup job-id=bj device=d0 target=t0 \
        sync=full speed=4194304
    run "$VIMG_CTL" -s "$S" jobs
    assert_line --regexp '^bj +backup +running '
    timeout 60 "$VIMG_CTL" -s "$S" wait bj 2>"$T/wait.err" &
    local wpid=$!
    sleep 1
    kill "$qpid"
    local rc=0
    wait "$wpid" || rc=$?
    [ "$rc" = 1 ]
    [ "$(wc -l <"$T/wait.err")" = 1 ]
    grep -q '^vimg-ctl: job bj: ' "$T/wait.err"

    # A cancelled job.
    "$VIMG_CTL" -s "$S" drive-backup job-id=c1 device=d0 \
        target="$T/c1.qcow2" sync=full format=qcow2 speed=1048576
    timeout 60 "$VIMG_CTL" -s "$S" wait c1 2>"$T/wait.err" &
    wpid=$!
    sleep 0.5
    "$VIMG_CTL" -s "$S" job-cancel id=c1
    rc=0
    wait "$wpid" || rc=$?
    [ "$rc" = 1 ]
    [ "$(cat "$T/wait.err")" = "vimg-ctl: job c1: cancelled" ]

    # A job that concluded and waits for job-dismiss; then gone.
    "$VIMG_CTL" -s "$S" drive-backup job-id=k1 device=d0 \
        target="$T/k1.qcow2" sync=full format=qcow2 auto-dismiss=false
    timeout 60 "$VIMG_CTL" -s "$S" wait k1
    run "$VIMG_CTL" -s "$S" jobs
    assert_line --regexp '^k1 +backup +concluded +100%$'
    timeout 60 "$VIMG_CTL" -s "$S" wait k1
    "$VIMG_CTL" -s "$S" job-dismiss id=k1
    run_split "$VIMG_CTL" -s "$S" wait k1
    assert_equal "$status" 2
    assert_equal "$stderr" "vimg-ctl: wait: job 'k1' not found"
    qemu-img compare -U "$T/k1.qcow2" "$T/vm/d0.qcow2"

    # backup without --wait prints the job id.
    run_split "$VIMG_CTL" -s "$S" backup d0 b2.qcow2 --job-id b2
    assert_equal "$status" 0
    assert_equal "$output" b2
    vnbd_stop "$DPID"
}

@test "mirror: completes, or fails cleanly where the server lacks it" {
    qemu-img create -f qcow2 "$T/vm/d0.qcow2" 16M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x11 0 4M' "$T/vm/d0.qcow2" >/dev/null
    start_daemon "$(block 1)"
    run_split "$VIMG_CTL" -s "$S" mirror d0 "$T/nodir/m.qcow2" --complete
    assert_one_line_error
    if ! "$VIMG_CTL" -s "$S" query-commands | grep -q '"drive-mirror"'; then
        run_split "$VIMG_CTL" -s "$S" mirror d0 m.qcow2 --complete
        assert_one_line_error
        assert_equal "$stderr" "vimg-ctl: mirror: The command drive-mirror has not been found"
    else
        run_split "$VIMG_CTL" -s "$S" mirror d0 m.qcow2 --complete
        assert_equal "$status" 0
        qemu-img compare -U m.qcow2 "$U"
    fi
    vnbd_stop "$DPID"
}
