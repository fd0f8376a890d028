#!/usr/bin/env bash
# Peak memory (resident set size, from `/usr/bin/time -v`) of one short training run
# per model at the batch size its recipe uses: one epoch on 8,192 training images,
# validation on 1,000, then the test set, with the whole of CIFAR-10 loaded.
#
#   benches/peak_memory.sh                    # fast at 512, airbench at 1024
#   benches/peak_memory.sh model1:32 fast:512 # any built-in model or spec file
#
# Environment: TRAINER (default target/release/trainer, built first), DATA (default
# ../shared/cifar10/cifar-10-batches-bin). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA:-../shared/cifar10/cifar-10-batches-bin}
if [ -z "${TRAINER:-}" ]; then
    cargo build --release -q -p trainer-cli
    TRAINER=target/release/trainer
fi
[ -x /usr/bin/time ] || { echo "peak_memory.sh: needs /usr/bin/time (Debian package time)" >&2; exit 2; }
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(fast:512 models/airbench.json:1024)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "| model | batch | peak RSS | command |"
echo "|---|---:|---:|---|"
for c in "${cases[@]}"; do
    model=${c%:*}
    batch=${c##*:}
    args=(train --model "$model" --data "$data" --offline --quiet --subset 8192 --val-subset 1000
          --epochs 1 --batch-size "$batch" --out "$work/m.safetensors" --fresh)
    /usr/bin/time -v "$TRAINER" "${args[@]}" > "$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
    kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/log")
    gb=$(awk -v k="$kb" 'BEGIN { printf "%.2f GiB (%.2f GB)", k / 1048576, k * 1024 / 1e9 }')
    echo "| $model | $batch | $gb | \`trainer ${args[*]/#$work\//}\` |"
done
