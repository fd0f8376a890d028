"""(A copy of ../shared/anchors/yardstick.py with `resnet8` and `airbench` added:
models/resnet8.json, models/airbench.json; and `--warmup-batches`, 20 as there.)

Measures the reference frameworks on this machine, on the reference CNNs, so that our
own benchmarks can be quoted as ratios measured in the same sitting.

  python yardstick.py train  [--model model1|model3|fast|airbench] [--batch 32] [--images 6400] [--threads 2]
  python yardstick.py train  ... [--channels-last]          (PyTorch's often faster CPU layout)
  python yardstick.py infer  [--model model1|model3|fast|resnet8|airbench] [--threads 1] [--int8]
                             (PyTorch, ONNX Runtime f32 [and int8], and OpenVINO when installed)

Prints one JSON line per measurement (median of --reps repetitions after a warm-up).
PyTorch trains on random data of the CIFAR-10 shape (throughput does not depend on the
values); inference is timed in PyTorch and, when installed, ONNX Runtime.
"""
import argparse, json, statistics, tempfile, time, warnings
import torch, torch.nn as nn

warnings.filterwarnings("ignore")

def model1():
    c = lambda i, o: [nn.Conv2d(i, o, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*c(3, 32), *c(32, 32), nn.MaxPool2d(2), *c(32, 64), *c(64, 64), nn.MaxPool2d(2),
                         *c(64, 128), *c(128, 128), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.2),
                         nn.Linear(2048, 128), nn.ReLU(), nn.Linear(128, 10))

def model3():
    b = lambda i, o, k: [nn.Conv2d(i, o, k, padding=k // 2), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2, 2)]
    return nn.Sequential(*b(3, 32, 5), *b(32, 64, 3), *b(64, 128, 3), nn.Flatten(), nn.Linear(2048, 128),
                         nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10))

class Fast(nn.Module):
    """models/fast.json: a narrow ResNet-9-like net (conv-BN-ReLU, two residual adds, GAP)."""
    def __init__(self):
        super().__init__()
        cbr = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=True), nn.BatchNorm2d(o), nn.ReLU())
        self.prep = nn.Sequential(cbr(3, 32), cbr(32, 64), nn.MaxPool2d(2))
        self.res1 = nn.Sequential(cbr(64, 64), cbr(64, 64))
        self.mid = nn.Sequential(cbr(64, 128), nn.MaxPool2d(2), cbr(128, 256), nn.MaxPool2d(2))
        self.res2 = nn.Sequential(cbr(256, 256), cbr(256, 256))
        self.head = nn.Linear(256, 10)
    def forward(self, x):
        x = self.prep(x); x = x + self.res1(x); x = self.mid(x); x = x + self.res2(x)
        return self.head(x.mean(dim=(2, 3)))

class ResNet8(nn.Module):
    """models/resnet8.json: MLPerf Tiny's CIFAR-10 ResNet-8 (3 stacks of 16, 32, 64 filters,
    1×1 stride-2 projection shortcuts without batch norm, global average pooling)."""
    def __init__(self):
        super().__init__()
        cb = lambda i, o, s: [nn.Conv2d(i, o, 3, stride=s, padding=1), nn.BatchNorm2d(o)]
        self.stem = nn.Sequential(*cb(3, 16, 1), nn.ReLU())
        self.main = nn.ModuleList([
            nn.Sequential(*cb(16, 16, 1), nn.ReLU(), *cb(16, 16, 1)),
            nn.Sequential(*cb(16, 32, 2), nn.ReLU(), *cb(32, 32, 1)),
            nn.Sequential(*cb(32, 64, 2), nn.ReLU(), *cb(64, 64, 1))])
        self.short = nn.ModuleList([nn.Identity(), nn.Conv2d(16, 32, 1, stride=2), nn.Conv2d(32, 64, 1, stride=2)])
        self.head = nn.Linear(64, 10)
    def forward(self, x):
        x = self.stem(x)
        for main, short in zip(self.main, self.short):
            x = torch.relu(main(x) + short(x))
        return self.head(x.mean(dim=(2, 3)))

def airbench():
    """models/airbench.json: airbench94's network as we train it (ReLU for GELU): a 2×2
    valid convolution to 24 channels, three blocks [conv 3×3 → max-pool 2 → BN → ReLU →
    conv 3×3 → BN → ReLU] of 64, 256, 256 channels, max-pool 3, a dense head."""
    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(o), nn.ReLU(),
                nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]
    return nn.Sequential(nn.Conv2d(3, 24, 2), nn.ReLU(), *block(24, 64), *block(64, 256), *block(256, 256),
                         nn.MaxPool2d(3), nn.Flatten(), nn.Linear(256, 10))

