"""The cost of label-aware positives, measured interleaved in one process: a loss with ids (k + 1
copies of every id, shuffled) against the same loss without ids, alternating, so that both see
the same machine state.

    python benchmarks/bench_labels_ab.py                     # B = 16384, D = 128, k = 8, 5 rounds
    python benchmarks/bench_labels_ab.py --batch 4096 --positives 2
    python benchmarks/bench_labels_ab.py --loss siglip --name bench_labels_ab_siglip

Forward + backward of ``mf.symmetric_infonce(a, b, logit_scale=s, similarity="dot", ids=...)``
(or ``mf.siglip_loss(a, b, s, t, ids=...)`` with a learnable bias, ``--loss siglip``) on
L2-normalised float32 features; each round times each variant once after an untimed pass.
Prints the per-round times and the ratio of the medians; writes benchmarks/results/<name>.json.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import mmcl_fast as mf

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--batch", type=int, default=16384)
p.add_argument("--dim", type=int, default=128)
p.add_argument("--positives", type=int, default=8, help="positives per anchor (k)")
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--loss", choices=("symmetric_infonce", "siglip"), default="symmetric_infonce")
p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
p.add_argument("--name", default="bench_labels_ab")
args = p.parse_args()

g = torch.Generator().manual_seed(0)
B, D, k = args.batch, args.dim, args.positives
ids = (torch.arange(B) // (k + 1))[torch.randperm(B, generator=g)]
a = F.normalize(torch.randn(B, D, generator=g), dim=1).requires_grad_()
b = F.normalize(torch.randn(B, D, generator=g), dim=1).requires_grad_()
s = torch.tensor(1 / 0.07 if args.loss == "symmetric_infonce" else 10.0, requires_grad=True)
bias = torch.tensor(-10.0, requires_grad=True)
variants = {"ids": ids, "no ids": None}


def step(i):
    a.grad = b.grad = s.grad = bias.grad = None
    t = time.perf_counter()
    if args.loss == "siglip":
        mf.siglip_loss(a, b, s, bias, ids=i).backward()
    else:
        mf.symmetric_infonce(a, b, logit_scale=s, similarity="dot", ids=i).backward()
    return time.perf_counter() - t


times = {name: [] for name in variants}
for name, i in variants.items():
    step(i)  # warm-up
for r in range(args.rounds):
    for name, i in variants.items():
        times[name].append(step(i))
    print(f"round {r}: " + ", ".join(f"{n} {times[n][-1]:.3f} s" for n in variants), flush=True)
med = {n: statistics.median(v) for n, v in times.items()}
ratio = med["ids"] / med["no ids"]
print(f"{args.loss} B={B} D={D} k={k}: median with ids {med['ids']:.3f} s, without {med['no ids']:.3f} s, "
      f"ratio {ratio:.2f} ({torch.get_num_threads()} threads, {mf.backend_info()['cpu_isa']})")
args.out.mkdir(parents=True, exist_ok=True)
(args.out / f"{args.name}.json").write_text(json.dumps(
    {"loss": args.loss, "B": B, "D": D, "k": k, "threads": torch.get_num_threads(),
     "cpu_isa": mf.backend_info()["cpu_isa"], "times_s": times, "median_s": med, "ratio": ratio}, indent=1))
