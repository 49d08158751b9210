"""Fused symmetric InfoNCE against the sgemm roofline, for an A/B of two builds on one machine.

    PYTHONPATH=<checkout> python benchmarks/bench_roofline_ab.py --batch 4096 --similarity cosine

Runs a threaded 2048^3 torch.mm first (its rate is the roofline, and it leaves MKL in the state
a training step leaves it in), then times the fused forward and backward (best of 5) at
D = 5, 64, 128 and prints 8 B^2 D / sgemm rate / time. Alternate checkouts on PYTHONPATH to
compare builds.
"""
import argparse
import time

import torch

import mmcl_fast as mf

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--batch", type=int, default=4096)
p.add_argument("--similarity", default="cosine")
p.add_argument("--threads", type=int, default=2)
args = p.parse_args()
torch.set_num_threads(args.threads)
n = 2048
a, b = torch.randn(n, n), torch.randn(n, n)
torch.mm(a, b)
mm_times = []
for _ in range(5):
    t = time.perf_counter()
    torch.mm(a, b)
    mm_times.append(time.perf_counter() - t)
rate = 2 * n**3 / min(mm_times)
B = args.batch
for D in (5, 64, 128):
    x = torch.randn(B, D, requires_grad=True)
    y = torch.randn(B, D, requires_grad=True)
    mf.symmetric_infonce(x, y, temperature=0.1, similarity=args.similarity).backward()
    fwd, bwd = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        loss = mf.symmetric_infonce(x, y, temperature=0.1, similarity=args.similarity)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
    total = min(fwd) + min(bwd)
    print(f"{args.similarity} D={D} B={B}: fwd {min(fwd) * 1e3:.1f} ms bwd {min(bwd) * 1e3:.1f} ms  "
          f"roofline frac {8 * B * B * D / rate / total:.2f} (sgemm {rate / 1e9:.0f} GFLOP/s)")
