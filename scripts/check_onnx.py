#!/usr/bin/env python3
"""Runs an ONNX model in ONNX Runtime on raw float32 inputs and writes its
logits as raw float32 (tests/onnx.rs uses it to check `trainer export --onnx`).

    python3 scripts/check_onnx.py MODEL.onnx INPUT.f32 N C H W LOGITS.f32

INPUT.f32 holds N images as [N, C, H, W] float32 (pixel / 255), little-endian.
Exits with status 3 when onnxruntime is not installed (the test then skips).
"""
import sys

try:
    import numpy as np
    import onnxruntime as ort
except ImportError as e:
    print(f"onnxruntime or numpy missing: {e}", file=sys.stderr)
    sys.exit(3)

model, inputs, n, c, h, w, out = sys.argv[1:8]
x = np.fromfile(inputs, dtype="<f4").reshape(int(n), int(c), int(h), int(w))
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
(logits,) = session.run(["logits"], {"input": x})
logits.astype("<f4").tofile(out)
print(f"onnxruntime {ort.__version__}: {model} -> logits {list(logits.shape)}")
