"""Multi-process ClipLoss: the all-gather and the ring exchange against open_clip's formulation,
as the world size grows at a fixed local batch (gloo, one host, one thread per rank).

    python benchmarks/bench_distributed.py                               # W = 2, 3, 4; B 2048, D 512
    python benchmarks/bench_distributed.py --world 2 4 --local-batch 1024 --dim 768

Implementations: ``open_clip`` (its ClipLoss formula: the gathered B_g x B_g logits, or two
B x B_g blocks with local_loss), ``gather`` (mmcl_fast.ClipLoss, mode="gather": one B x B_g tile
pass per rank over the all-gathered features) and ``ring`` (mode="ring": the features travel rank
to rank; O(B * D) extra memory per rank). Every (W, mode, implementation) point runs in a fresh set
of W spawned ranks, which time forward + backward (median of --reps after a warm-up) and measure
the peak resident memory above the point's start (VmHWM after resetting it, with glibc returning
freed blocks above 64 KiB, so the peak is that of live tensors); the table shows the maximum over
ranks. With more ranks than cores the times include the ranks' competition for the cores: compare
the implementations at equal W, and read memory (not time) across W.

Prints a markdown table and writes benchmarks/results/bench_distributed.json and .png (memory
per rank against W).
"""
import argparse
import ctypes
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

MODES = {"global": dict(local_loss=False, gather_with_grad=False),
         "local+gwg": dict(local_loss=True, gather_with_grad=True)}
IMPLS = ("open_clip", "gather", "ring")


def _status_bytes(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


def _worker(rank, world, init_file, out_file, impl, mode, n_local, dim, reps):
    torch.set_num_threads(1)
    ctypes.CDLL("libc.so.6").mallopt(-3, 65536)  # M_MMAP_THRESHOLD: large frees go back at once
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    import mmcl_fast as mf
    from mmcl_fast.reference import OpenClipLoss
    if impl == "open_clip":
        loss_fn = OpenClipLoss(rank=rank, world_size=world, **MODES[mode])
    else:
        loss_fn = mf.ClipLoss(rank=rank, world_size=world, mode=impl, **MODES[mode])
    g = torch.Generator().manual_seed(rank)
    img = F.normalize(torch.randn(n_local, dim, generator=g), dim=1).requires_grad_()
    txt = F.normalize(torch.randn(n_local, dim, generator=g), dim=1).requires_grad_()
    scale = torch.tensor(14.0, requires_grad=True)
    times, peak = [], 0
    for rep in range(reps + 1):
        img.grad = txt.grad = scale.grad = None
        dist.barrier()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                               # VmHWM restarts from the current RSS
        base = _status_bytes("VmRSS:")
        t0 = time.perf_counter()
        loss_fn(img, txt, scale).backward()
        times.append(time.perf_counter() - t0)
        if rep > 0:
            peak = max(peak, _status_bytes("VmHWM:") - base)
    res = torch.tensor([statistics.median(times[1:]), float(peak)], dtype=torch.float64)
    dist.all_reduce(res, op=dist.ReduceOp.MAX)
    if rank == 0:
        Path(out_file).write_text(json.dumps({"seconds": res[0].item(), "peak_mib": res[1].item() / 2**20}))
    dist.destroy_process_group()
    # torch 2.13 + gloo: after torch.distributed.nn's autograd all_gather (open_clip's
    # gather_with_grad) a rank sometimes aborts in a static destructor at interpreter exit
    # ("terminate called without an active exception", no Python frame). Skip the teardown.
    os._exit(0)


def run_point(world, impl, mode, n_local, dim, reps):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        mp.spawn(_worker, args=(world, os.path.join(tmp, "rdzv"), out, impl, mode, n_local, dim, reps),
                 nprocs=world)
        return json.loads(Path(out).read_text())


def _plot(rows, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(MODES), figsize=(10, 4), sharey=True)
    for ax, mode in zip(axes, MODES):
        for impl in IMPLS:
            pts = sorted((r["world"], r["peak_mib"]) for r in rows if r["mode"] == mode and r["impl"] == impl)
            ax.plot([w for w, _ in pts], [m for _, m in pts], marker="o", label=impl)
        ax.set_title(f"ClipLoss {mode}, B_local={args.local_batch}, D={args.dim}")
        ax.set_xlabel("world size W")
        ax.set_xticks(args.world)
    axes[0].set_ylabel("peak extra memory per rank [MiB, log scale]")
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(args.out / "bench_distributed.png", dpi=120)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--local-batch", type=int, default=2048)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON of the last run")
    args = p.parse_args()
    if args.plot_only:
        rows = json.loads((args.out / "bench_distributed.json").read_text())["rows"]
        args.world = sorted({r["world"] for r in rows})
        args.local_batch, args.dim = rows[0]["local_batch"], rows[0]["dim"]
        _plot(rows, args)
        return
    rows = []
    for w in args.world:
        for mode in MODES:
            for impl in IMPLS:
                r = run_point(w, impl, mode, args.local_batch, args.dim, args.reps)
                rows.append(dict(world=w, local_batch=args.local_batch, dim=args.dim, mode=mode, impl=impl, **r))
                print(f"  W={w} {mode:10s} {impl:9s} {r['seconds']:.3f} s  {r['peak_mib']:.1f} MiB", flush=True)
    lines = ["| W | B_local | D | mode | open_clip s | gather s | ring s | open_clip MiB | gather MiB | ring MiB |",
             "|" + "---|" * 10]
    for w in args.world:
        for mode in MODES:
            pt = {r["impl"]: r for r in rows if r["world"] == w and r["mode"] == mode}
            lines.append(f"| {w} | {args.local_batch} | {args.dim} | {mode} | "
                         + " | ".join(f"{pt[i]['seconds']:.3f}" for i in IMPLS) + " | "
                         + " | ".join(f"{pt[i]['peak_mib']:.1f}" for i in IMPLS) + " |")
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_distributed.json").write_text(json.dumps(
        {"device": "cpu", "threads_per_rank": 1, "cores": os.cpu_count(), "torch": torch.__version__,
         "command": "python benchmarks/bench_distributed.py " + " ".join(
             f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
             for k, v in vars(args).items() if k not in ("out", "plot_only")),
         "rows": rows}, indent=1))
    _plot(rows, args)
    print(f"wrote {args.out / 'bench_distributed.json'} and .png")


if __name__ == "__main__":
    main()
