"""The CPU kernels on each ISA level this machine runs, against this machine's limits.

    python benchmarks/bench_cpu_isa.py                 # B = 4096, the default points
    python benchmarks/bench_cpu_isa.py --batch 8192 --reps 5

For every level in ``mf.backend_info()["cpu_isas_runnable"]`` (forced with ``mf.force_cpu_isa``),
in one process and one run: the exp limit (a tight loop of the level's vector exp on every thread)
and the fused forward+backward time at small D (bound by exponentials: 4 B^2 of them) and at
D = 128 / 512 / 768 (bound by the GEMMs: 8 B^2 D FLOPs, at the rate of a large torch.mm measured
in the same run). Prints a markdown table and writes benchmarks/results/<name>.json.
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
p.add_argument("--batch", type=int, default=4096)
p.add_argument("--reps", type=int, default=3, help="timed passes after one warm-up (median)")
p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
p.add_argument("--name", default="bench_cpu_isa")
args = p.parse_args()

# (workload, D): euclidean at D = 5 is exp-bound; clip (normalised features, dot) is GEMM-bound.
POINTS = [("euclidean", 5), ("clip", 128), ("clip", 512), ("clip", 768)]


def median_time(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def sgemm_rate(n=2048):
    x, y = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_time(lambda: torch.mm(x, y), 5)


def fused_pass(workload, B, D):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    if workload == "clip":
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    else:
        a, b = a * D**-0.5, b * D**-0.5
    a.requires_grad_()
    b.requires_grad_()
    s = torch.tensor(1 / 0.07 if workload == "clip" else 1.0, requires_grad=True)
    sim = "dot" if workload == "clip" else workload

    def run():
        a.grad = b.grad = s.grad = None
        mf.symmetric_infonce(a, b, logit_scale=s, similarity=sim).backward()
    return run


info = mf.backend_info()
B = args.batch
rows, records = [], []
gemm = sgemm_rate()
for isa in info["cpu_isas_runnable"] or [None]:
    mf.force_cpu_isa(isa)
    exp_rate = mf.cpu_exp_rate(0.5)
    for workload, D in POINTS:
        t = median_time(fused_pass(workload, B, D), args.reps)
        exp_limit = 4.0 * B * B / exp_rate
        gemm_limit = 8.0 * B * B * D / gemm
        bound, limit = ("exp", exp_limit) if exp_limit > gemm_limit else ("sgemm", gemm_limit)
        rec = {"isa": isa, "workload": workload, "B": B, "D": D, "time_s": t, "exp_per_s": exp_rate,
               "sgemm_flops": gemm, "exp_limit_s": exp_limit, "sgemm_limit_s": gemm_limit, "bound": bound,
               "fraction_of_limit": limit / t}
        records.append(rec)
        rows.append(f"| {isa} | {workload} | {D} | {t:.3f} | {exp_rate / 1e9:.2f} | {exp_limit:.3f} "
                    f"| {gemm_limit:.3f} | {bound} | {limit / t:.2f} |")
        print(rows[-1], flush=True)
mf.force_cpu_isa(None)

table = "\n".join([f"B = {B}, {torch.get_num_threads()} threads, sgemm {gemm / 1e9:.1f} GFLOP/s "
                   f"(torch.mm 2048^3 in this run)\n",
                   "| ISA | workload | D | fused fwd+bwd s | exp G/s | exp limit s | sgemm limit s | bound "
                   "| fraction of the bound |", "|---|---|---|---|---|---|---|---|---|", *rows])
print("\n" + table)
args.out.mkdir(parents=True, exist_ok=True)
path = args.out / f"{args.name}.json"
path.write_text(json.dumps({"meta": {"backend": info, "threads": torch.get_num_threads()}, "results": records},
                           indent=1))
print(f"\nwrote {path}")
