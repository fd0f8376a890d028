#!/usr/bin/env python3
"""Which operators ONNX Runtime runs for an exported model, after its graph
optimisations (a QDQ int8 export should show QLinearConv and friends).

    python3 scripts/onnx_ops.py MODEL.onnx

Needs onnxruntime and onnx (`bash ../shared/anchors/setup.sh` installs both in
/tmp/yardstick-venv).
"""
import collections
import os
import sys
import tempfile

import onnx
import onnxruntime as ort

model = sys.argv[1]
with tempfile.TemporaryDirectory() as tmp:
    options = ort.SessionOptions()
    options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph
ops = collections.Counter(node.op_type for node in graph.node)
print(f"onnxruntime {ort.__version__}, {model}:")
for op, n in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])):
    print(f"  {n:3d} {op}")
