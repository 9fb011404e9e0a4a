#!/usr/bin/env bats
# SPDX-License-Identifier: LGPL-2.1-or-later
# vimg check: qemu-img 7.2's human summary, JSON keys and repair report.

load ../helpers

MKDAMAGE="python3 $VIMG_SRC/tests/data/mkdamage.py"

eval "helpers_$(declare -f setup)"
setup() {
    helpers_setup
    requires qemu-img qemu-io python3 jq
    qemu-img create -q -f qcow2 good.qcow2 64M
    qemu-io -c "write -P 0x11 0 1M" -c "write 10M 64k" good.qcow2 >/dev/null
}

@test "human output of a clean image" {
    run_split "$VIMG" check good.qcow2
    [ "$status" -eq 0 ]
    [ "$output" = "No errors were found on the image.
17/1024 = 1.66% allocated, 0.00% fragmented, 0.00% compressed clusters
Image end offset: 1441792" ]
}

@test "human output with leaks and corruptions" {
    $MKDAMAGE leak-corrupt good.qcow2 d.qcow2
    run_split "$VIMG" check d.qcow2
    [ "$status" -eq 2 ]
    [ "$output" = "
2 errors were found on the image.
Data may be corrupted, or further writes to the image may corrupt it.

3 leaked clusters were found on the image.
This means waste of disk space, but no harm to data.
17/1024 = 1.66% allocated, 0.00% fragmented, 0.00% compressed clusters
Image end offset: 1638400" ]
    [[ $stderr == *"ERROR cluster 5 refcount=0 reference=1"* ]]
    [[ $stderr == *"Leaked cluster 23 refcount=1 reference=0"* ]]
}

@test "JSON: keys as qemu-img prints them, zero counters left out" {
    run_split "$VIMG" check --output=json good.qcow2
    [ "$status" -eq 0 ]
    [ "$output" = '{
    "image-end-offset": 1441792,
    "total-clusters": 1024,
    "check-errors": 0,
    "allocated-clusters": 17,
    "filename": "good.qcow2",
    "format": "qcow2"
}' ]
    $MKDAMAGE leak-corrupt good.qcow2 d.qcow2
    run_split "$VIMG" check --output=json d.qcow2
    [ "$status" -eq 2 ]
    [ "$(jq -c 'keys_unsorted' <<<"$output")" = \
        '["image-end-offset","total-clusters","corruptions","check-errors","leaks","allocated-clusters","filename","format"]' ]
    [ "$(jq .leaks <<<"$output")" -eq 3 ]
    [ "$(jq .corruptions <<<"$output")" -eq 2 ]
}

@test "JSON of a compressed image" {
    qemu-img convert -c -O qcow2 good.qcow2 c.qcow2
    run_split "$VIMG" check --output=json c.qcow2
    [ "$status" -eq 0 ]
    [ "$(jq -c 'keys_unsorted' <<<"$output")" = \
        '["image-end-offset","compressed-clusters","total-clusters","check-errors","allocated-clusters","filename","format","fragmented-clusters"]' ]
    [ "$(jq '.["compressed-clusters"]' <<<"$output")" -eq 17 ]
}

@test "repair report, human and JSON" {
    $MKDAMAGE leak-corrupt good.qcow2 d.qcow2
    cp d.qcow2 j.qcow2
    run_split "$VIMG" check -r all d.qcow2
    [ "$status" -eq 0 ]
    [ "$output" = "The following inconsistencies were found and repaired:

    3 leaked clusters
    1 corruptions

Double checking the fixed image now...
No errors were found on the image.
17/1024 = 1.66% allocated, 0.00% fragmented, 0.00% compressed clusters
Image end offset: 1572864" ]
    [[ $stderr == *"Rebuilding refcount structure"* ]]
    run_split "$VIMG" check -r all --output=json j.qcow2
    [ "$status" -eq 0 ]
    [ "$(jq '.["leaks-fixed"]' <<<"$output")" -eq 3 ]
    [ "$(jq '.["corruptions-fixed"]' <<<"$output")" -eq 1 ]
    [ "$(jq 'has("leaks")' <<<"$output")" = false ]
}

@test "COPIED flag findings" {
    $MKDAMAGE copied-clear good.qcow2 d.qcow2
    run_split "$VIMG" check d.qcow2
    [ "$status" -eq 2 ]
    [ "$stderr" = "ERROR OFLAG_COPIED data cluster: l2_entry=50000 refcount=1" ]
    run_split "$VIMG" check -r leaks d.qcow2
    [ "$status" -eq 0 ]
    [[ $stderr == "Repairing OFLAG_COPIED data cluster: l2_entry=50000 refcount=1" ]]
}
