#!/usr/bin/env python3
"""Exact instruction profile of a Cortex-M firmware under QEMU, by function.

QEMU logs every translation block once as it translates it (`-d in_asm`:
its instructions) and every execution of one (`-d exec`, with `nochain` so
that none is skipped); instructions executed = Σ executions × block size.
The log is streamed through a FIFO (it would be gigabytes), and blocks are
mapped to functions with `nm`.

    mkfifo /tmp/qfifo
    python3 scripts/qemu_profile.py ELF /tmp/qfifo > profile.txt &
    qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -icount shift=0 \\
        -semihosting-config enable=on,target=native -kernel ELF \\
        -d in_asm,exec,nochain -D /tmp/qfifo

ELF: e.g. target/firmware/thumbv7em-none-eabihf/release/infer-firmware, which
`cargo test --release --test firmware` builds.
"""
import bisect
import collections
import re
import subprocess
import sys


def main(elf, log):
    counts = collections.Counter()
    size = {}
    current = None
    with open(log, errors="replace") as f:
        for line in f:
            if line.startswith("Trace"):
                m = re.search(r"/([0-9a-f]{8})/", line)
                if m:
                    counts[int(m.group(1), 16)] += 1
                current = None
            elif line.startswith("IN:"):
                current = "start"
            elif current is not None:
                m = re.match(r"0x([0-9a-f]{8}):", line)
                if m:
                    address = int(m.group(1), 16)
                    if current == "start":
                        current = address
                        size[address] = 0
                    size[current] += 1
                elif not line.strip():
                    current = None
    symbols = []
    nm = subprocess.run(["nm", "-C", "--defined-only", elf], capture_output=True, text=True)
    for line in nm.stdout.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tT":
            symbols.append((int(parts[0], 16) & ~1, parts[2]))
    symbols.sort()
    starts = [s[0] for s in symbols]
    per_function = collections.Counter()
    total = 0
    for address, n in counts.items():
        executed = n * size.get(address, 0)
        total += executed
        i = bisect.bisect_right(starts, address) - 1
        per_function[symbols[i][1] if i >= 0 else "?"] += executed
    print(f"{total} instructions")
    for name, n in per_function.most_common(25):
        print(f"{100 * n / total:6.2f} % {n / 1e6:9.2f} M  {name[:150]}")
    print("hottest blocks (address, executions, instructions):")
    blocks = sorted(((n * size.get(a, 0), a, n) for a, n in counts.items()), reverse=True)
    for executed, address, n in blocks[:15]:
        print(f"{100 * executed / total:6.2f} % {address:08x} {n} × {size.get(address, 0)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
