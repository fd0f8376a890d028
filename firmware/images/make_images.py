#!/usr/bin/env python3
"""Writes images/cifar10-test.bin: the first N CIFAR-10 test images, each as
one label byte then 32*32*3 pixel bytes in HWC order (what infer takes).

    python3 firmware/images/make_images.py ../shared/cifar10/cifar-10-batches-bin 10
"""
import pathlib
import sys

src = pathlib.Path(sys.argv[1]) / "test_batch.bin"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
data = src.read_bytes()
out = bytearray()
for i in range(n):
    rec = data[i * 3073 : (i + 1) * 3073]
    label, chw = rec[0], rec[1:]
    out.append(label)
    for p in range(1024):
        out.extend((chw[p], chw[1024 + p], chw[2048 + p]))
dst = pathlib.Path(__file__).with_name("cifar10-test.bin")
dst.write_bytes(bytes(out))
print(f"{dst}: {n} images")
