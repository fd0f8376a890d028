"""airbench94's network and recipe in PyTorch, on our CIFAR-10 files, on the CPU.

Issue 18 asks how much of the distance between our `airbench` runs and airbench94's published
94.01 % (Keller Jordan, arXiv 2404.00498, on a GPU with the original CIFAR-10 pixels) is the
data's: ours is decoded from a JPEG export. This script trains the same network with the same
recipe in PyTorch on the very files `trainer` reads, so that the figures can be set side by
side: published, PyTorch on our data, ours. It is written from the paper's and the repository's
description of the recipe (hyperparameters, schedule, initialisation), in fp32 on the CPU:

- network: a 2×2 convolution without padding, 3 → 24 channels, whose filters are the whitening
  transform of the 2×2 patches of the first 5,000 (normalised) training images and their
  negatives (eps 5e-4), held fixed, its bias trained for 3 epochs; the activation; three blocks
  [3×3 conv → max-pool 2 → batch norm → act → 3×3 conv → batch norm → act] of 64, 256 and 256
  channels (convolutions without bias, their first C_in filters the identity); max-pool 3; a
  dense layer without bias, its output times 1/9;
- batch norm: weight fixed at 1, eps 1e-12, running statistics updated with 0.4 of the batch's;
- Nesterov SGD, momentum 0.85, learning rate 11.5 and weight decay 0.0153 per 1,024 examples
  (coupled, as `torch.optim.SGD` applies it, in airbench's decoupled parametrisation), batch-norm
  biases at 64× the rate; loss summed over the batch, label smoothing 0.2; batch 1,024 (the last
  partial batch dropped); the rate linear from 0.2× to 1× over the first 23 % of the steps, then
  to 0.07×; 9.9 epochs;
- lookahead: every 5 steps the averaged state moves towards the live one by 1 − 0.95⁵·(t/T)³ and
  is copied back (batch-norm statistics included); the final weights are the averaged ones;
- data: normalised by the CIFAR-10 channel means and deviations; a random half flipped once, then
  every image flipped on odd epochs; a random translation of up to 2 pixels per image and epoch
  (reflect padding);
- evaluation: plain, and the six-view test-time augmentation (mirror × {no shift, shifted by
  (−1, −1), by (+1, +1)} with reflect padding; logits averaged, the unshifted pair weighted ½).

`--act relu` gives the network of `models/airbench.json` (ReLU for GELU); `--act gelu` is
airbench94's own. The test set is read once, at the end, for the reported figure; nothing is
chosen on it.

Needs the yardstick venv (`bash ../shared/anchors/setup.sh`):

  /tmp/yardstick-venv/bin/python benches/reference/airbench_torch.py \\
      --data ../shared/cifar10/cifar-10-batches-bin [--act relu|gelu] [--seed 1] [--threads 2] \\
      [--epochs 9.9] [--out runs/torch/airbench-relu-seed1.json]

Prints one line per epoch; writes the result (accuracies, time, versions) as JSON to --out.
"""
import argparse
import datetime
import json
import math
import os
import platform
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


def read(folder, names):
    """Images (N, 3, 32, 32) as uint8 and labels, from CIFAR-10 binary batches."""
    rows = np.concatenate(
        [np.fromfile(os.path.join(folder, n), dtype=np.uint8).reshape(-1, 3073) for n in names])
    images = torch.from_numpy(rows[:, 1:].reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(rows[:, 0].astype(np.int64))


def normalise(images):
    return (images.float() / 255 - MEAN) / STD


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def conv(c_in, c_out, kernel=3, padding=1, bias=False):
    c = nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=bias)
    with torch.no_grad():
        if bias:
            c.bias.zero_()
        if c_out >= c_in:
            nn.init.dirac_(c.weight[:c_in])
    return c


def batch_norm(channels):
    # PyTorch's momentum is the batch's share: 1 − 0.6.
    bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    bn.weight.requires_grad_(False)
    return bn


def block(c_in, c_out, act):
    return nn.Sequential(conv(c_in, c_out), nn.MaxPool2d(2), batch_norm(c_out), act(),
                         conv(c_out, c_out), batch_norm(c_out), act())


def network(act):
    return nn.Sequential(
        conv(3, 24, kernel=2, padding=0, bias=True), act(),
        block(24, 64, act), block(64, 256, act), block(256, 256, act),
        nn.MaxPool2d(3), nn.Flatten(), nn.Linear(256, 10, bias=False), Scale(1 / 9))


