#!/usr/bin/env bash
# Classifying a folder of images at scale: `classify DIR` against ONNX Runtime and
# PyTorch doing the same decode → centre-crop → resize → classify
# (benches/classify_bulk.py), in one sitting, on the same model file (fast by
# default; and its int8 file, which ONNX Runtime runs as `trainer export`'s QDQ
# graph) and the same images: the 10,000 CIFAR-10 test images written as PNGs into
# one folder per class, at SIZE×SIZE pixels (32: as they are; larger sizes are
# upscaled once with Pillow, so that decoding and resizing weigh as with photos).
#
#   bash benches/classify_bulk.sh [SIZE] [REPS]        (defaults: 32 and 3)
#
# Environment: YARDSTICK_PYTHON (default /tmp/yardstick-venv/bin/python, made by
# `bash ../shared/anchors/setup.sh`; Pillow is installed into it if missing), DATA
# (default ../shared/cifar10/cifar-10-batches-bin), MODEL (default
# models/fast.safetensors), MODEL_INT8 (default models/fast-int8.safetensors; "" to
# leave int8 out). Logs go to target/perf/classify-DATE/; the summary
# (median wall time of REPS runs each, images/s, ratio, agreement with classify's
# classes and accuracy against the folders' labels) is printed at the end.
# Nothing else may run meanwhile: this machine has 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-32}
reps=${2:-3}
py=${YARDSTICK_PYTHON:-/tmp/yardstick-venv/bin/python}
data=${DATA:-../shared/cifar10/cifar-10-batches-bin}
model=${MODEL:-models/fast.safetensors}
model_int8=${MODEL_INT8-models/fast-int8.safetensors}
[ -x "$py" ] || { echo "classify_bulk.sh: no Python at $py; run: bash ../shared/anchors/setup.sh" >&2; exit 1; }
"$py" -c "import PIL" 2>/dev/null || "$py" -m pip install -q pillow
log=target/perf/classify-$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$log"
cargo build -q --release -p classify -p trainer-cli

images=target/perf/classify-images-$size
if [ ! -f "$images/.complete" ]; then
    rm -rf "$images"
    "$py" - "$data" "$images" "$size" <<'EOF'
import os, sys
import numpy as np
from PIL import Image
data, out, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = [l.strip() for l in open(os.path.join(data, "batches.meta.txt")) if l.strip()]
raw = np.fromfile(os.path.join(data, "test_batch.bin"), dtype=np.uint8).reshape(-1, 3073)
for name in names:
    os.makedirs(os.path.join(out, name), exist_ok=True)
for i, row in enumerate(raw):
    img = Image.fromarray(row[1:].reshape(3, 32, 32).transpose(1, 2, 0))
    if size != 32:
        img = img.resize((size, size), Image.BILINEAR)
    img.save(os.path.join(out, names[row[0]], f"{i:05d}.png"))
open(os.path.join(out, ".complete"), "w").close()
print(f"wrote {len(raw)} PNGs of {size}x{size} into {out}")
EOF
fi
./target/release/trainer export --model "$model" --onnx "$log/model.onnx" > "$log/export.txt"
if [ -n "$model_int8" ]; then
    ./target/release/trainer export --model "$model_int8" --onnx "$log/model-int8.onnx" >> "$log/export.txt"
fi

now() { date +%s.%N; }
for rep in $(seq 1 "$reps"); do
    t0=$(now)
    ./target/release/classify --model "$model" --csv "$images" > "$log/classify.csv"
    t1=$(now)
    echo "{\"framework\": \"classify (infer)\", \"rep\": $rep, \"seconds\": $(echo "$t1 - $t0" | bc)}" | tee -a "$log/runs.jsonl"
    "$py" benches/classify_bulk.py ort --onnx "$log/model.onnx" "$images" --csv "$log/ort.csv" | tee -a "$log/runs.jsonl"
    "$py" benches/classify_bulk.py torch --model "$model" "$images" --csv "$log/torch.csv" | tee -a "$log/runs.jsonl"
    if [ -n "$model_int8" ]; then
        t0=$(now)
        ./target/release/classify --model "$model_int8" --csv "$images" > "$log/classify-int8.csv"
        t1=$(now)
        echo "{\"framework\": \"classify (infer) int8\", \"rep\": $rep, \"seconds\": $(echo "$t1 - $t0" | bc)}" | tee -a "$log/runs.jsonl"
        "$py" benches/classify_bulk.py ort --onnx "$log/model-int8.onnx" "$images" --csv "$log/ort-int8.csv" \
            | sed 's/"framework": "onnxruntime \([^"]*\)"/"framework": "onnxruntime \1 int8 (QDQ)"/' | tee -a "$log/runs.jsonl"
    fi
done

"$py" - "$log" "$size" <<'EOF'
import csv, json, os, statistics, sys
log, size = sys.argv[1], sys.argv[2]
runs = [json.loads(l) for l in open(os.path.join(log, "runs.jsonl"))]
def classes(path):
    with open(path) as f:
        return {r["file"]: int(r["index"]) for r in csv.DictReader(f)}
def files(fw):
    """The engine's classes, and those it is compared with (classify at the same precision)."""
    int8 = "int8" in fw
    if fw.startswith("classify"):
        return ("classify-int8.csv" if int8 else "classify.csv"), None
    mine = ("ort-int8.csv" if int8 else "ort.csv") if fw.startswith("onnxruntime") else "torch.csv"
    return mine, ("classify-int8.csv" if int8 else "classify.csv")
frameworks = list(dict.fromkeys(r["framework"] for r in runs))
ours = classes(os.path.join(log, "classify.csv"))
n = len(ours)
names = sorted({os.path.basename(os.path.dirname(f)) for f in ours})
def accuracy(got):
    return sum(names.index(os.path.basename(os.path.dirname(f))) == k for f, k in got.items()) / n
median = lambda fw: statistics.median(r["seconds"] for r in runs if r["framework"] == fw)
print(f"\n{n} PNGs of {size}x{size} pixels, {len(runs) // len(frameworks)} runs each (median wall time); logs in {log}\n")
print("| engine | seconds | images/s | classify is faster by | same class as classify | accuracy |")
print("|---|---:|---:|---:|---:|---:|")
for fw in frameworks:
    mine, against = files(fw)
    got = classes(os.path.join(log, mine))
    if against is None:
        ratio = same = "—"
    else:
        base = classes(os.path.join(log, against))
        ratio = f"{median(fw) / median('classify (infer) int8' if 'int8' in fw else 'classify (infer)'):.2f}×"
        same = f"{sum(got.get(f) == k for f, k in base.items()) / n:.2%}"
    print(f"| {fw} | {median(fw):.2f} | {n / median(fw):,.0f} | {ratio} | {same} | {accuracy(got):.2%} |")
EOF
