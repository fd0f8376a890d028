#!/usr/bin/env bash
# Runs our benchmarks and the reference frameworks (benches/yardstick.py and
# benches/yardstick_tf.py, the anchors' yardsticks with resnet8 and airbench added:
# PyTorch in its default and channels_last layouts, Keras/TensorFlow, ONNX Runtime,
# OpenVINO, TensorFlow Lite) in one sitting, then writes docs/PERFORMANCE.md from what
# they printed (benches/perf_report.py). Nothing in the document is typed by hand.
#
#   benches/compare.sh                          # full run (about 25 minutes after the build)
#   benches/compare.sh --quick                  # smoke test: fewer reps, fewer cases (~1.5 min)
#   benches/compare.sh --time-log FILE          # also report the peak RSS from `/usr/bin/time -v` output
#   benches/compare.sh --out FILE               # write somewhere else than docs/PERFORMANCE.md
#
# Environment: YARDSTICK_PYTHON (default /tmp/yardstick-venv/bin/python, made by
# `bash ../shared/anchors/setup.sh`), YARDSTICK_TF_PYTHON (default
# /tmp/yardstick-tf-venv/bin/python, made by `setup.sh --tf`; TensorFlow Lite is
# left out when it is missing), ANCHORS (default ../shared/anchors).
# Raw output of every step is kept in target/perf/<UTC time>/.
# Run it on a quiet machine: the report records how busy the CPUs were before each
# step and at the end (and the load average), with a banner when something else ran.
set -euo pipefail
cd "$(dirname "$0")/.."

invocation="benches/compare.sh${*:+ $*}"
quick=0
time_log=""
out="docs/PERFORMANCE.md"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --time-log) time_log="$2"; shift ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

py=${YARDSTICK_PYTHON:-/tmp/yardstick-venv/bin/python}
tfpy=${YARDSTICK_TF_PYTHON:-/tmp/yardstick-tf-venv/bin/python}
anchors=${ANCHORS:-../shared/anchors}
if [ ! -x "$py" ]; then
    echo "compare.sh: no yardstick Python at $py; run: bash $anchors/setup.sh" >&2
    exit 1
fi
if [ -n "$time_log" ] && [ ! -r "$time_log" ]; then
    echo "compare.sh: cannot read --time-log $time_log" >&2
    exit 1
fi

log="target/perf/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$log"
echo "compare.sh: logs in $log"

# 1. Build everything first, so that nothing compiles while we time.
echo "== build"
exe_of() { # reads cargo's JSON messages, prints "target-name executable" per line
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])
'
}
cargo build --release --benches --message-format=json-render-diagnostics | exe_of >"$log/benches.txt"
if [ -f infer/tests/no_alloc.rs ]; then
    cargo test -p infer --release --test no_alloc --no-run --message-format=json-render-diagnostics \
        | exe_of >>"$log/benches.txt"
fi
# The trainer itself, for the peak memory of a training run.
cargo build --release -p trainer-cli --bin trainer --message-format=json-render-diagnostics \
    | exe_of >>"$log/benches.txt"
bin() { awk -v n="$1" '$1 == n { print $2 }' "$log/benches.txt" | tail -n 1; }
for b in train_throughput infer_latency gemm conv_layers trainer; do
    [ -x "$(bin "$b")" ] || { echo "compare.sh: bench $b was not built" >&2; exit 1; }
done

# Share of all CPUs busy over $1 seconds (from /proc/stat), in percent: whether
# anything else is running (the load average still remembers the build).
cpu_busy() {
    local a b
    a=$(head -n 1 /proc/stat)
    sleep "$1"
    b=$(head -n 1 /proc/stat)
    printf '%s\n%s\n' "$a" "$b" | awk '{ idle[NR] = $5 + $6; t = 0; for (i = 2; i <= NF; i++) t += $i; total[NR] = t }
        END { d = total[2] - total[1]; printf "%.0f", (d > 0 ? 100 * (1 - (idle[2] - idle[1]) / d) : 0) }'
}

