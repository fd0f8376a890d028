#!/usr/bin/env python3
"""Writes a copy of a CIFAR-10 binary folder whose training images went through one
more JPEG round (encode at --quality, decode), to measure what a JPEG round costs a
recipe (issue 18: our data set is itself decoded from a JPEG export, quality about 75).
The test batch and the class names are copied unchanged.

    python3 scripts/recompress_cifar.py SRC_DIR DST_DIR [--quality 75] [--shift 4]

A second round at the same quality on the same 8×8 block grid changes almost nothing
(JPEG is nearly idempotent there: a mean change of 0.16 per value here), so by default
each image is compressed on a grid shifted by --shift pixels (reflect-padded, then
cropped back): an independent round, whose loss is like the first one's.

Needs numpy and Pillow (`/tmp/yardstick-venv/bin/python`, after `pip install pillow`).
Prints the mean absolute pixel change of the round.
"""
import argparse
import io
import os
import shutil

import numpy as np
from PIL import Image

p = argparse.ArgumentParser()
p.add_argument("src")
p.add_argument("dst")
p.add_argument("--quality", type=int, default=75)
p.add_argument("--shift", type=int, default=4, help="block-grid shift in pixels (0: the same grid)")
a = p.parse_args()
os.makedirs(a.dst, exist_ok=True)
for name in ("test_batch.bin", "batches.meta.txt"):
    shutil.copyfile(os.path.join(a.src, name), os.path.join(a.dst, name))
changed, pixels = 0, 0
for i in range(1, 6):
    name = f"data_batch_{i}.bin"
    rows = np.fromfile(os.path.join(a.src, name), dtype=np.uint8).reshape(-1, 3073).copy()
    for row in rows:
        hwc = row[1:].reshape(3, 32, 32).transpose(1, 2, 0)
        s = a.shift
        padded = np.pad(hwc, ((s, 0), (s, 0), (0, 0)), mode="reflect") if s else hwc
        buf = io.BytesIO()
        Image.fromarray(padded).save(buf, format="JPEG", quality=a.quality)
        again = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))[s:, s:]
        changed += int(np.abs(again.astype(np.int16) - hwc.astype(np.int16)).sum())
        pixels += again.size
        row[1:] = again.transpose(2, 0, 1).reshape(-1)
    tmp = os.path.join(a.dst, name + ".partial")
    rows.tofile(tmp)
    os.replace(tmp, os.path.join(a.dst, name))
print(f"{a.dst}: training images re-compressed at JPEG quality {a.quality}, grid shifted by {a.shift}; "
      f"mean absolute change {changed / pixels:.2f} per 8-bit value")
