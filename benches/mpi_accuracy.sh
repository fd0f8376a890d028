#!/usr/bin/env bash
# Does data-parallel training under MPI train what one process trains? Trains
# the same model twice with the same binary (built with --features mpi) and
# flags: one process with all the threads of the machine, then `mpirun -np 2`
# with one thread per process; test accuracy and wall time of each (the
# README's MPI section quotes them). Logs, histories and models go to
# runs/mpi/<model><epochs>-{1p,2p}.*; driver.log has the start and end times.
#
#   benches/mpi_accuracy.sh [--model fast] [--epochs 12] [--data DIR]
#
# About 2 × 19 minutes for fast, 12 epochs, on a 2-core machine. Needs Open MPI
# (Debian openmpi-bin, libopenmpi-dev, libclang-dev). Run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."

model=fast
epochs=12
data="../shared/cifar10/cifar-10-batches-bin"
while [ $# -gt 0 ]; do
    case "$1" in
        --model) model="$2"; shift ;;
        --epochs) epochs="$2"; shift ;;
        --data) data="$2"; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

cargo build --release -p trainer-cli --features mpi --target-dir target/mpi
bin=target/mpi/release/trainer
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p runs/mpi
name="runs/mpi/$model$epochs"
args=(train --model "$model" --epochs "$epochs" --data "$data" --validate-on-test --offline --quiet --fresh)
{
    date -u +"start 1p %FT%TZ"
    /usr/bin/time -f "wall %e s" "$bin" "${args[@]}" --out "$name-1p.safetensors" > "$name-1p.log" 2>&1
    date -u +"start 2p %FT%TZ"
    /usr/bin/time -f "wall %e s" mpirun -np 2 --bind-to none "$bin" "${args[@]}" --out "$name-2p.safetensors" > "$name-2p.log" 2>&1
    date -u +"end %FT%TZ"
} > runs/mpi/driver.log
for p in 1p 2p; do
    echo "$p: $(grep -o 'test accuracy [0-9.]*' "$name-$p.log") ($(grep '^wall' "$name-$p.log"))"
done