MODELS = {"model1": model1, "model3": model3, "fast": Fast, "resnet8": ResNet8, "airbench": airbench}
# multiply-adds per image, forward (fast: counted from models/fast.json's layer shapes)
FWD_MACS = {"model1": 38_896_896, "model3": 12_158_208,
            "fast": 32*32*(27*32 + 288*64) + 16*16*(576*64*2 + 576*128) + 8*8*1152*256 + 4*4*2304*256*2 + 2560,
            "resnet8": 32*32*(27*16 + 2*144*16) + 16*16*(16*32 + 144*32 + 288*32) + 8*8*(32*64 + 288*64 + 576*64) + 640,
            "airbench": 31*31*(12*24 + 216*64) + 15*15*(576*64 + 576*256) + 7*7*(2304*256*2) + 3*3*2304*256 + 2560}

def emit(**kw):
    print(json.dumps(kw), flush=True)

def train(a):
    torch.manual_seed(0)
    m = MODELS[a.model]().train()
    x = torch.rand(a.images, 3, 32, 32)
    if a.channels_last:  # often PyTorch's fastest CPU layout for convolutions (oneDNN)
        m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (a.images,))
    opt, lossf = torch.optim.Adam(m.parameters()), nn.CrossEntropyLoss()
    def epoch(n):
        for i in range(0, n - a.batch + 1, a.batch):
            opt.zero_grad(set_to_none=True)
            lossf(m(x[i:i + a.batch]), y[i:i + a.batch]).backward()
            opt.step()
    epoch(a.batch * a.warmup_batches)
    rates = []
    for _ in range(a.reps):
        t = time.perf_counter(); epoch(a.images); rates.append(a.images / (time.perf_counter() - t))
    med = statistics.median(rates)
    emit(framework=f"torch {torch.__version__}" + (" channels_last" if a.channels_last else ""), model=a.model,
         what="train", batch=a.batch, threads=a.threads,
         img_per_s=round(med, 1), runs=[round(r, 1) for r in rates],
         gflop_per_s=round(med * 6 * FWD_MACS[a.model] / 1e9, 1))

def latency(run, x, reps):
    for _ in range(50): run(x)
    meds = []
    for _ in range(reps):
        ts = []
        for _ in range(500):
            t = time.perf_counter(); run(x); ts.append(time.perf_counter() - t)
        meds.append(statistics.median(ts) * 1e6)
    return statistics.median(meds), meds

def infer(a):
    torch.manual_seed(0)
    m = MODELS[a.model]().eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        med, runs = latency(m, x, a.reps)
    emit(framework=f"torch {torch.__version__}", model=a.model, what="infer-1-image", threads=a.threads,
         latency_us=round(med, 1), runs=[round(r, 1) for r in runs])
    try:
        import onnxruntime as ort
    except ImportError:
        return
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/m.onnx"
        torch.onnx.export(m, (x,), path, input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = a.threads, 1
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        xn = x.numpy()
        med, runs = latency(lambda v: s.run(None, {"x": v}), xn, a.reps)
        emit(framework=f"onnxruntime {ort.__version__}", model=a.model, what="infer-1-image", threads=a.threads,
             latency_us=round(med, 1), runs=[round(r, 1) for r in runs])
        if a.int8:  # static int8 quantization (QDQ, per-channel weights), calibrated on random images
            from onnxruntime.quantization import quantize_static, CalibrationDataReader, QuantType, QuantFormat
            class Reader(CalibrationDataReader):
                def __init__(self): self.it = iter([{"x": torch.rand(1, 3, 32, 32).numpy()} for _ in range(32)])
                def get_next(self): return next(self.it, None)
            q = f"{d}/m8.onnx"
            quantize_static(path, q, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            s8 = ort.InferenceSession(q, so, providers=["CPUExecutionProvider"])
            med, runs = latency(lambda v: s8.run(None, {"x": v}), xn, a.reps)
            emit(framework=f"onnxruntime {ort.__version__} int8", model=a.model, what="infer-1-image",
                 threads=a.threads, latency_us=round(med, 1), runs=[round(r, 1) for r in runs])
        try:
            import openvino as ov
        except ImportError:
            return
        core = ov.Core()
        c = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_NUM_THREADS": a.threads,
                               "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
        req = c.create_infer_request()
        med, runs = latency(lambda v: req.infer({0: v}), xn, a.reps)
        emit(framework=f"openvino {ov.__version__}", model=a.model, what="infer-1-image", threads=a.threads,
             latency_us=round(med, 1), runs=[round(r, 1) for r in runs])

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["train", "infer"])
    p.add_argument("--model", default="model1", choices=sorted(MODELS))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--images", type=int, default=6400)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup-batches", type=int, default=20, help="train: untimed batches first")
    p.add_argument("--channels-last", action="store_true", help="train: PyTorch channels_last layout")
    p.add_argument("--int8", action="store_true", help="infer: also ONNX Runtime with static int8 quantization")
    a = p.parse_args()
    a.threads = a.threads or (2 if a.what == "train" else 1)
    torch.set_num_threads(a.threads)
    train(a) if a.what == "train" else infer(a)
