# SPDX-License-Identifier: LGPL-2.1-or-later
# Workloads, a shadow model and image builders shared by the interop
# suites.  Load after ../helpers:   load ../helpers; load workload
#
# An operation file holds one operation a line:
#   w PAT OFF LEN    write -P PAT OFF LEN
#   z OFF LEN        write -z OFF LEN              (reads back as 0)
#   d OFF LEN        discard OFF LEN               (content unknown after)
#   bg PAT OFF LEN   no I/O: the content there before the workload
#   --               end of a batch: the next batch runs in a new process
# run_ops feeds a file to a qemu-io-language tool (qemu-io or vimg-io);
# verify_ops asks a tool to read back every byte whose content the
# shadow model (shadow.py) knows, with read -P.

WORKLOAD_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MiB=$((1024 * 1024))

# Bytes of guest data one L2 table maps: l2cov CLUSTER_SIZE [extl2]
l2cov() {
    local cs=$1
    if [ "${2:-}" = extl2 ]; then
        echo $((cs * (cs / 16)))
    else
        echo $((cs * (cs / 8)))
    fi
}

# The standard workload for an image of cluster size CS (64k for raw),
# virtual size SIZE and L2 coverage L2COV.  With NOBG=nobg the content
# before the workload is not known to be zero (an overlay over a backing
# file), so no bg lines are emitted.  Unaligned writes, overlapping
# rewrites, zero writes inside and across clusters, a discard followed by
# a rewrite, a big write, writes across cluster and L2-table boundaries,
# the last bytes of the disk; three batches (three opens).
gen_workload() {
    local cs=$1 size=$2 l2=$3 nobg=${4:-}
    local span=$((12 * cs + 2 * MiB))
    ((span > size)) && span=$size
    if [ "$nobg" != nobg ]; then
        echo "bg 0 0 $span"
        if ((size >= l2 + 65536)); then
            local s=$((l2 - 65536))
            ((s < 0)) && s=0
            echo "bg 0 $s $((l2 + 65536 - s))"
        fi
        echo "bg 0 $((size - 65536)) 65536"
    fi
    echo "w 0x11 1000 5000"
    echo "w 0x22 $((cs - 300)) 700"
    echo "w 0x33 $((3 * cs + 17)) $((2 * cs + 100))"
    echo "w 0x44 2500 1000"
    echo "z 1200 300"
    echo "z $((3 * cs)) $cs"
    echo "w 0x55 $((6 * cs)) $((3 * cs))"
    echo "--"
    echo "d $((6 * cs)) $((2 * cs))"
    echo "w 0x66 $((6 * cs + cs / 2)) 100"
    echo "w 0x77 $((10 * cs - 1)) 2"
    echo "z $((9 * cs - 100)) 200"
    if ((size >= 4 * MiB)); then
        echo "w 0x88 $((MiB + 123)) $MiB"
    fi
    echo "--"
    echo "w 0x99 $((cs - 100)) 50"
    echo "z $((4 * cs + 10)) $cs"
    echo "w 0xaa $((11 * cs)) 1"
    if ((size >= l2 + 65536)); then
        echo "w 0xbb $((l2 - 1000)) 3000"
        echo "z $((l2 + 1500)) 100"
        echo "w 0xbc $((l2 - 1)) 1"
    fi
    echo "w 0xcc $((size - 5000)) 5000"
}

# Many small writes spread over SIZE, each in a fresh L2 table on a
# small-cluster image, in batches of 40: grows the refcount table.
# gen_scatter SIZE COUNT LEN
gen_scatter() {
    local size=$1 n=$2 len=$3 i off
    local stride=$((size / n))
    for ((i = 0; i < n; i++)); do
        off=$((i * stride + i * 37))
        echo "bg 0 $off $((len + 1000))"
    done
    for ((i = 0; i < n; i++)); do
        off=$((i * stride + i * 37))
        echo "w $((i % 250 + 1)) $off $len"
        ((i % 40 == 39)) && echo "--"
    done
    # Rewrite a few in a last batch.
    echo "--"
    for ((i = 0; i < n; i += 17)); do
        off=$((i * stride + i * 37 + 100))
        echo "w 0xfe $off 777"
    done
}

# Base-image content for chain tests: gen_base SIZE
gen_base() {
    local size=$1
    echo "bg 0 0 $size"
    echo "w 0xb1 0 $((2 * MiB + 4321))"
    echo "w 0xb2 $((3 * MiB - 77)) $((MiB / 2))"
    echo "w 0xb3 $((size - 70000)) 70000"
}

