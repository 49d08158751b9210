"""CPU time of one fused forward+backward on one thread, for A/B comparisons of two builds.

Process CPU time (not wall time) is what the kernel itself costs, so the comparison survives a
machine that other processes keep busy, which wall-clock benchmarks (bench_loss.py) do not.
Run it once per build, alternating, e.g. an older checkout against this one:

    PYTHONPATH=/path/to/old/checkout python benchmarks/bench_cpu_time.py --label old
    python benchmarks/bench_cpu_time.py --label new

Prints one JSON line per run: the best of ``--reps`` CPU times in ms per (similarity, D), and
``exp_fraction``: the time of 4 B^2 exponentials at this thread's vectorised exp rate
(``mmcl_fast.cpu_exp_rate``) divided by the fused time.
"""
import argparse
import json
import time

import torch

import mmcl_fast as mf


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", default="build", help="name of this build in the output")
    p.add_argument("--batch", type=int, default=4096, help="batch size B")
    p.add_argument("--dims", type=int, nargs="+", default=[5, 128], help="feature dimensions D")
    p.add_argument("--similarities", nargs="+", default=["cosine", "euclidean"])
    p.add_argument("--reps", type=int, default=3, help="repetitions; the best is kept")
    args = p.parse_args()
    torch.set_num_threads(1)
    exp_rate = max(mf.cpu_exp_rate() or 0.0 for _ in range(3))
    out = {"label": args.label, "batch": args.batch, "exp_per_s": exp_rate, "ms": {}, "exp_fraction": {}}
    for sim in args.similarities:
        for d in args.dims:
            g = torch.Generator().manual_seed(0)
            a = torch.randn(args.batch, d, generator=g).requires_grad_()
            b = torch.randn(args.batch, d, generator=g).requires_grad_()
            best = float("inf")
            for _ in range(args.reps):
                t = time.process_time()
                mf.symmetric_infonce(a, b, temperature=0.1, similarity=sim).backward()
                best = min(best, time.process_time() - t)
            key = f"{sim} D={d}"
            out["ms"][key] = round(best * 1e3, 1)
            if exp_rate:
                out["exp_fraction"][key] = round(4 * args.batch ** 2 / exp_rate / best, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
