#!/usr/bin/env python3
"""Reads a `trainer`-exported .safetensors file with nothing but numpy, converts its
weights to PyTorch's layouts (docs/INTEROP.md) and runs the network the way PyTorch
would: NCHW activations, OIHW convolution kernels, (out, in) dense matrices, and a
flatten in (C, H, W) order. tests/onnx.rs checks its logits against the trainer's, so
the conversions in docs/INTEROP.md are known to be right.

    python3 scripts/interop_numpy.py MODEL.safetensors IMAGES.u8 N OUT.f32

IMAGES.u8 holds N images of u8 pixels, HWC (the trainer's input); OUT.f32 receives the
N × classes logits as little-endian f32. Handles the sequential layer types of models 1
and 2 (conv2d, relu, maxpool2d, flatten, dropout, dense); other specs are refused.
"""
import json
import struct
import sys

import numpy as np


def load(path):
    """The tensors (numpy arrays, shapes as stored) and the metadata of a safetensors file."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    body = raw[8 + n :]
    tensors = {}
    for name, t in header.items():
        if t["dtype"] != "F32":
            sys.exit(f"{path}: {name} is {t['dtype']}; this script reads f32 models")
        start, end = t["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(t["shape"])
    return tensors, meta


def to_pytorch(tensors, layers):
    """PyTorch-layout parameters per parameter layer, from the trainer's layouts:
    conv2d [kh, kw, in, out] -> [out, in, kh, kw]; dense [in, out] -> [out, in], and for
    the first dense after a flatten its inputs reordered from (H, W, C) to (C, H, W)."""
    params = {}
    shape = None  # (C, H, W) of the activation before a flatten
    for layer in layers:
        kind, name = layer["type"], layer.get("name")
        if kind == "conv2d":
            w = tensors[f"{name}.weight"]
            params[name] = (w.transpose(3, 2, 0, 1), tensors[f"{name}.bias"])
        elif kind == "dense":
            w = tensors[f"{name}.weight"]  # [in, out]
            if shape is not None:
                c, h, wd = shape
                w = w.reshape(h, wd, c, -1).transpose(2, 0, 1, 3).reshape(c * h * wd, -1)
                shape = None
            params[name] = (w.T, tensors[f"{name}.bias"])
        elif kind == "flatten":
            shape = layer["_shape"]
    return params


def same_padding(size, k, s):
    total = max((-(-size // s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def forward(x, layers, params):
    """x: N × C × H × W floats in [0, 1]; returns the logits."""
    for layer in layers:
        kind = layer["type"]
        if kind == "conv2d":
            w, b = params[layer["name"]]
            k, s = layer["kernel"], layer["stride"]
            if layer["padding"] == "same":
                (t, bo), (l, r) = same_padding(x.shape[2], k, s), same_padding(x.shape[3], k, s)
                x = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)))
            win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
            x = np.einsum("nchwij,ocij->nohw", win, w, optimize=True) + b[None, :, None, None]
        elif kind == "maxpool2d":
            k, s = layer["size"], layer["stride"]
            if layer["padding"] != "valid":
                sys.exit("only valid max-pooling is handled here")
            win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
            x = win.max(axis=(4, 5))
        elif kind == "relu":
            x = np.maximum(x, 0)
        elif kind == "flatten":
            x = x.reshape(x.shape[0], -1)  # PyTorch's order: C, H, W
        elif kind == "dropout":
            pass  # identity at inference
        elif kind == "dense":
            w, b = params[layer["name"]]
            x = x @ w.T + b
        else:
            sys.exit(f"layer type {kind!r} is not handled by this script")
    return x


def main():
    model, images, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    tensors, meta = load(model)
    spec = json.loads(meta["architecture"])
    c, h, w = (spec["input"][k] for k in ("channels", "height", "width"))
    x = np.frombuffer(open(images, "rb").read(), dtype=np.uint8).reshape(n, h, w, c)
    x = x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # HWC u8 -> NCHW [0, 1]
    # Record each flatten's input shape (C, H, W), for the dense layer after it.
    probe = np.zeros((1, c, h, w), dtype=np.float32)
    layers = spec["layers"]
    for i, layer in enumerate(layers):
        if layer["type"] == "flatten":
            before = forward(probe, layers[:i], to_pytorch(tensors, layers[:i]))
            layer["_shape"] = before.shape[1:]
    logits = forward(x, layers, to_pytorch(tensors, layers)).astype("<f4")
    open(out, "wb").write(logits.tobytes())
    print(f"{model}: {n} images, logits {logits.shape}, classes {meta['class_names']}")


if __name__ == "__main__":
    main()