_run_io() {
    # _run_io "TOOL OPTS" IMG CMD-ARGS...
    local -a argv0
    read -ra argv0 <<<"$1"
    local img=$2 out rc=0
    shift 2
    [ $# -gt 0 ] || return 0
    out=$(timeout "${VIMG_TIMEOUT:-120}" "${argv0[@]}" "$@" "$img" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ] || grep -qi 'failed\|error' <<<"$out"; then
        local cmdline="${argv0[*]} $* $img"
        ((${#cmdline} > 400)) && cmdline="${cmdline:0:200} ... ${cmdline: -150}"
        echo "FAILED (rc=$rc): $cmdline" >&2
        grep -iE 'fail|error|vimg|qemu|abort|signal|assert' <<<"$out" | head -15 >&2
        return 1
    fi
}

# Apply an operation file with a tool: run_ops "TOOL OPTS" OPSFILE IMG
run_ops() {
    local tool=$1 ops=$2 img=$3 op a b c
    local -a cmds=()
    while read -r op a b c; do
        case $op in
        w) cmds+=(-c "write -P $a $b $c") ;;
        z) cmds+=(-c "write -z $a $b") ;;
        d) cmds+=(-c "discard $a $b") ;;
        --)
            _run_io "$tool" "$img" "${cmds[@]}" || return 1
            cmds=()
            ;;
        esac
    done <"$ops"
    _run_io "$tool" "$img" "${cmds[@]}"
}

