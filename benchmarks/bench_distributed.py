"""Multi-process ClipLoss: mmcl_fast's modes against open_clip's formulation (gloo, one host).

    python benchmarks/bench_distributed.py                         # W=2, B_local 1024 and 4096
    python benchmarks/bench_distributed.py --world 2 --local-batch 2048 --dim 512

Every (mode, implementation, B_local) point runs in a fresh set of W spawned ranks (one thread
each), which time forward+backward (median of --reps after a warm-up) and report their peak RSS
growth over the point (resource.getrusage, so each point needs its own processes). Prints a
markdown table and writes benchmarks/results/bench_distributed.json and .png.
"""
import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

MODES = {"global": dict(local_loss=False, gather_with_grad=False),
         "global+gwg": dict(local_loss=False, gather_with_grad=True),
         "local+gwg": dict(local_loss=True, gather_with_grad=True)}


def _worker(rank, world, init_file, out_file, impl, mode, n_local, dim, reps):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    import mmcl_fast as mf
    from mmcl_fast.reference import OpenClipLoss
    cls = mf.ClipLoss if impl == "mmcl_fast" else OpenClipLoss
    loss_fn = cls(rank=rank, world_size=world, **MODES[mode])
    g = torch.Generator().manual_seed(rank)
    img = F.normalize(torch.randn(n_local, dim, generator=g), dim=1).requires_grad_()
    txt = F.normalize(torch.randn(n_local, dim, generator=g), dim=1).requires_grad_()
    scale = torch.tensor(14.0, requires_grad=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        loss_fn(img, txt, scale).backward()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    res = torch.tensor([statistics.median(times[1:]), peak * 1024.0], dtype=torch.float64)
    dist.all_reduce(res, op=dist.ReduceOp.MAX)
    if rank == 0:
        Path(out_file).write_text(json.dumps({"seconds": res[0].item(),
                                              "peak_rss_mib": res[1].item() / 2**20}))
    dist.destroy_process_group()
    # torch 2.13 + gloo: after torch.distributed.nn's autograd all_gather (open_clip's
    # gather_with_grad) a rank sometimes aborts in a static destructor at interpreter exit
    # ("terminate called without an active exception", no Python frame). Skip the teardown.
    os._exit(0)


def run_point(world, impl, mode, n_local, dim, reps):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        mp.spawn(_worker, args=(world, os.path.join(tmp, "rdzv"), out, impl, mode, n_local, dim,
                                reps), nprocs=world)
        return json.loads(Path(out).read_text())


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--local-batch", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args()
    rows = []
    for n in args.local_batch:
        for mode in MODES:
            for impl in ("open_clip", "mmcl_fast"):
                r = run_point(args.world, impl, mode, n, args.dim, args.reps)
                rows.append(dict(world=args.world, local_batch=n, dim=args.dim, mode=mode,
                                 impl=impl, **r))
                print(f"  W={args.world} B_local={n} {mode:10s} {impl:9s} "
                      f"{r['seconds']:.3f} s  {r['peak_rss_mib']:.0f} MiB", flush=True)
    lines = ["| W | B_local | D | mode | open_clip s | mmcl_fast s | speedup | open_clip MiB "
             "| mmcl_fast MiB | memory ratio |", "|" + "---|" * 10]
    for n in args.local_batch:
        for mode in MODES:
            oc, mf_ = (next(r for r in rows if r["local_batch"] == n and r["mode"] == mode
                            and r["impl"] == impl) for impl in ("open_clip", "mmcl_fast"))
            lines.append(f"| {args.world} | {n} | {args.dim} | {mode} | {oc['seconds']:.3f} | "
                         f"{mf_['seconds']:.3f} | {oc['seconds'] / mf_['seconds']:.2f}x | "
                         f"{oc['peak_rss_mib']:.0f} | {mf_['peak_rss_mib']:.0f} | "
                         f"{oc['peak_rss_mib'] / max(mf_['peak_rss_mib'], 1.0):.1f}x |")
    report = "\n".join(lines)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_distributed.json").write_text(json.dumps(
        {"device": "cpu", "threads_per_rank": 1, "rows": rows}, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{m}\nB={n}" for n in args.local_batch for m in MODES]
    x = range(len(labels))
    for k, impl in enumerate(("open_clip", "mmcl_fast")):
        ys = [next(r["seconds"] for r in rows if r["local_batch"] == n and r["mode"] == m
                   and r["impl"] == impl) for n in args.local_batch for m in MODES]
        ax.bar([i + 0.4 * k for i in x], ys, width=0.4, label=impl)
    ax.set_xticks([i + 0.2 for i in x], labels, fontsize=7)
    ax.set_ylabel("forward+backward per rank [s]")
    ax.set_title(f"ClipLoss, W={args.world} gloo ranks, D={args.dim}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "bench_distributed.png", dpi=120)
    print(f"wrote {args.out / 'bench_distributed.json'} and .png")


if __name__ == "__main__":
    main()