# 2. The sitting.
{
    echo "start $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "loadavg_start $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cpu_busy_start $(cpu_busy 3)"
    echo "training_start $(pgrep -fc 'trainer train' || true)"
    echo "git $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo '+uncommitted')"
    echo "rustc $(rustc --version)"
    echo "quick $quick"
} >"$log/meta.txt"
printf '%s\n' "$invocation" >"$log/command.txt"
lscpu >"$log/lscpu.txt"
grep -m1 MemTotal /proc/meminfo >>"$log/lscpu.txt" || true

# Each step starts with 2 s of looking at whether anything else uses the CPUs.
step() {
    local busy
    busy=$(cpu_busy 2)
    echo "cpu_busy_step $busy $*" >>"$log/meta.txt"
    echo "== $* (CPUs busy before: $busy%)"
}

if [ "$quick" = 1 ]; then
    ours_train_args=(--quick)
    train_rounds=1
    train_cases=("model1 32")
    yard_train_args=(--images 640)
    tf_reps=1
    yard_infer_args=(--reps 1)
    torch_one_thread=""
    quick_arg=(--quick)
    memory_cases=(fast:512)
else
    ours_train_args=()
    train_rounds=3
    # The reference models, and what users train beyond them: fast and airbench at their batches.
    train_cases=("model1 32" "model1 128" "model3 32" "model3 128" "fast 512" "airbench 1024")
    yard_train_args=()
    # TensorFlow's passes are sometimes half speed on this VM: the median of 2 in each round.
    tf_reps=2
    yard_infer_args=()
    torch_one_thread="model1 32"
    quick_arg=()
    memory_cases=(fast:512 models/airbench.json:1024)
fi

# Training, ours and every peer configuration (PyTorch default NCHW, PyTorch
# channels_last, Keras), in rounds: each round runs ours and then the peers on one
# case, then the next case, so that a load which comes and goes (this VM shares its
# host) falls on both sides of a round's ratio; the report takes the median of the
# rounds' ratios. The peers' passes are short: 3,200 images, or 2,048 at batches of
# 512 and more, after 20 warm-up batches (3 at those batches, seconds each).
for round in $(seq "$train_rounds"); do
    for case in "${train_cases[@]}"; do
        set -- $case
        images=3200
        warmup=20
        if [ "$2" -ge 512 ]; then images=2048; warmup=3; fi
        step "round $round: ours, training $1 batch $2, 2 threads"
        RAYON_NUM_THREADS=2 "$(bin train_throughput)" "${ours_train_args[@]}" --only "$1:$2" \
            | tee -a "$log/train_ours_t2.txt"
        for layout in "" --channels-last; do
            step "round $round: PyTorch${layout:+ $layout}, training $1 batch $2, 2 threads"
            "$py" benches/yardstick.py train --model "$1" --batch "$2" --threads 2 --images "$images" \
                --warmup-batches "$warmup" --reps 1 $layout "${yard_train_args[@]}" \
                2>>"$log/yardstick.stderr" | tee -a "$log/yardstick.jsonl"
        done
        if [ -x "$tfpy" ]; then
            step "round $round: Keras/TensorFlow, training $1 batch $2, 2 threads"
            "$tfpy" benches/yardstick_tf.py train --model "$1" --batch "$2" --threads 2 --images "$images" \
                --warmup-batches "$warmup" --reps "$tf_reps" "${yard_train_args[@]}" \
                2>>"$log/yardstick.stderr" | tee -a "$log/yardstick.jsonl"
        fi
    done
done

step "ours: peak memory of a short training run (benches/peak_memory.sh ${memory_cases[*]})"
TRAINER="$(bin trainer)" bash benches/peak_memory.sh "${memory_cases[@]}" | tee "$log/peak_memory.md"

step "ours: where a model-1 training step goes, batch 32, 2 threads"
RAYON_NUM_THREADS=2 "$(bin train_throughput)" --quick --only model1:32 --profile | tee "$log/train_profile.txt"
step "ours: where a model-3 training step goes, batch 32, 2 threads"
RAYON_NUM_THREADS=2 "$(bin train_throughput)" --quick --only model3:32 --profile | tee "$log/train_profile_model3.txt"