# Read back, read-only, what the operation files (applied in order) say:
# verify_ops "TOOL OPTS" IMG OPSFILE...
verify_ops() {
    local tool=$1 img=$2 pat off len
    shift 2
    local -a cmds=()
    while read -r pat off len; do
        cmds+=(-c "read -P $pat $off $len")
    done < <(python3 "$WORKLOAD_DIR/shadow.py" "$@")
    [ ${#cmds[@]} -gt 0 ] || { echo "verify_ops: nothing to verify" >&2; return 1; }
    _run_io "$tool -r" "$img" "${cmds[@]}"
}

# jq predicate on qemu-img info --output=json: assert_qemu_info IMG EXPR
assert_qemu_info() {
    local out
    out=$(qemu-img info -U --output=json "$1") || return 1
    if [ "$(jq "$2" <<<"$out")" != true ]; then
        echo "qemu-img info $1: '$2' is not true in:" >&2
        echo "$out" >&2
        return 1
    fi
}

# Set incompatible feature bits (OR) in byte 79 of a qcow2 header.
set_incompat_byte() {
    local img=$1 bits=$2 cur
    cur=$(od -An -tu1 -j79 -N1 "$img" | tr -d ' ')
    printf "$(printf '\\%03o' $((cur | bits)))" |
        dd of="$img" bs=1 seek=79 conv=notrunc status=none
}

# ---------------------------------------------------------------------
# Images made by QEMU (qemu-img create, written by qemu-io).  Each
# builder leaves IMG (the path to open), FMT and EXP (the operation
# files that describe its content, in order) in the caller's scope.

# mk_q_plain NAME SIZE CS [qemu-img create -o options]
mk_q_plain() {
    local name=$1 size=$2 cs=$3 opts=${4:-}
    local ext=
    [[ $opts == *extended_l2=on* ]] && ext=extl2
    qemu-img create -q -f qcow2 -o "cluster_size=$cs${opts:+,$opts}" \
        "$name.qcow2" "$size"
    gen_workload "$cs" "$size" "$(l2cov "$cs" $ext)" >"$name.ops"
    run_ops "qemu-io -f qcow2" "$name.ops" "$name.qcow2"
    IMG=$name.qcow2 FMT=qcow2 EXP=("$name.ops")
}

mk_q_raw() {
    qemu-img create -q -f raw raw.img 64M
    gen_workload 65536 $((64 * MiB)) $((1 << 40)) >raw.ops
    run_ops "qemu-io -f raw" raw.ops raw.img
    IMG=raw.img FMT=raw EXP=(raw.ops)
}

# Compressed clusters: qemu-img convert -c, then qemu-io write -c on an
# aligned cluster and a plain write into a compressed cluster.
# mk_q_compressed zlib|zstd
mk_q_compressed() {
    local ct=$1
    qemu-img create -q -f raw src.raw 16M
    gen_workload 65536 $((16 * MiB)) $((1 << 40)) >src.ops
    run_ops "qemu-io -f raw" src.ops src.raw
    qemu-img convert -c -f raw -O qcow2 -o compression_type="$ct" \
        src.raw "comp-$ct.qcow2"
    cat >comp2.ops <<EOF
w 0x5c $((8 * MiB)) 65536
w 0x5d $((10 * MiB)) 131072
--
w 0x5e 100 10
w 0x5f $((10 * MiB + 65536 - 5)) 10
EOF
    _run_io "qemu-io -f qcow2" "comp-$ct.qcow2" \
        -c "write -c -P 0x5c $((8 * MiB)) 64k" \
        -c "write -c -P 0x5d $((10 * MiB)) 128k"
    _run_io "qemu-io -f qcow2" "comp-$ct.qcow2" \
        -c "write -P 0x5e 100 10" \
        -c "write -P 0x5f $((10 * MiB + 65536 - 5)) 10"
    IMG=comp-$ct.qcow2 FMT=qcow2 EXP=(src.ops comp2.ops)
}

# A chain in the subfolder sub/ with a relative backing name:
# mk_q_chain raw|qcow2  -> sub/top.qcow2 over sub/base.raw|base.qcow2
mk_q_chain() {
    local bf=$1 base
    mkdir -p sub
    base=base.$([ "$bf" = raw ] && echo raw || echo qcow2)
    qemu-img create -q -f "$bf" "sub/$base" 16M
    gen_base $((16 * MiB)) >base.ops
    run_ops "qemu-io -f $bf" base.ops "sub/$base"
    qemu-img create -q -f qcow2 -b "$base" -F "$bf" sub/top.qcow2
    gen_workload 65536 $((16 * MiB)) $((1 << 40)) nobg >top.ops
    run_ops "qemu-io -f qcow2" top.ops sub/top.qcow2
    IMG=sub/top.qcow2 FMT=qcow2 EXP=(base.ops top.ops)
}

# Extended L2 overlay over a qcow2 base, subcluster-sized and smaller
# writes.  mk_q_extl2 CS
mk_q_extl2() {
    local cs=$1 sc=$(($1 / 32))
    qemu-img create -q -f qcow2 ebase.qcow2 8M
    gen_base $((8 * MiB)) >ebase.ops
    run_ops "qemu-io -f qcow2" ebase.ops ebase.qcow2
    qemu-img create -q -f qcow2 -o "extended_l2=on,cluster_size=$cs" \
        -b ebase.qcow2 -F qcow2 "extl2-$cs.qcow2"
    cat >extl2.ops <<EOF
w 0x21 $sc $sc
w 0x22 $((5 * sc + 7)) 100
z $((8 * sc)) $sc
z $((10 * sc + 3)) 10
w 0x23 $((31 * sc + 5)) $((2 * sc))
--
w 0x24 $((cs + 3 * sc)) $((sc / 2))
w 0x25 $((2 * MiB)) 4000
z $((3 * MiB - 100)) 5000
w 0x26 $((4 * cs - 1)) 2
d $((6 * cs)) $cs
EOF
    run_ops "qemu-io -f qcow2" extl2.ops "extl2-$cs.qcow2"
    IMG=extl2-$cs.qcow2 FMT=qcow2 EXP=(ebase.ops extl2.ops)
}

# External data file: mk_q_datafile on|off
mk_q_datafile() {
    local raw=$1
    qemu-img create -q -f qcow2 \
        -o "data_file=df-$raw.data,data_file_raw=$raw" "df-$raw.qcow2" 16M
    gen_workload 65536 $((16 * MiB)) $((1 << 40)) >df.ops
    run_ops "qemu-io -f qcow2" df.ops "df-$raw.qcow2"
    IMG=df-$raw.qcow2 FMT=qcow2 EXP=(df.ops)
}

# Internal snapshot s1 taken after workload A, then workload B on top.
mk_q_snapshot() {
    qemu-img create -q -f qcow2 snap.qcow2 16M
    gen_workload 65536 $((16 * MiB)) $((1 << 40)) >snapA.ops
    run_ops "qemu-io -f qcow2" snapA.ops snap.qcow2
    qemu-img snapshot -c s1 snap.qcow2
    cat >snapB.ops <<EOF
w 0xd1 500 1000
z $((3 * 65536 + 100)) 65536
w 0xd2 $((MiB + 1000)) 70000
d $((12 * 65536)) 65536
EOF
    run_ops "qemu-io -f qcow2" snapB.ops snap.qcow2
    IMG=snap.qcow2 FMT=qcow2 EXP=(snapA.ops snapB.ops)
}

# Lazy refcounts, killed while dirty: the dirty bit stays set.
mk_q_lazy_dirty() {
    local rc=0
    qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 16M
    cat >lazy.ops <<EOF
bg 0 0 $((4 * MiB))
w 0x5a 0 65536
w 0x5b $((MiB + 17)) 100000
z $((2 * MiB)) 65536
EOF
    qemu-io -f qcow2 -c "write -P 0x5a 0 64k" \
        -c "write -P 0x5b $((MiB + 17)) 100000" \
        -c "write -z $((2 * MiB)) 64k" -c "sigraise 9" lazy.qcow2 \
        >/dev/null 2>&1 || rc=$?
    [ "$rc" -eq 137 ] || { echo "qemu-io was not killed (rc=$rc)" >&2; return 1; }
    assert_qemu_info lazy.qcow2 '.["dirty-flag"] == true'
    IMG=lazy.qcow2 FMT=qcow2 EXP=(lazy.ops)
}

# Corrupt bit set by hand on a good image.
mk_q_corrupt() {
    mk_q_plain corrupt $((16 * MiB)) 65536
    set_incompat_byte corrupt.qcow2 2
    assert_qemu_info corrupt.qcow2 '.["format-specific"].data.corrupt == true'
}
