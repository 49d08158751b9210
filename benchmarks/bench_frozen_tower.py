"""What a frozen tower saves (LiT-style: only one side's features require grad), CPU.

    python benchmarks/bench_frozen_tower.py                  # B 4096 and 16384, D 5 and 128

Forward + backward of the fused symmetric InfoNCE with both feature tensors trainable vs. the
image side only: the backward then skips the dY pass (output_mask from needs_input_grad).
Prints a table and writes benchmarks/results/bench_frozen_tower.json.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import mmcl_fast as mf

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--batch-sizes", type=int, nargs="+", default=[4096, 16384])
p.add_argument("--dims", type=int, nargs="+", default=[5, 128])
p.add_argument("--reps", type=int, default=7)
p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
args = p.parse_args()


def one_pass(a, b):
    a.grad = b.grad = None
    t = time.perf_counter()
    mf.symmetric_infonce(a, b, temperature=0.1).backward()
    return time.perf_counter() - t


rows = []
print("| B | D | both trainable s | image side only s | saving |\n|---|---|---|---|---|")
for B in args.batch_sizes:
    for D in args.dims:
        torch.manual_seed(0)
        a, b = torch.randn(B, D), torch.randn(B, D)
        setups = {"both": (a.clone().requires_grad_(), b.clone().requires_grad_()),
                  "image_only": (a.clone().requires_grad_(), b.clone())}
        times = {name: [] for name in setups}
        for rep in range(args.reps + 1):  # interleaved, so that drift of the machine hits both alike
            for name, (x, y) in setups.items():
                elapsed = one_pass(x, y)
                if rep:
                    times[name].append(elapsed)
        both, frozen = statistics.median(times["both"]), statistics.median(times["image_only"])
        rows.append({"B": B, "D": D, "both_s": both, "image_only_s": frozen})
        print(f"| {B} | {D} | {both:.3f} | {frozen:.3f} | {1 - frozen / both:.0%} |", flush=True)
args.out.mkdir(parents=True, exist_ok=True)
path = args.out / "bench_frozen_tower.json"
path.write_text(json.dumps({"backend": mf.backend_info(), "results": rows}, indent=1))
print(f"\nwrote {path}")