step "ours: training throughput with the matrixmultiply backend, 2 threads"
RAYON_NUM_THREADS=2 "$(bin train_throughput)" "${ours_train_args[@]}" --backend matrixmultiply --only model1:32 \
    | tee "$log/train_ours_mm.txt"

step "ours: training throughput without Winograd (all convolutions im2col), 2 threads"
for case in model1:32 model3:32; do
    RAYON_NUM_THREADS=2 "$(bin train_throughput)" "${ours_train_args[@]}" --conv im2col --only "$case"
done | tee "$log/train_ours_im2col.txt"

step "ours: training throughput, 1 thread"
RAYON_NUM_THREADS=1 "$(bin train_throughput)" "${ours_train_args[@]}" | tee "$log/train_ours_t1.txt"

if [ -n "$torch_one_thread" ]; then
    set -- $torch_one_thread
    step "PyTorch: training $1 batch $2, 1 thread"
    "$py" "$anchors/yardstick.py" train --model "$1" --batch "$2" --threads 1 \
        2>>"$log/yardstick.stderr" | tee -a "$log/yardstick.jsonl"
fi

step "ours: inference latency, one image (criterion)"
CRITERION_HOME="$PWD/$log/criterion" "$(bin infer_latency)" --bench "${quick_arg[@]}" classify \
    | tee "$log/infer_ours.txt"

for t in 1 2; do
    step "PyTorch and ONNX Runtime: inference, one image, $t thread(s)"
    "$py" "$anchors/yardstick.py" infer --model model1 --threads "$t" "${yard_infer_args[@]}" \
        2>>"$log/yardstick.stderr" | tee -a "$log/yardstick.jsonl"
done

# Every engine on every shipped model, one image, one thread, f32 and int8.
# benches/yardstick.py: the anchors' yardstick with resnet8 added.
for model in model1 fast resnet8; do
    step "PyTorch, ONNX Runtime (f32 and static int8), OpenVINO: inference $model, one image, 1 thread"
    "$py" benches/yardstick.py infer --model "$model" --threads 1 --int8 "${yard_infer_args[@]}" \
        2>>"$log/yardstick.stderr" | tee -a "$log/yardstick_engines.jsonl"
    # The anchors' TensorFlow yardstick has no resnet8.
    if [ -x "$tfpy" ] && [ "$model" != resnet8 ]; then
        step "TensorFlow Lite (XNNPACK f32 and full int8): inference $model, one image, 1 thread"
        "$tfpy" "$anchors/yardstick_tf.py" infer --model "$model" --threads 1 "${yard_infer_args[@]}" \
            2>>"$log/yardstick.stderr" | tee -a "$log/yardstick_engines.jsonl"
    fi
done
ls -l models/*.safetensors | awk '{ print $5, $NF }' >"$log/model_sizes.txt"

step "ours: SGEMM at model 1's shapes, matrixmultiply vs gemm"
"$(bin gemm)" "${quick_arg[@]}" | tee "$log/gemm.txt"

step "ours: model 1 convolutions, batch 32, 2 threads"
RAYON_NUM_THREADS=2 "$(bin conv_layers)" "${quick_arg[@]}" | tee "$log/conv_layers.txt"

no_alloc=$(bin no_alloc)
if [ -n "$no_alloc" ] && [ -x "$no_alloc" ]; then
    step "infer: no heap allocation (infer/tests/no_alloc.rs)"
    # Cargo runs a package's tests from the package's directory: do the same.
    if (cd infer && "$no_alloc") >"$log/no_alloc.txt" 2>&1; then
        echo "no_alloc passed" | tee -a "$log/no_alloc.txt"
    else
        echo "no_alloc FAILED" | tee -a "$log/no_alloc.txt"
    fi
fi

{
    echo "end $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "loadavg_end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cpu_busy_end $(cpu_busy 3)"
    echo "training_end $(pgrep -fc 'trainer train' || true)"
} >>"$log/meta.txt"

# 3. The report.
report_args=(--logs "$log" --out "$out")
[ -n "$time_log" ] && report_args+=(--time-log "$time_log")
python3 benches/perf_report.py "${report_args[@]}"
echo "compare.sh: wrote $out"
