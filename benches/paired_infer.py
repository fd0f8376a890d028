#!/usr/bin/env python3
"""Single-image latency of `infer` against every engine, in alternating rounds.

    benches/paired_infer.py                      # 3 rounds, model1, fast, resnet8
    benches/paired_infer.py --rounds 5 --models resnet8

`benches/compare.sh` times each engine once, minutes apart from the others; on a
host whose load comes and goes within minutes (this project's VM: see
docs/PERFORMANCE.md's disturbance banner) one burst can land on one side of a
ratio only. Here every round times, per model, ours and then the peers back to
back, so each round gives its own ratios from figures a minute apart, and the
summary is the median over rounds of those ratios (a disturbed round shows up as
an outlier instead of skewing the table). Same measurements as compare.sh's
inference table: ours is `infer_latency`'s criterion median (`classify_winograd`
for f32, as the `classify` CLI runs it, and `classify_auto` for int8); the peers
are `benches/yardstick.py infer --int8` (ONNX Runtime f32 and static int8,
OpenVINO) and `../shared/anchors/yardstick_tf.py infer` (TensorFlow Lite XNNPACK
f32 and full int8; not for resnet8, which that yardstick lacks); PyTorch, far
slower at one image, is left out. One thread everywhere.

Environment: YARDSTICK_PYTHON, YARDSTICK_TF_PYTHON, ANCHORS as for compare.sh.
Prints one line per measurement, then the table (markdown).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench_binary():
    """Builds infer_latency and returns its executable."""
    out = subprocess.run(
        ["cargo", "bench", "--bench", "infer_latency", "--no-run", "--message-format=json"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("reason") == "compiler-artifact" and m.get("executable") \
                and m["target"]["name"] == "infer_latency":
            return m["executable"]
    sys.exit("paired_infer: infer_latency was not built")


def ours(exe, group, function):
    """Criterion's median of one bench, in µs."""
    with tempfile.TemporaryDirectory() as home:
        subprocess.run([exe, "--bench", f"^{group}/{function}$"], cwd=ROOT, check=True,
                       capture_output=True, env={**os.environ, "CRITERION_HOME": home})
        path = os.path.join(home, group, function, "new", "estimates.json")
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"] / 1e3


def peers(python, script, model, extra=()):
    """{(engine, precision): µs} from one yardstick run (`extra`: its further arguments)."""
    out = subprocess.run([python, script, "infer", "--model", model, "--threads", "1", *extra],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        fw = str(r.get("framework", ""))
        if r.get("what") != "infer-1-image" or fw.startswith("torch"):
            continue
        precision = "int8" if "int8" in fw else "f32"
        name = ("ONNX Runtime" if fw.startswith("onnxruntime") else "OpenVINO"
                if fw.startswith("openvino") else "TFLite" if fw.startswith("tflite") else fw)
        found[(name, precision)] = r["latency_us"]
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--models", default="model1,fast,resnet8")
    args = p.parse_args()
    py = os.environ.get("YARDSTICK_PYTHON", "/tmp/yardstick-venv/bin/python")
    tfpy = os.environ.get("YARDSTICK_TF_PYTHON", "/tmp/yardstick-tf-venv/bin/python")
    anchors = os.environ.get("ANCHORS", os.path.join(ROOT, "..", "shared", "anchors"))
    if not os.access(py, os.X_OK):
        sys.exit(f"paired_infer: no yardstick Python at {py}; run: bash {anchors}/setup.sh")
    has_tf = os.access(tfpy, os.X_OK)
    exe = bench_binary()
    models = args.models.split(",")
    # rows[(model, precision)] = [(ours µs, {engine: µs}) per round]
    rows = {}
    for rnd in range(1, args.rounds + 1):
        for model in models:
            mine = {
                "f32": ours(exe, f"{model}_one_image", "classify_winograd"),
                "int8": ours(exe, f"{model}_int8_one_image", "classify_auto"),
            }
            # ONNX Runtime's static int8 needs --int8; the TensorFlow yardstick
            # times TFLite f32 and int8 unasked.
            theirs = peers(py, os.path.join(ROOT, "benches", "yardstick.py"), model, ["--int8"])
            if has_tf and model != "resnet8":
                theirs.update(peers(tfpy, os.path.join(anchors, "yardstick_tf.py"), model))
            for precision, us in mine.items():
                engines = {n: v for (n, pr), v in theirs.items() if pr == precision}
                rows.setdefault((model, precision), []).append((us, engines))
                shown = ", ".join(f"{n} {v:.1f}" for n, v in sorted(engines.items()))
                print(f"round {rnd} {model} {precision}: ours {us:.1f} µs; {shown}", flush=True)

    print()
    print(f"| model, precision | ours, per round (µs) | fastest peer, per round (µs) "
          f"| ours ÷ fastest, per round | median of the ratios |")
    print("|---|---|---|---|---|")
    for (model, precision), rounds in rows.items():
        ratios, fastest = [], []
        for us, engines in rounds:
            if not engines:
                continue
            name, best = min(engines.items(), key=lambda kv: kv[1])
            fastest.append(f"{name} {best:.1f}")
            ratios.append(us / best)
        mine = ", ".join(f"{us:.1f}" for us, _ in rounds)
        median = f"**{statistics.median(ratios):.2f}×**" if ratios else "—"
        print(f"| {model}, {precision} | {mine} | {'; '.join(fastest) or '—'} | "
              f"{', '.join(f'{r:.2f}×' for r in ratios) or '—'} | {median} |")


if __name__ == "__main__":
    main()
