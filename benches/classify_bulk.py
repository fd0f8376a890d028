#!/usr/bin/env python3
"""The peers' side of benches/classify_bulk.sh: classify every PNG/JPEG under a folder
the way `classify DIR` does (decode, centre-crop to the model's aspect ratio, bilinear
resize, classify), with ONNX Runtime or PyTorch, in each one's fastest setup here:
Pillow decoding on a thread pool (it releases the GIL), batches of --batch images,
--threads intra-op threads, PyTorch in channels_last under inference_mode.

    python classify_bulk.py ort   --onnx fast.onnx          DIR [--csv OUT]
    python classify_bulk.py torch --model fast.safetensors  DIR [--csv OUT]

The ONNX file is `trainer export --onnx` of the same model file that PyTorch reads here
(its weights permuted to PyTorch's layouts as docs/INTEROP.md says), so all three give
the same classes; --csv writes `file,class_index` rows to compare with classify's.
Prints one JSON line: images, seconds (wall, from listing the folder to the last class),
images per second.
"""
import argparse
import concurrent.futures
import json
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from interop_numpy import load as load_safetensors  # noqa: E402  (the one safetensors reader)

EXTENSIONS = (".png", ".jpg", ".jpeg")


def files_under(root):
    found = []
    for dirpath, _, names in os.walk(root):
        found.extend(os.path.join(dirpath, n) for n in names if n.lower().endswith(EXTENSIONS))
    return sorted(found)


def load_image(path, h, w):
    """HWC float32 in [0, 1]: centre crop to w:h, bilinear (antialiased) resize."""
    img = Image.open(path).convert("RGB")
    iw, ih = img.size
    if (iw, ih) != (w, h):
        # classify's `input::fit` geometry.
        cw, ch = iw, ih
        if iw * h > ih * w:
            cw = min(max((ih * w + h // 2) // h, 1), iw)
        elif iw * h < ih * w:
            ch = min(max((iw * h + w // 2) // w, 1), ih)
        x, y = (iw - cw) // 2, (ih - ch) // 2
        img = img.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def read_safetensors(path):
    """The f32 tensors (writable copies) and the spec of a model file."""
    tensors, meta = load_safetensors(path)
    return {k: v.copy() for k, v in tensors.items()}, json.loads(meta["architecture"])


def torch_model(path):
    """A PyTorch module computing the model file's spec (conv2d, batchnorm, relu,
    maxpool2d, global_avg_pool, flatten, dropout, dense, add; `input`/`from` DAGs)."""
    import torch
    import torch.nn.functional as F

    tensors, spec = read_safetensors(path)
    t = lambda name: torch.from_numpy(tensors[name])
    layers = spec["layers"]
    names = [l.get("name") for l in layers]

    def same_pads(size, k, s):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        return total // 2, total - total // 2

    class Spec(torch.nn.Module):
        def forward(self, x):  # x: N, C, H, W
            outs = [x]
            for i, l in enumerate(layers):
                kind = l["type"]
                src = outs[names.index(l["input"]) + 1] if l.get("input") else outs[-1]
                if kind == "conv2d":
                    k, s, n = l["kernel"], l["stride"], l["name"]
                    if l["padding"] == "same":
                        (a, b), (c, d) = same_pads(src.shape[2], k, s), same_pads(src.shape[3], k, s)
                        src = F.pad(src, (c, d, a, b))
                    w = t(f"{n}.weight").permute(3, 2, 0, 1).contiguous()
                    y = F.conv2d(src, w, t(f"{n}.bias"), stride=s)
                elif kind == "batchnorm":
                    n = l["name"]
                    y = F.batch_norm(src, t(f"{n}.moving_mean"), t(f"{n}.moving_variance"),
                                     t(f"{n}.gamma"), t(f"{n}.beta"), False, 0.0, l["epsilon"])
                elif kind == "relu":
                    y = F.relu(src)
                elif kind == "maxpool2d":
                    k, s = l["size"], l["stride"]
                    if l["padding"] == "same":
                        (a, b), (c, d) = same_pads(src.shape[2], k, s), same_pads(src.shape[3], k, s)
                        src = F.pad(src, (c, d, a, b), value=float("-inf"))
                    y = F.max_pool2d(src, k, s)
                elif kind == "global_avg_pool":
                    y = src.mean(dim=(2, 3))
                elif kind == "flatten":
                    y = src.permute(0, 2, 3, 1).flatten(1) if src.dim() == 4 else src  # (h, w, c) order
                elif kind == "dropout":
                    y = src
                elif kind == "dense":
                    n = l["name"]
                    y = F.linear(src.flatten(1), t(f"{n}.weight").T.contiguous(), t(f"{n}.bias"))
                elif kind == "add":
                    y = src + outs[names.index(l["from"]) + 1]
                else:
                    sys.exit(f"layer type {kind!r} is not handled here")
                outs.append(y)
            return outs[-1]

    return Spec().eval(), spec


def main():
    p = argparse.ArgumentParser()
    p.add_argument("engine", choices=["ort", "torch"])
    p.add_argument("dir")
    p.add_argument("--onnx", help="ort: the model exported by `trainer export --onnx`")
    p.add_argument("--model", help="torch: the f32 model file (safetensors)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--csv", help="write file,class_index rows here")
    a = p.parse_args()

    start = time.perf_counter()
    if a.engine == "ort":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = a.threads
        session = ort.InferenceSession(a.onnx, opts, providers=["CPUExecutionProvider"])
        _, c, h, w = session.get_inputs()[0].shape
        run = lambda x: session.run(["logits"], {"input": x})[0]
        framework = f"onnxruntime {ort.__version__}"
    else:
        import torch

        torch.set_num_threads(a.threads)
        model, spec = torch_model(a.model)
        model = model.to(memory_format=torch.channels_last)
        c, h, w = (spec["input"][k] for k in ("channels", "height", "width"))

        def run(x):
            with torch.inference_mode():
                x = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
                return model(x).numpy()

        framework = f"torch {torch.__version__} channels_last"
    files = files_under(a.dir)
    classes = []
    with concurrent.futures.ThreadPoolExecutor(a.threads) as pool:
        for i in range(0, len(files), a.batch):
            chunk = files[i : i + a.batch]
            images = list(pool.map(lambda f: load_image(f, h, w), chunk))
            x = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))
            classes.extend(run(x).argmax(axis=1).tolist())
    seconds = time.perf_counter() - start
    if a.csv:
        with open(a.csv, "w") as out:
            out.write("file,index\n")
            out.writelines(f"{f},{k}\n" for f, k in zip(files, classes))
    print(json.dumps({"framework": framework, "threads": a.threads, "batch": a.batch,
                      "images": len(files), "seconds": round(seconds, 3),
                      "images_per_second": round(len(files) / seconds, 1)}))


if __name__ == "__main__":
    main()
