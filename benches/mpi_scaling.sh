#!/usr/bin/env bash
# Data-parallel training on one machine, measured: `trainer train` (built with
# --features mpi) in one process with 1 and with all threads, and under
# `mpirun -np P` with one thread per process, the gradients summed once after
# backward (--allreduce-bucket-kib 0) and in buckets started during backward
# (the default); images/s, the bytes all-reduced per step and the time spent
# waiting for MPI after backward per step. Writes docs/SCALING.md.
#
#   benches/mpi_scaling.sh [--data DIR] [--subset N] [--out FILE]
#
# Each configuration trains --subset images (default 10,000; 10 % of them held
# out for validation) for 3 epochs; images/s is the median over epochs 2 and 3
# of training images / epoch seconds (the epoch time includes its validation
# pass, the same for every configuration). Needs Open MPI (Debian openmpi-bin,
# libopenmpi-dev, libclang-dev). Run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."

invocation="benches/mpi_scaling.sh${*:+ $*}"
data="../shared/cifar10/cifar-10-batches-bin"
subset=10000
out="docs/SCALING.md"
while [ $# -gt 0 ]; do
    case "$1" in
        --data) data="$2"; shift ;;
        --subset) subset="$2"; shift ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

cargo build --release -p trainer-cli --features mpi --target-dir target/mpi
bin=target/mpi/release/trainer
cores=$(nproc)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
train_images=$((subset - subset / 10))
declare -A machine_rate bytes

# run MODEL BATCH PROCESSES THREADS BUCKET_KIB: prints
# "images/s|MB per step|all-reduces per step|MPI ms per step|step ms".
run() {
    local model=$1 batch=$2 procs=$3 threads=$4 kib=$5
    local args=(train --model "$model" --batch-size "$batch" --subset "$subset" --epochs 3
        --data "$data" --offline --quiet --fresh --out "$tmp/m.safetensors"
        --allreduce-bucket-kib "$kib")
    if [ "$procs" = 1 ]; then
        RAYON_NUM_THREADS=$threads "$bin" "${args[@]}" > "$tmp/log" 2>&1
    else
        mpirun --oversubscribe -np "$procs" -x RAYON_NUM_THREADS="$threads" \
            "$bin" "${args[@]}" > "$tmp/log" 2>&1
    fi
    python3 - "$tmp/m.csv" "$tmp/log" "$train_images" <<'EOF'
import csv, re, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
rate = statistics.median(int(sys.argv[3]) / float(r["seconds"]) for r in rows[1:])
m = re.search(r"([\d.]+) MB all-reduced per step in (\d+) all-reduces, ([\d.]+) ms per step "
              r"waiting for them after backward \(a step takes ([\d.]+) ms\)", open(sys.argv[2]).read())
mpi = "|".join(m.groups()) if m else "—|—|—|—"
print(f"{rate:.0f}|{mpi}")
EOF
}

{
    echo "# Data-parallel training over MPI on one machine"
    echo
    echo "Written by \`$invocation\` on $(date -u +%Y-%m-%d) ($(nproc) cores:" \
        "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); $(mpirun --version 2>&1 | head -1))."
    echo "Each row trains $train_images images (a stratified subset of $subset, 10 % held out) for"
    echo "3 epochs; images/s is the median of epochs 2 and 3. Under mpirun the gradients are summed"
    echo "either once backward is done, in one all-reduce (\"after backward\", --allreduce-bucket-kib 0),"
    echo "or in buckets of about 1 MiB, each an MPI_Iallreduce started as soon as backward has"
    echo "produced it (\"overlapped\", the default); then the loss and correct count. The MPI time is"
    echo "the wait after backward for those all-reduces to finish: the communication that did not"
    echo "overlap, including waiting for the slower process (load imbalance)."
    echo "The rows were measured in one sitting and compare with each other; this VM's speed varies"
    echo "between sittings, so compare other documents' figures by their ratios only."
    echo
    echo "| model, batch | configuration | images/s | vs 1 process × 1 thread | MB all-reduced per step | all-reduces per step | ms waiting for MPI per step | ms per step |"
    echo "|---|---|---|---|---|---|---|---|"
} > "$tmp/report"

for case in "model1 32" "fast 512"; do
    set -- $case
    model=$1 batch=$2
    base=""
    for cfg in "1 1 1024" "1 $cores 1024" "$cores 1 0" "$cores 1 1024"; do
        set -- $cfg
        procs=$1 threads=$2 kib=$3
        echo "== $model batch $batch: $procs process(es) × $threads thread(s), buckets of $kib KiB" >&2
        IFS='|' read -r rate mb reduces ms step <<< "$(run "$model" "$batch" "$procs" "$threads" "$kib")"
        [ -z "$base" ] && base=$rate
        ratio=$(python3 -c "print(f'{$rate / $base:.2f}×')")
        label="$procs process$([ "$procs" = 1 ] || echo es) × $threads thread$([ "$threads" = 1 ] || echo s)"
        if [ "$procs" != 1 ]; then
            label="$label (mpirun, $([ "$kib" = 0 ] && echo "after backward" || echo overlapped))"
        fi
        echo "| $model, $batch | $label | $rate | $ratio | $mb | $reduces | $ms | $step |" >> "$tmp/report"
        if [ "$procs" = 1 ] && [ "$threads" = "$cores" ]; then machine_rate[$model]=$rate; fi
        if [ "$procs" != 1 ]; then bytes[$model]=$mb; fi
    done
done

# What N machines like this one would do, from the figures above.
{
    echo
    echo "## Estimated, for N machines like this one"
    echo
    echo "Not measured on several machines (we have one): computed from the rows above. A step"
    echo "of the global batch B computes B/N images on each machine at this machine's all-core"
    echo "rate, then all-reduces the gradients, which a ring all-reduce does in"
    echo "2(N−1)/N · S / bandwidth (S the MB per step; latency ignored). The speed-up over one"
    echo "machine is then N · compute / (compute + all-reduce), without overlap (an upper bound on"
    echo "the communication time: the overlapped buckets hide part of it behind backward)."
    echo
    echo "| model, batch | network | 4 machines | 16 machines | 64 machines |"
    echo "|---|---|---|---|---|"
    for case in "model1 32" "fast 512"; do
        set -- $case
        python3 - "$1" "$2" "${machine_rate[$1]}" "${bytes[$1]}" <<'EOF'
import sys
model, batch, rate, mb = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
for gbit in (1, 10, 25):
    cells = []
    for n in (4, 16, 64):
        if batch < n:
            cells.append(f"— (a batch of {batch} for {n} machines)")
            continue
        compute = batch / n / rate
        comm = 2 * (n - 1) / n * mb * 8e-3 / gbit
        cells.append(f"{n * compute / (compute + comm):.1f}× ({comm * 1e3:.1f} ms all-reduce, "
                     f"{compute * 1e3:.1f} ms compute)")
    print(f"| {model}, {batch} | {gbit} Gbit/s | " + " | ".join(cells) + " |")
EOF
    done
} >> "$tmp/report"
mv "$tmp/report" "$out"
cat "$out"