def whiten(layer, images, eps=5e-4):
    """The whitening filters of `images`' 2×2 patches (second moments, as the normalised
    images have about zero mean), and their negatives."""
    patches = F.unfold(images, 2).transpose(1, 2).reshape(-1, 12).double()
    values, vectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    filters = (vectors.T / torch.sqrt(values + eps).unsqueeze(1)).reshape(12, 3, 2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.cat([filters, -filters]).float())
    layer.weight.requires_grad_(False)


def translate(padded, pad, gen):
    """A random shift of up to `pad` pixels each way per image, from reflect-padded images."""
    n, size = len(padded), padded.shape[-1] - 2 * pad
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    out = torch.empty(n, 3, size, size)
    for sy in range(2 * pad + 1):
        for sx in range(2 * pad + 1):
            m = (dy == sy) & (dx == sx)
            out[m] = padded[m, :, sy:sy + size, sx:sx + size]
    return out


def evaluate(net, images, tta):
    def mirror(x):
        return 0.5 * net(x) + 0.5 * net(x.flip(-1))

    net.eval()
    logits = []
    with torch.no_grad():
        for x in images.split(2000):
            x = x.contiguous(memory_format=torch.channels_last)
            if not tta:
                logits.append(net(x))
                continue
            padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
            shifted = (mirror(padded[:, :, 0:32, 0:32]) + mirror(padded[:, :, 2:34, 2:34])) / 2
            logits.append(0.5 * mirror(x) + 0.5 * shifted)
    net.train()
    return torch.cat(logits)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--act", choices=["relu", "gelu"], default="relu")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=float, default=9.9)
    p.add_argument("--out")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(a.seed)
    start = time.time()

    train_x, train_y = read(a.data, [f"data_batch_{i}.bin" for i in range(1, 6)])
    test_x, test_y = read(a.data, ["test_batch.bin"])
    train_x, test_x = normalise(train_x), normalise(test_x)

    act = {"relu": nn.ReLU, "gelu": nn.GELU}[a.act]
    net = network(act)
    whiten(net[0], train_x[:5000])
    net = net.to(memory_format=torch.channels_last)

    batch, momentum = 1024, 0.85
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    lr = 11.5 / kilostep
    wd = 0.0153 * batch / kilostep
    norm_biases = [p for n, p in net.named_parameters() if p.requires_grad and
                   isinstance(dict(net.named_modules())[n.rsplit(".", 1)[0]], nn.BatchNorm2d)]
    others = [p for p in net.parameters() if p.requires_grad and
              all(p is not q for q in norm_biases)]
    opt = torch.optim.SGD([dict(params=norm_biases, lr=64 * lr, weight_decay=wd / (64 * lr)),
                           dict(params=others, lr=lr, weight_decay=wd / lr)],
                          momentum=momentum, nesterov=True)
    steps_per_epoch = len(train_x) // batch
    total = math.ceil(steps_per_epoch * a.epochs)
    warm = int(0.23 * total)

    def factor(step):
        if step < warm:
            return 0.2 + 0.8 * step / warm
        return 1.0 + (0.07 - 1.0) * (step - warm) / (total - warm)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    average = {k: v.clone() for k, v in net.state_dict().items()}

    def lookahead(decay):
        for k, v in net.state_dict().items():
            if v.dtype.is_floating_point:
                average[k].lerp_(v, 1 - decay)
                v.copy_(average[k])

    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2, reduction="sum")
    flip = torch.rand(len(train_x), generator=gen) < 0.5
    base = torch.where(flip.view(-1, 1, 1, 1), train_x.flip(-1), train_x)
    padded = F.pad(base, (2, 2, 2, 2), mode="reflect")
    step = 0
    for epoch in range(math.ceil(a.epochs)):
        net[0].bias.requires_grad_(epoch < 3)
        images = translate(padded, 2, gen)
        if epoch % 2 == 1:
            images = images.flip(-1)
        order = torch.randperm(len(images), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            x = images[idx].contiguous(memory_format=torch.channels_last)
            loss = loss_fn(net(x), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 5 == 0:
                lookahead(0.95 ** 5 * (step / total) ** 3)
            if step >= total:
                lookahead(1.0)
                break
        print(f"epoch {epoch + 1}: steps {step}, last batch loss {loss.item() / batch:.4f}, "
              f"{time.time() - start:.0f} s", flush=True)

    plain = (evaluate(net, test_x, False).argmax(1) == test_y).float().mean().item()
    tta = (evaluate(net, test_x, True).argmax(1) == test_y).float().mean().item()
    seconds = time.time() - start
    result = {
        "what": "airbench94 recipe in PyTorch (benches/reference/airbench_torch.py)",
        "act": a.act, "seed": a.seed, "epochs": a.epochs, "threads": a.threads,
        "data": a.data, "test_accuracy": plain, "tta_accuracy": tta, "seconds": round(seconds, 1),
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    print(json.dumps(result))
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
