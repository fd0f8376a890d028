#!/usr/bin/env python3
"""Writes docs/PERFORMANCE.md from the logs of one `benches/compare.sh` sitting.

    python3 benches/perf_report.py --logs target/perf/<time> [--time-log FILE] [--out docs/PERFORMANCE.md]

Standard library only. Every figure in the document comes from the files in --logs,
measured in that one sitting; a figure that is missing shows as "—".
"""
import argparse
import json
import os
import re
import statistics
import sys

DASH = "—"


# ---------------------------------------------------------------- reading


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def json_lines(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def key_values(text):
    """`key value` lines; `cpu_busy_step PCT STEP` lines go to kv["steps"] as (pct, step)."""
    kv = {"steps": []}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "cpu_busy_step":
            pct, _, what = value.partition(" ")
            kv["steps"].append((int(pct), what.strip()))
        elif key:
            kv[key] = value.strip()
    return kv


def lscpu(text):
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


TRAIN_LINE = re.compile(
    r"train (\S+) batch (\d+): median ([\d.]+) images/s \(min ([\d.]+), max ([\d.]+)"
)


def ours_train(text):
    """{(model, batch): img/s} and the thread count train_throughput reported. A case
    measured in several rounds (several lines) keeps each round's median in "rounds", and
    "median" is their median."""
    threads = None
    m = re.search(r"^threads: (\d+)", text, re.M)
    if m:
        threads = int(m.group(1))
    rates = {}
    for m in TRAIN_LINE.finditer(text):
        r = rates.setdefault((m.group(1), int(m.group(2))), {"rounds": [], "min": None, "max": None})
        r["rounds"].append(float(m.group(3)))
        r["min"] = min(float(m.group(4)), r["min"] or float("inf"))
        r["max"] = max(float(m.group(5)), r["max"] or 0.0)
    for r in rates.values():
        r["median"] = statistics.median(r["rounds"])
    return threads, rates


def criterion_results(root):
    """{function_id: median ns} from CRITERION_HOME/<group>/<function>/new/."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        try:
            bench = json.loads(read(os.path.join(dirpath, "benchmark.json")))
            est = json.loads(read(os.path.join(dirpath, "estimates.json")))
        except ValueError:
            continue
        # Keyed "group/function": two groups both have a `classify_auto`.
        key = f'{bench.get("group_id")}/{bench.get("function_id")}' if bench.get("function_id") \
            else bench.get("full_id")
        out[key] = {
            "median_ns": est["median"]["point_estimate"],
            "lo_ns": est["median"]["confidence_interval"]["lower_bound"],
            "hi_ns": est["median"]["confidence_interval"]["upper_bound"],
            "group": bench.get("group_id"),
        }
    return out


def time_log(text):
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(": ")
        if not sep:
            continue
        if key.startswith("Maximum resident set size"):
            out["max_rss_kb"] = int(value)
        elif key == "Command being timed":
            out["command"] = value.strip('"')
        elif key.startswith("Elapsed (wall clock) time"):
            out["elapsed"] = value
        elif key == "Exit status":
            out["exit"] = value
    # The trainer's epoch lines: "Epoch 6/35 - 26s - ... - val_accuracy: 0.7516".
    # Time to 75 %: the epochs' seconds summed up to the first at or above it.
    seconds = 0
    for m in re.finditer(r"^Epoch (\d+)/\d+ - (\d+)s - .*val_accuracy: ([\d.]+)", text, re.M):
        seconds += int(m.group(2))
        if float(m.group(3)) >= 0.75:
            out["to75"] = (seconds, int(m.group(1)), float(m.group(3)))
            break
    out["epochs_seen"] = bool(re.search(r"^Epoch \d+/", text, re.M))
    return out


# The training cases of the sitting (compare.sh's train_cases), in report order.
TRAIN_CASES = (("model1", 32), ("model1", 128), ("model3", 32), ("model3", 128),
               ("fast", 512), ("airbench", 1024))


def spec_products(path):
    """The convolutions and dense layers of a model spec (models/*.json), in
    order, as `(kind, h, w, c_in, k, stride, c_out)` with the layer's output
    height and width (1, 1, k = 1 for a dense layer, whose c_in is its whole
    input), or None if the spec cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return None
    h, w, c = spec["input"]["height"], spec["input"]["width"], spec["input"]["channels"]
    out = []
    named = {}  # output shape of each named layer, for a later layer's `input`
    for layer in spec["layers"]:
        kind = layer["type"]
        if "input" in layer:
            h, w, c = named[layer["input"]]
        if kind == "conv2d":
            k, s = layer["kernel"], layer.get("stride", 1)
            same = layer.get("padding", "same") == "same"
            h = -(-h // s) if same else (h - k) // s + 1
            w = -(-w // s) if same else (w - k) // s + 1
            out.append(("conv2d", h, w, c, k, s, layer["filters"]))
            c = layer["filters"]
        elif kind == "maxpool2d":
            size, s = layer.get("size", 2), layer.get("stride", layer.get("size", 2))
            same = layer.get("padding", "valid") == "same"
            h = -(-h // s) if same else (h - size) // s + 1
            w = -(-w // s) if same else (w - size) // s + 1
        elif kind in ("flatten",):
            h, w, c = 1, 1, h * w * c
        elif kind == "global_avg_pool":
            h, w = 1, 1
        elif kind == "dense":
            out.append(("dense", 1, 1, h * w * c, 1, 1, layer["units"]))
            h, w, c = 1, 1, layer["units"]
        if "name" in layer:
            named[layer["name"]] = (h, w, c)
    return out


def spec_macs(path):
    """Multiply-adds of one image through the convolutions and dense layers
    of a model spec (models/*.json), or None if it cannot be read."""
    products = spec_products(path)
    if products is None:
        return None
    return sum(h * w * k * k * c_in * c_out for _, h, w, c_in, k, _, c_out in products)


def spec_step_macs(path):
    """Multiply-adds of one image's training step (forward, weight gradient, input
    gradient; none for the first layer's input) through the convolutions and dense
    layers of a model spec: `(direct, executed)`, where *executed* counts the 3×3
    stride-1 convolutions with at least 16 input channels as Winograd F(4×4, 3×3)
    runs them (36 products per 4×4 output tile and channel pair, tiles rounded up
    at the edges), or None if the spec cannot be read."""
    products = spec_products(path)
    if products is None:
        return None
    direct = executed = 0
    for i, (kind, h, w, c_in, k, s, c_out) in enumerate(products):
        passes = 2 if i == 0 else 3
        m = h * w * k * k * c_in * c_out
        direct += passes * m
        if kind == "conv2d" and k == 3 and s == 1 and c_in >= 16:
            executed += passes * (-(-h // 4)) * (-(-w // 4)) * 36 * c_in * c_out
        else:
            executed += passes * m
    return direct, executed


def num(x, digits=1):
    if x is None:
        return DASH
    return f"{x:,.{digits}f}"


def ratio(x, digits=2):
    return DASH if x is None else f"{x:.{digits}f}×"


def div(a, b):
    return a / b if a is not None and b else None


def verdict(ok):
    return DASH if ok is None else ("met" if ok else "**not met**")


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- report


# Below this ratio of our 2-thread to 1-thread training rate (model 1, batch
# 32 or 128, the lower) the report flags the sitting as disturbed.
DISTURBED_BELOW = 1.8


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", required=True)
    ap.add_argument("--time-log")
    ap.add_argument("--out", default="docs/PERFORMANCE.md")
    a = ap.parse_args()
    L = lambda name: os.path.join(a.logs, name)  # noqa: E731

    meta = key_values(read(L("meta.txt")))
    command = read(L("command.txt")).strip() or "benches/compare.sh"
    cpu = lscpu(read(L("lscpu.txt")))
    quick = meta.get("quick") == "1"

    t2_threads, ours2 = ours_train(read(L("train_ours_t2.txt")))
    t1_threads, ours1 = ours_train(read(L("train_ours_t1.txt")))
    _, ours_mm = ours_train(read(L("train_ours_mm.txt")))
    _, ours_im2col = ours_train(read(L("train_ours_im2col.txt")))

    yard = json_lines(read(L("yardstick.jsonl")))

    def peer_rounds(kind, model, batch, threads=2):
        """The training records of one peer configuration, one per round in the order
        measured: "torch" (default NCHW layout), "torch channels_last" or "tensorflow"."""
        found = []
        for r in yard:
            fw = str(r.get("framework", ""))
            layout_ok = fw.endswith("channels_last") == kind.endswith("channels_last")
            if (r.get("what") == "train" and r.get("model") == model and r.get("batch") == batch
                    and r.get("threads") == threads and fw.startswith(kind.split()[0]) and layout_ok):
                found.append(r)
        return found

    def peer_train(kind, model, batch, threads=2):
        """One record for a peer configuration, its rate the median of its rounds'."""
        found = peer_rounds(kind, model, batch, threads)
        if not found:
            return None
        return dict(found[0], img_per_s=statistics.median(r["img_per_s"] for r in found))

    def torch_train(model, batch, threads):
        return peer_train("torch", model, batch, threads)

    def yard_infer(prefix, threads):
        for r in yard:
            if (r.get("what") == "infer-1-image" and r.get("model") == "model1"
                    and r.get("threads") == threads and str(r.get("framework", "")).startswith(prefix)):
                return r
        return None

    engines = json_lines(read(L("yardstick_engines.jsonl")))
    versions = sorted({r["framework"] for r in yard + engines if "framework" in r})
    crit = criterion_results(L("criterion"))
    infer_text = read(L("infer_ours.txt"))
    scratch = re.search(r"^(.*): scratch (\d+) f32 = (\d+) bytes", infer_text, re.M)
    gemm_rows = [r for r in json_lines(read(L("gemm.txt"))) if r.get("bench") == "gemm"]
    # The best one-thread SGEMM rate of the sitting, either library: the peak the rates compare with.
    best_gemm = max((max(r.get("gemm_gflops") or 0, r.get("matrixmultiply_gflops") or 0) for r in gemm_rows),
                    default=0)
    gemm_step = next((r for r in json_lines(read(L("gemm.txt"))) if r.get("bench") == "gemm_step"), None)
    conv_json = json_lines(read(L("conv_layers.txt")))
    conv_rows = [r for r in conv_json if r.get("bench") == "conv_layer"]
    conv_total = next((r for r in conv_json if r.get("bench") == "conv_total"), None)
    no_alloc = read(L("no_alloc.txt"))
    def parse_profile(text):
        # Rows "  conv2  3.90  8.45" (or "  relu (fused)  0.00  0.00") after the
        # "layer fwd ms bwd ms" header; and the threads it ran on.
        threads = (ours_train(text)[0] or "?") if text else None
        rows = [(m.group(1), float(m.group(2)), float(m.group(3)))
                for m in re.finditer(r"^  (\w+(?: \(fused\))?)\s+([\d.]+)\s+([\d.]+)$", text, re.M)]
        return rows, threads

    profiles = [(model, *parse_profile(read(L(name))))
                for model, name in (("model1", "train_profile.txt"), ("model3", "train_profile_model3.txt"))]
    tl = time_log(read(a.time_log)) if a.time_log else {}

    out = []
    w = out.append
    w("# Performance")
    w("")
    w(f"Generated by `{command}` ({os.path.basename(__file__)} from the logs in `{a.logs}`); "
      "do not edit by hand — rerun the command instead.")
    w("")
    busy = []
    for when in ("start", "end"):
        pct = meta.get(f"cpu_busy_{when}", "")
        if pct.isdigit() and int(pct) > 15:
            busy.append(f"CPUs {pct}% busy over 3 s just before the {when}")
        if meta.get(f"training_{when}", "0") not in ("", "0"):
            busy.append(f"a `trainer train` process was running at the {when}")
        if when == "start":
            hot = [(pct, what) for pct, what in meta["steps"] if pct > 15]
            if 0 < len(hot) <= 3:
                busy += [f"CPUs {pct}% busy over 2 s before the step “{what}”" for pct, what in hot]
            elif hot:
                busy.append(f"CPUs more than 15% busy before {len(hot)} of the {len(meta['steps'])} steps "
                            f"(up to {max(p for p, _ in hot)}%)")
    if quick:
        w("> **Smoke test (`--quick`)**: few repetitions and only some cases; not a measurement to quote.")
        w("")
    if busy:
        w("> **The machine was busy** (" + "; ".join(busy) + "): these figures are not to be quoted.")
        w("")

    # Machine.
    cores = None
    try:
        cores = int(cpu["Core(s) per socket"]) * int(cpu.get("Socket(s)", "1"))
    except (KeyError, ValueError):
        pass
    flags = set(cpu.get("Flags", "").split())
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in flags]
    mem = re.search(r"MemTotal:\s+(\d+) kB", read(L("lscpu.txt")))
    w("## Machine and sitting")
    w("")
    w(f"- CPU: {cpu.get('Model name', DASH)} — {cpu.get('CPU(s)', DASH)} logical CPUs, "
      f"{cores if cores is not None else DASH} cores, {cpu.get('Thread(s) per core', DASH)} thread(s) per core; "
      f"SIMD: {', '.join(simd) or DASH}"
      + (f"; L2 {cpu['L2 cache']}" if "L2 cache" in cpu else "")
      + (f", L3 {cpu['L3 cache']}" if "L3 cache" in cpu else "")
      + (f"; memory {int(mem.group(1)) / 2**20:.1f} GiB" if mem else ""))
    if "Hypervisor vendor" in cpu:
        w(f"- Virtual machine ({cpu['Hypervisor vendor']})")
    w(f"- Date (UTC): {meta.get('start', DASH)} to {meta.get('end', DASH)}")
    steps = [p for p, _ in meta["steps"]]
    w(f"- CPUs busy (all processes, while this script waited) at the start: {meta.get('cpu_busy_start', DASH)}%; "
      f"before each of the {len(steps)} steps: {'at most ' + str(max(steps)) + '%' if steps else DASH}; "
      f"at the end: {meta.get('cpu_busy_end', DASH)}%. Load average (1, 5, 15 min) before: "
      f"{meta.get('loadavg_start', DASH)} (the build just before counts); after: {meta.get('loadavg_end', DASH)}")
    w(f"- Code: commit {meta.get('git', DASH)}; {meta.get('rustc', DASH)}")
    w(f"- Reference frameworks: {', '.join(versions) or DASH}, via `yardstick.py` "
      "(same sitting, same machine)")
    w(f"- Command: `{command}`")
    # A load outside this VM sharing the host does not show in the CPUs it
    # sees, but it shows in how our training scales: 2 threads ran at about
    # 2.2x one thread in the quiet sittings of this machine.
    scalings = [(batch, div((ours2.get(("model1", batch)) or {}).get("median"),
                            (ours1.get(("model1", batch)) or {}).get("median"))) for batch in (32, 128)]
    scalings = [(b, x) for b, x in scalings if x is not None]
    batch, scaling = min(scalings, key=lambda bx: bx[1], default=(None, None))
    if scaling is not None and scaling < DISTURBED_BELOW:
        w(f"- **A disturbed sitting:** our 2-thread training of model 1 at batch {batch} ran at only "
          f"{scaling:.2f}× its 1-thread rate (about 2.2× in the quiet sittings recorded so far, and "
          f"{DISTURBED_BELOW}× is this report's threshold): something outside this VM shared the host. "
          "The absolute rates below are not representative; the training ratios pair each round's "
          "runs, which evens out a load that comes and goes but not one that slows one side more, "
          "and the one-thread rows may be disturbed too.")
    w("")

    # Training against every peer configuration.
    w("## Training: ours against each peer's fastest configuration")
    w("")
    w("Training images per second, 2 threads, one full step (forward, backward, Adam) on random "
      "images: ours (`train_throughput`, the median of 5 passes), PyTorch in its default NCHW "
      "layout and in channels_last (`benches/yardstick.py train [--channels-last]`, one pass), "
      "Keras on TensorFlow (`benches/yardstick_tf.py train`, the median of 2 passes). The sitting "
      "measures them in rounds: each round runs ours and then the three peers on one case, then the "
      "next case, so that a load which comes and goes falls on both sides of a round's ratio. The "
      "rates are medians over the rounds; *ratio* is ours over the fastest of the three peers "
      "(above 1: ours is faster), the median of the rounds' ratios (each round's in the last "
      "column). Effective GFLOP/s counts 6 × the forward multiply-adds of the spec "
      "(`models/*.json`) per image, as if every convolution ran directly (Winograd does fewer).")
    w("")
    models_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models")
    trows = []
    peer_kinds = ("torch", "torch channels_last", "tensorflow")
    for model, batch in TRAIN_CASES:
        ours_case = ours2.get((model, batch)) or {}
        ours = ours_case.get("median")
        peers = [(peer_train(k, model, batch) or {}).get("img_per_s") for k in peer_kinds]
        if ours is None and all(p is None for p in peers):
            continue
        named = [(p, n) for p, n in zip(peers, ("PyTorch", "PyTorch channels_last", "TensorFlow")) if p]
        best, best_name = max(named, default=(None, None))
        # Round i: ours' i-th pass against the fastest peer's i-th (the peers that have one).
        per_peer = [[r["img_per_s"] for r in peer_rounds(k, model, batch)] for k in peer_kinds]
        round_ratios = []
        for i, o in enumerate(ours_case.get("rounds", [])):
            fastest = max((p[i] for p in per_peer if i < len(p)), default=None)
            if fastest:
                round_ratios.append(o / fastest)
        r = statistics.median(round_ratios) if round_ratios else div(ours, best)
        macs = spec_macs(os.path.join(models_dir, f"{model}.json"))
        gflops = ours * 6 * macs / 1e9 if ours and macs else None
        trows.append([f"{model}, batch {batch}", num(ours), num(gflops), *[num(p) for p in peers],
                      best_name or DASH, ratio(r),
                      verdict(None if r is None else r >= 2.0),
                      ", ".join(f"{x:.2f}" for x in round_ratios) or DASH])
    w(table(["model", "ours (img/s)", "ours (effective GFLOP/s)", "PyTorch", "PyTorch channels_last",
             "Keras/TensorFlow", "fastest peer", "ratio", "target ≥ 2×", "ratio per round"], trows))
    w("")

    # How close to the limit: the step's multiply-adds as executed against the SGEMM peak.
    peak = best_gemm * (t2_threads or 2)
    lrows = []
    for model, batch in TRAIN_CASES:
        ours = (ours2.get((model, batch)) or {}).get("median")
        step = spec_step_macs(os.path.join(models_dir, f"{model}.json"))
        if not ours or not step:
            continue
        direct, executed = step
        rate = 2 * executed * ours / 1e9
        lrows.append([f"{model}, batch {batch}", num(direct / 1e6), num(executed / 1e6),
                      num(2 * direct * ours / 1e9), num(rate),
                      f"{100 * rate / peak:.0f} %" if peak else DASH])
    if lrows:
        w(f"How close to the limit: a training step's multiply-adds per image (forward, weight gradient "
          f"and input gradient of every convolution and dense layer, no input gradient for the first), "
          f"counted directly and as executed (the 3×3 stride-1 layers with at least 16 input channels by "
          f"Winograd F(4×4, 3×3): 36 products per 4×4 output tile, a quarter of the direct count), the "
          f"rates they give at our images/s above, and the executed rate against the SGEMM peak of "
          f"this sitting: the best one-thread rate of the SGEMM table below "
          f"({num(best_gemm)} GFLOP/s) times {t2_threads or 2} threads.")
        w("")
        w(table(["model", "direct M multiply-adds", "executed M multiply-adds", "direct GFLOP/s",
                 "executed GFLOP/s", "executed of the SGEMM peak"], lrows))
        w("")
        w("The rest of each step (the gap to 100 %) is what the per-layer profiles below show: "
          "Winograd's transforms and the im2col copies, which move data rather than multiply, and the "
          "layers without multiply-adds (batch norm, pooling, adds, the optimiser's step).")
        w("")

    # Peak memory of training (benches/peak_memory.sh's table).
    mem_rows = [line for line in read(L("peak_memory.md")).splitlines() if line.startswith("|")]
    if mem_rows:
        w("Peak memory of training (`benches/peak_memory.sh`, `/usr/bin/time -v`): one epoch on "
          "8,192 training images, validation on 1,000, then the test set, with the whole of "
          "CIFAR-10 loaded; the whole process's resident set.")
        w("")
        for line in mem_rows:
            w(line)
        w("")
        fast = next((re.search(r"\(([\d.]+) GB\)", line) for line in mem_rows
                     if line.startswith("| fast | 512 |")), None)
        if fast:
            gb = float(fast.group(1))
            w(f"`fast` at batch 512: {gb:.2f} GB; target below 2 GB: {verdict(gb < 2.0)}.")
            w("")

    # Summary table.
    w("## Ours against the reference frameworks")
    w("")
    w("Latency in microseconds (median). "
      "*Ratio* is how many times faster ours is (above 1: ours is faster).")
    w("")
    rows = []
    for model in ("model1", "model3"):
        b32 = (ours2.get((model, 32)) or {}).get("median")
        b128 = (ours2.get((model, 128)) or {}).get("median")
        r = div(b128, b32)
        rows.append([f"training, {model}: batch 128 per image vs batch 32 (ours)",
                     f"{num(b128)} vs {num(b32)}", DASH, DASH, ratio(r),
                     "batch 128 at least as fast per image: " + verdict(None if r is None else r >= 1.0)])
    auto = crit.get("model1_one_image/classify_auto", {}).get("median_ns")
    winograd = crit.get("model1_one_image/classify_winograd", {}).get("median_ns")
    portable = crit.get("model1_one_image/classify_portable", {}).get("median_ns")
    fast = (crit.get("fast_one_image/classify_winograd") or crit.get("fast_one_image/classify_auto") or {}).get(
        "median_ns")
    direct_us = auto / 1e3 if auto else None
    # Ours as `classify` runs it: with Winograd where measured.
    ours_us = winograd / 1e3 if winograd else direct_us
    for t in (1, 2):
        pt = (yard_infer("torch", t) or {}).get("latency_us")
        ort = (yard_infer("onnxruntime", t) or {}).get("latency_us")
        r = div(ort, ours_us)
        if t == 1:
            target = "≤ ONNX Runtime's one-thread latency: " + verdict(None if r is None else r >= 1.0)
        else:
            target = ""
        rows.append([f"inference, model1, one image: ours 1 thread (Winograd), theirs {t} thread{'s' if t > 1 else ''} (µs)",
                     num(ours_us), num(pt), num(ort), ratio(r) + " vs ONNX Runtime" if r else DASH, target])
    if portable:
        rows.append(["inference, model1, one image, portable backend (no SIMD intrinsics), 1 thread (µs)",
                     num(portable / 1e3), DASH, DASH, DASH, ""])
    if fast:
        rows.append(["inference, fast (models/fast.json, the default of `classify`), one image, 1 thread, Winograd (µs)",
                     num(fast / 1e3), DASH, DASH, DASH, ""])
    if tl.get("max_rss_kb") is not None:
        kb = tl["max_rss_kb"]
        rows.append(["peak RSS of a training run (`/usr/bin/time -v`)",
                     f"{kb / 1024:,.0f} MiB ({kb * 1024 / 1e6:,.0f} MB)", DASH, DASH, DASH,
                     "≤ 1 GB (10⁹ bytes): " + verdict(tl["max_rss_kb"] * 1024 <= 10**9)])
    if tl.get("to75"):
        secs, epoch, acc = tl["to75"]
        rows.append(["time to 75 % test accuracy, model1, full data set (s)",
                     f"{secs:,} (epoch {epoch}: {100 * acc:.2f} %)", DASH, DASH, DASH, "reported"])
    elif tl.get("epochs_seen"):
        rows.append(["time to 75 % test accuracy, model1, full data set (s)",
                     "not reached in that run", DASH, DASH, DASH, "reported"])
    # A quick run measures only some cases: leave out the rows it has no figure for.
    rows = [r for r in rows if r[4] != DASH or any(c != DASH and " vs " not in c for c in r[1:4])]
    w(table(["what", "ours", "PyTorch", "ONNX Runtime", "ratio", "target"], rows))
    w("")
    if scratch:
        w(f"Inference model: {scratch.group(1)}. `infer` classifies into a caller-provided scratch buffer of "
          f"{int(scratch.group(2)):,} f32 ({int(scratch.group(3)):,} bytes) and never spawns a thread.")
    macs = spec_macs(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "model1.json"))
    ort1 = (yard_infer("onnxruntime", 1) or {}).get("latency_us")
    if macs and direct_us:
        rate = 2 * macs / (direct_us * 1e3)
        line = (f"What limits single-image inference: model 1 is {macs / 1e6:.1f} M multiply-adds "
                f"(models/model1.json), so `infer`'s direct tiles ({num(direct_us)} µs) compute {rate:.0f} GFLOP/s "
                f"on one core")
        if best_gemm:
            line += (f", {100 * rate / best_gemm:.0f} % of the best one-thread SGEMM rate measured in this "
                     f"sitting ({best_gemm:.0f} GFLOP/s, table below)")
        if ort1:
            line += f"; ONNX Runtime, counted with the same multiply-adds, {2 * macs / (ort1 * 1e3):.0f} GFLOP/s"
        line += ": at about the core's multiply-add throughput, only fewer multiplies go faster."
        if winograd:
            line += (f" Winograd F(4×4, 3×3) does 4× fewer in the 3×3 layers it runs (conv2–conv6): "
                     f"{num(winograd / 1e3)} µs, {2 * macs / winograd:.0f} effective GFLOP/s, the rest of the "
                     f"time in its transforms, which move the tiles through memory rather than multiply.")
        w(line)
    if no_alloc:
        passed = "no_alloc passed" in no_alloc
        tests = re.findall(r"^test (\S+) \.\.\. (\w+)", no_alloc, re.M)
        names = ", ".join(f"`{n}` {s}" for n, s in tests)
        w(f"Zero heap: `infer/tests/no_alloc.rs` (a counting global allocator around loading and classifying) "
          f"{'**passed**' if passed else '**FAILED**'} in this sitting{(' — ' + names) if names else ''}.")
    if tl:
        w(f"Peak RSS from `{a.time_log}`: {tl.get('max_rss_kb', 0):,} kB for `{tl.get('command', DASH)}` "
          f"(elapsed {tl.get('elapsed', DASH)}, exit status {tl.get('exit', DASH)}); measured when that run was made, "
          "not necessarily in this sitting. Time to 75 %: the trainer's per-epoch times (training and the "
          "evaluation on the 10,000 test images, which is its validation set here) summed up to the first "
          "epoch at or above 75 % test accuracy, from the same log.")
    w("")

    # Every engine, every shipped model, f32 and int8, one image, one thread.
    model_sizes = {}
    for line in read(L("model_sizes.txt")).splitlines():
        size, _, path = line.partition(" ")
        if size.isdigit():
            model_sizes[os.path.basename(path)] = int(size)

    def engine(model, kind):
        """{engine name: latency µs} of the peers for `model`, f32 or int8."""
        out = {}
        for r in engines:
            if r.get("what") != "infer-1-image" or r.get("model") != model or r.get("threads") != 1:
                continue
            fw = str(r.get("framework", ""))
            is_int8 = "int8" in fw
            if is_int8 != (kind == "int8"):
                continue
            if fw.startswith("torch"):
                name = "PyTorch"
            elif fw.startswith("onnxruntime"):
                name = "ONNX Runtime"
            elif fw.startswith("openvino"):
                name = "OpenVINO"
            elif fw.startswith("tflite"):
                name = "TFLite (XNNPACK)" if kind == "f32" else "TFLite"
            else:
                name = fw
            out[name] = r.get("latency_us")
        return out

    erows = []
    for model in ("model1", "fast", "resnet8"):
        for kind in ("f32", "int8"):
            group = f"{model}_one_image" if kind == "f32" else f"{model}_int8_one_image"
            # f32: with Winograd (as `classify` runs them), and direct.
            best_fn = "classify_winograd" if kind == "f32" else "classify_auto"
            ours = (crit.get(f"{group}/{best_fn}") or crit.get(f"{group}/classify_auto") or {}).get("median_ns")
            ours = ours / 1e3 if ours else None
            direct = (crit.get(f"{group}/classify_auto") or {}).get("median_ns") if kind == "f32" else None
            direct = num(direct / 1e3) if direct else DASH
            peers = {k: v for k, v in engine(model, kind).items() if v is not None and k != "PyTorch"}
            best_name, best = min(peers.items(), key=lambda kv: kv[1], default=(None, None))
            r = div(ours, best)
            goal = 0.9 if kind == "f32" else 1.0
            target = (f"≤ {goal}× the fastest {kind} engine: " + verdict(None if r is None else r <= goal))
            cells = ", ".join(f"{k} {num(v)}" for k, v in sorted(peers.items(), key=lambda kv: kv[1]))
            erows.append([f"{model}, {kind}", num(ours), direct, cells or DASH,
                          f"{ratio(r)} of {best_name}" if r is not None else DASH, target])
    if any(row[1] != DASH for row in erows):
        w("## Inference against every engine: one image, one thread, f32 and int8")
        w("")
        w("Latency in microseconds (medians); ours is `infer` (`benches/infer_latency.rs`: `classify_winograd` for "
          "f32, the best kernels with `Model::with_winograd(true)` as the `classify` CLI runs them, and "
          "`classify_auto` for int8; the *direct* column is f32 without Winograd, the smallest scratch), the "
          "peers are `yardstick.py infer --int8` (ONNX Runtime f32 and static int8, OpenVINO f32) and "
          "`yardstick_tf.py infer` (TensorFlow Lite with XNNPACK, f32 and full-integer int8), all in this sitting. "
          "The ratio is our latency over the fastest peer's (below 1: ours is faster). PyTorch, much slower at "
          "one image, is in the log but not counted.")
        w("")
        w(table(["model, precision", "ours (µs)", "ours, direct (µs)", "peers (µs), fastest first",
                 "ours / fastest", "target"], erows))
        w("")
        sizes = []
        for model in ("model1", "fast", "resnet8"):
            f, q = model_sizes.get(f"{model}.safetensors"), model_sizes.get(f"{model}-int8.safetensors")
            if f and q:
                sizes.append(f"{model} {f:,} → {q:,} bytes ({q / f:.2f}×)")
        if sizes:
            w("Model files, f32 → int8: " + "; ".join(sizes) + ".")
        peaks = re.search(r"^peak, one core: f32 FMA ([\d.]+) GFLOP/s, int8 vpdpbusd ([\d.]+) GMAC/s", infer_text,
                          re.M)
        if peaks:
            fma, vnni = float(peaks.group(1)), float(peaks.group(2))
            w(f"What limits each row: the core's peak, measured in this sitting by `infer_latency` (12 independent "
              f"chains of one instruction on registers): {fma:.0f} GFLOP/s of f32 FMA, {vnni:.0f} GMAC/s of int8 "
              f"`vpdpbusd`. Our rate counts the spec's multiply-adds (as if every convolution ran directly) over "
              f"the latency:")
            w("")
            lrows = []
            here = os.path.dirname(os.path.abspath(__file__))
            for model in ("model1", "fast", "resnet8"):
                macs_m = spec_macs(os.path.join(here, "..", "models", f"{model}.json"))
                for kind in ("f32", "int8"):
                    group = f"{model}_one_image" if kind == "f32" else f"{model}_int8_one_image"
                    fns = [("Winograd", "classify_winograd"), ("direct", "classify_auto")] if kind == "f32" \
                        else [("", "classify_auto")]
                    for label, fn in fns:
                        ns = (crit.get(f"{group}/{fn}") or {}).get("median_ns")
                        if not ns or not macs_m:
                            continue
                        if kind == "f32":
                            rate, peak, unit = 2 * macs_m / ns, fma, "GFLOP/s"
                        else:
                            rate, peak, unit = macs_m / ns, vnni, "GMAC/s"
                        lrows.append([f"{model}, {kind}{', ' + label if label else ''}", f"{macs_m / 1e6:.1f} M",
                                      num(ns / 1e3), f"{rate:.0f} {unit}", f"{100 * rate / peak:.0f} %"])
            w(table(["model", "multiply-adds", "µs", "rate", "of the peak"], lrows))
            w("")
            m1 = next((r[4] for r in lrows if r[0] == "model1, f32, direct"), None)
            w((f"Model 1's direct f32 tiles run at {m1} of the peak: on its large layers the kernel is near "
               "the limit. " if m1 else "")
              + "The smaller rates of `fast` and ResNet-8 come from their small layers (8×8 and 4×4 images, "
              "16-channel layers: fewer pixels per weight loaded), from the work between convolutions "
              "(requantization, pooling, adds), and with Winograd from its transforms, which move tiles "
              "through memory instead of multiplying; an effective rate above 100 % is Winograd doing fewer "
              "multiplies than the count. Int8 loses the same way, and its VNNI tiles of at most 8 pixels × 32 "
              "channels load two weight vectors and 8 inputs per 16 `vpdpbusd`.")
            w("")
        for model in ("model1", "fast", "resnet8"):
            m = re.search(rf"^models/{model}\.safetensors: scratch \d+ f32 = (\d+) bytes\n"
                          rf"  with Winograd: scratch \d+ f32 = (\d+) bytes", infer_text, re.M)
            q = re.search(rf"^models/{model}-int8\.safetensors: scratch (\d+) f32 = (\d+) bytes", infer_text, re.M)
            parts = []
            if m:
                parts.append(f"f32 {int(m.group(1)):,} bytes (with Winograd {int(m.group(2)):,})")
            if q:
                parts.append(f"int8 {int(q.group(2)):,} bytes")
            if parts:
                w(f"Scratch, {model}: " + "; ".join(parts) + ".")
        w("")

    # Scaling.
    w("## Scaling: 1 thread against 2 (`RAYON_NUM_THREADS`)")
    w("")
    srows = []
    for key in sorted(set(ours1) | set(ours2)):
        one = (ours1.get(key) or {}).get("median")
        two = (ours2.get(key) or {}).get("median")
        srows.append([f"ours, training {key[0]}, batch {key[1]} (img/s)", num(one), num(two), ratio(div(two, one))])
    for model, batch in (("model1", 32), ("model1", 128), ("model3", 32), ("model3", 128)):
        one = (torch_train(model, batch, 1) or {}).get("img_per_s")
        two = (torch_train(model, batch, 2) or {}).get("img_per_s")
        if one is not None:
            srows.append([f"PyTorch, training {model}, batch {batch} (img/s)", num(one), num(two), ratio(div(two, one))])
    for prefix, name in (("torch", "PyTorch"), ("onnxruntime", "ONNX Runtime")):
        one = (yard_infer(prefix, 1) or {}).get("latency_us")
        two = (yard_infer(prefix, 2) or {}).get("latency_us")
        if one is not None or two is not None:
            srows.append([f"{name}, inference model1, one image (µs)", num(one), num(two), ratio(div(one, two))])
    w(table(["what", "1 thread", "2 threads", "speed-up"], srows))
    w("")
    w(f"Threads reported by the training bench: {t1_threads if t1_threads is not None else DASH} and "
      f"{t2_threads if t2_threads is not None else DASH}. Ours splits each batch into one chunk of whole "
      "images per thread; `infer` is single-threaded by design.")
    w("")

    # GEMM.
    w("## SGEMM: `matrixmultiply` against the `gemm` crate (burn, candle)")
    w("")
    if gemm_rows:
        g0 = gemm_rows[0]
        w(f"One thread each, at the shapes a {g0['model']} training step at batch {g0['batch']} produces "
          f"(batch split over {g0['threads']} threads, as in training; convolution shapes are one im2col tile, "
          "as when every convolution runs by im2col: with Winograd, conv2–conv6 instead make 36 products per "
          "block of tiles with k = Cin). "
          "`op`: whether A, B are used as stored (N) or transposed (T). *calls* is how many such products one "
          "step needs (FLOP-weighted). GFLOP/s is the median of alternating samples; both libraries were "
          "checked to agree first (largest absolute difference shown). The `gemm` crate is built with its `x86-v4` feature, so "
          "both use AVX-512 where the CPU has it (runtime dispatch).")
        w("")
        grows = []
        faster_mm = 0
        for r in gemm_rows:
            rr = r["ratio_mm_over_gemm"]
            faster_mm += rr > 1
            grows.append([r["layer"], r["pass"], f"{r['m']}×{r['k']}×{r['n']}", r["op"],
                          num(r["calls_per_step"]), num(r["matrixmultiply_gflops"]), num(r["gemm_gflops"]),
                          ratio(rr), f"{r['max_abs_diff']:.1e}"])
        w(table(["layer", "pass", "m×k×n", "op", "calls", "matrixmultiply GFLOP/s", "gemm GFLOP/s",
                 "speed matrixmultiply / gemm", "max abs difference"], grows))
        w("")
        n = len(gemm_rows)
        if gemm_step:
            mm, gm = gemm_step["matrixmultiply_ms"], gemm_step["gemm_ms"]
            winner = "`matrixmultiply`" if mm < gm else "`gemm`"
            w(f"At these shapes {winner} is the faster overall: summed over one step's products (calls × time), "
              f"the GEMMs of a {gemm_step['model']} step at batch {gemm_step['batch']} take "
              f"{mm:.1f} ms with `matrixmultiply` and {gm:.1f} ms with `gemm` on one thread "
              f"({max(mm, gm) / min(mm, gm):.2f}× in favour of {winner}). "
              f"Shape by shape, `matrixmultiply` is faster at {faster_mm} of the {n}, `gemm` at the other "
              f"{n - faster_mm}.")
        else:
            w(f"`matrixmultiply` is faster at {faster_mm} of the {n} shapes.")
        w("")
        g_step = (ours2.get(("model1", 32)) or {}).get("median")
        mm_step = (ours_mm.get(("model1", 32)) or {}).get("median")
        if g_step and mm_step:
            w(f"Whole training steps of model1 at batch 32 on {t2_threads} threads, same sitting: "
              f"{g_step:.1f} images/s with the `gemm` backend, {mm_step:.1f} with `matrixmultiply` "
              f"({g_step / mm_step:.2f}×). The trainer's default is the `gemm` crate (cargo feature "
              "`gemm-backend`) because of these figures; `--no-default-features` builds it on "
              "`matrixmultiply`, and `trainer::gemm::set_backend` switches at run time.")
            w("")
    else:
        w(DASH)
        w("")

    # Convolutions.
    w("## Convolutions of model 1, one at a time")
    w("")
    if conv_rows:
        c0 = conv_rows[0]
        w(f"`trainer::layers::Conv2d` at its real input shape, batch {c0['batch']}, "
          f"{c0['threads']} threads; median of {c0['samples']} calls. Backward includes the input gradient "
          "except for the first layer. Each layer runs by its default algorithm (**bold**): Winograd "
          "F(4×4, 3×3) for 3×3 stride-1 layers with at least 16 input channels on a CPU with AVX-512 "
          "(the transforms' fast version), the direct sums (`direct`: no im2col copies) for layers with "
          "at most 4 input channels on such a CPU, im2col + SGEMM otherwise; "
          "Winograd and direct layers are also timed by im2col for comparison. GFLOP/s is *effective*: a direct "
          "convolution's multiply-adds over the time, so Winograd's fewer multiplies show as a higher rate.")
        w("")
        crows = []
        for r in conv_rows:
            alg = r.get("algorithm", "im2col")
            if r.get("default", True):
                alg = f"**{alg}**"
            crows.append([r["layer"], "×".join(map(str, r["input"])), "×".join(map(str, r["output"])),
                          "yes" if r["dx"] else "no", alg, num(r["fwd_ms"], 2), num(r["fwd_gflops"]),
                          num(r["bwd_ms"], 2), num(r["bwd_gflops"])])
        if conv_total:
            crows.append(["**all** (default algorithms)", "", "", "", "", num(conv_total["fwd_ms"], 2), "",
                          num(conv_total["bwd_ms"], 2), ""])
        w(table(["layer", "input", "output", "dx", "algorithm", "forward ms", "forward GFLOP/s",
                 "backward ms", "backward GFLOP/s"], crows))
        w("")
        pairs = {}
        for r in conv_rows:
            pairs.setdefault(r["layer"], {})[r.get("algorithm", "im2col")] = r
        both = [p for p in pairs.values() if "winograd" in p and "im2col" in p]
        if both:
            tw = sum(p["winograd"]["fwd_ms"] + p["winograd"]["bwd_ms"] for p in both)
            ti = sum(p["im2col"]["fwd_ms"] + p["im2col"]["bwd_ms"] for p in both)
            w(f"Over the {len(both)} layers where Winograd applies, forward and backward take "
              f"{tw:.2f} ms by Winograd and {ti:.2f} ms by im2col ({ti / tw:.2f}×).")
            w("")
        direct = [(l, p) for l, p in pairs.items() if "direct" in p and "im2col" in p]
        for layer, p in direct:
            td = p["direct"]["fwd_ms"] + p["direct"]["bwd_ms"]
            ti = p["im2col"]["fwd_ms"] + p["im2col"]["bwd_ms"]
            w(f"{layer} (the direct sums), forward and backward: {td:.2f} ms directly and {ti:.2f} ms by "
              f"im2col ({ti / td:.2f}×).")
            w("")
    else:
        w(DASH)
        w("")

    wrows = []
    for key in [("model1", 32), ("model3", 32)]:
        wi, im = (ours2.get(key) or {}).get("median"), (ours_im2col.get(key) or {}).get("median")
        if wi and im:
            wrows.append(f"{key[0]} batch {key[1]}: {wi:,.1f} images/s by default, {im:,.1f} with "
                         f"im2col only ({wi / im:.2f}×)")
    if wrows:
        w(f"Whole training steps on {t2_threads} threads, same sitting, with the default algorithms and with "
          "im2col for every convolution (`train_throughput --conv im2col`: no Winograd, no direct sums): "
          + "; ".join(wrows) + ".")
        w("")

    # Where a whole training step goes.
    for model, profile, profile_threads in profiles:
        if not profile and model != "model1":
            continue
        w(f"## Where a training step of {model} goes")
        w("")
        if not profile:
            w(DASH)
            w("")
            continue
        total = sum(f + b for _, f, b in profile)
        w(f"`train_throughput --only {model}:32 --profile`, {profile_threads} thread"
          f"{'' if profile_threads == 1 else 's'}: each layer's forward and "
          "backward timed on its own (median of 5 steps), batch 32. *share* is of the sum over all layers.")
        w("")
        prow = [[name, num(f, 2), num(b, 2), f"{100 * (f + b) / total:.1f} %"] for name, f, b in profile]
        prow.append(["**all**", num(sum(f for _, f, _ in profile), 2), num(sum(b for _, _, b in profile), 2),
                     "100 %"])
        w(table(["layer", "forward ms", "backward ms", "share"], prow))
        w("")
        kinds = {}
        for name, f, b in profile:
            kind = re.sub(r"\d+$", "", name)  # conv2 -> conv; maxpool2d stays
            kinds[kind] = kinds.get(kind, 0.0) + f + b
        conv = kinds.get("conv", 0.0)
        fused = sum(1 for name, _, _ in profile if name.endswith("(fused)"))
        w(f"Convolutions (Winograd, direct or im2col + SGEMM{', with the ReLUs fused into them' if fused else ''}) "
          f"take {100 * conv / total:.0f} % of the step; everything else "
          f"(pooling, dropout, dense layers{', the ReLU after a dense layer' if fused else ', ReLU'}) "
          f"{100 * (1 - conv / total):.0f} %."
          + (f" The {fused} rows *relu (fused)* are ReLUs computed inside the convolution before them "
             "(their time is in the convolution's)." if fused else ""))
        w("")

    w("## Reproducing")
    w("")
    w("```text")
    w("bash ../shared/anchors/setup.sh --tf   # once: PyTorch, ONNX Runtime, OpenVINO; TensorFlow")
    w(command)
    w("```")
    w("")
    w("The individual benches: `cargo bench --bench train_throughput`, `--bench infer_latency`, "
      "`--bench gemm`, `--bench conv_layers` (each takes `-- --quick`).")
    w("")
    w("Data-parallel training over MPI (processes against threads, bytes and time in the "
      "all-reduce per step): [SCALING.md](SCALING.md), written by `benches/mpi_scaling.sh`.")

    text = "\n".join(out) + "\n"
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(text)
    if not ours2:
        print("perf_report: no training figures of ours found", file=sys.stderr)


if __name__ == "__main__":
    main()
