"""CPU benchmark of the label-aware losses: fused SupCon against pytorch-metric-learning's
SupConLoss and the materialised formula, fused multi-positive CLIP against its materialised
formula, each beside the same shape's unmasked fused loss (the cost of the labels).

    python benchmarks/bench_labels.py                                        # the default grid
    python benchmarks/bench_labels.py --batch-sizes 4096 --positives 2       # a subset

Workloads, on L2-normalised float32 features with D dimensions, forward + backward:

* ``supcon``: B anchors with labels that give every anchor k positives (classes of k + 1 members,
  shuffled), temperature 0.1, L_out;
  methods ``fused`` (:func:`mmcl_fast.supcon_loss`), ``pml`` (pytorch-metric-learning's
  ``SupConLoss``, when importable), ``naive`` (:func:`mmcl_fast.reference.supcon_loss`: the
  full matrix and mask), ``unmasked`` (the same B x B pass of the plain fused operator with the
  diagonal masked: ``pairwise_lse(z, z, s, mask_diag=True).mean()``, no labels);
* ``clip_ids``: B image/text pairs whose ids repeat k + 1 times (duplicated captions), learnable
  logit_scale 1/0.07; methods ``fused`` (:func:`mmcl_fast.symmetric_infonce` with ``ids``),
  ``naive`` (:func:`mmcl_fast.reference.multi_positive_symmetric_infonce`) and ``unmasked``
  (:func:`mmcl_fast.symmetric_infonce` without ids: one positive per row).

Every point runs in a fresh process (benchmarks/harness.py's method: median time of the timed
passes, extra peak RSS over them). Prints a table and the targets (extra memory of the fused loss
at B = 16384 <= 1/20 of one B x B float32 matrix; fused time <= 1.2x the unmasked loss); writes
benchmarks/results/<name>.json and .png.
"""
import argparse
import json
import sys
import textwrap
from pathlib import Path

from harness import RSS_HELPERS, run_worker

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--batch-sizes", type=int, nargs="+", default=[4096, 16384])
p.add_argument("--dim", type=int, default=128)
p.add_argument("--positives", type=int, nargs="+", default=[2, 8], help="positives per anchor (k)")
p.add_argument("--workloads", nargs="+", default=["supcon", "clip_ids"])
p.add_argument("--reps", type=int, default=3, help="timed repetitions after one warm-up")
p.add_argument("--mem-limit-gib", type=float, default=14.0, help="skip materialising methods above this")
p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
p.add_argument("--name", default="bench_labels")
args = p.parse_args()

METHODS = {"supcon": ("fused", "unmasked", "pml", "naive"), "clip_ids": ("fused", "unmasked", "naive")}

_WORKER = RSS_HELPERS + textwrap.dedent("""
    import json, statistics, sys, time, torch
    import torch.nn.functional as F
    import mmcl_fast as mf
    from mmcl_fast import reference
    workload, method = sys.argv[1], sys.argv[2]
    B, D, k, reps = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])

    g = torch.Generator().manual_seed(0)
    ids = (torch.arange(B) // (k + 1))[torch.randperm(B, generator=g)]
    a = F.normalize(torch.randn(B, D, generator=g), dim=1).requires_grad_()
    b = F.normalize(torch.randn(B, D, generator=g), dim=1).requires_grad_()
    s = torch.tensor(1 / 0.07, requires_grad=True)
    if workload == "supcon":
        if method == "fused":
            fn = lambda: mf.supcon_loss(a, ids, 0.1)
        elif method == "pml":
            from pytorch_metric_learning.losses import SupConLoss
            pml = SupConLoss(temperature=0.1)
            fn = lambda: pml(a, ids)
        elif method == "naive":
            fn = lambda: reference.supcon_loss(a, ids, 0.1)
        else:
            ten = torch.tensor(10.0)
            fn = lambda: mf.pairwise_lse(a, a, ten, "dot", True, False)[0].mean()
    else:
        if method == "fused":
            fn = lambda: mf.symmetric_infonce(a, b, logit_scale=s, similarity="dot", ids=ids)
        elif method == "naive":
            fn = lambda: reference.multi_positive_symmetric_infonce(a, b, ids, logit_scale=s, similarity="dot")
        else:
            fn = lambda: mf.symmetric_infonce(a, b, logit_scale=s, similarity="dot")

    def step():
        a.grad = b.grad = s.grad = None
        loss = fn()
        loss.backward()
        return loss

    step()
    a.grad = b.grad = s.grad = None
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS:")
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t)
    print(json.dumps({"time_s": statistics.median(times), "extra_mem_bytes": max(0, status("VmHWM:") - base),
                      "loss": loss.item()}))
""")


def run_point(workload, method, B, D, k, reps):
    if method == "pml":
        try:
            import pytorch_metric_learning  # noqa: F401
        except ImportError:
            return {"skipped": "pytorch-metric-learning not installed"}
    return run_worker(_WORKER, [workload, method, B, D, k, reps], timeout_s=3600)


def materialising_bytes(method, B):
    """Rough peak of the methods that store B x B matrices (logits, masks, their gradients)."""
    return {"pml": 8, "naive": 6}.get(method, 0) * B * B * 4


results = []
for workload in args.workloads:
    for B in args.batch_sizes:
        for k in args.positives:
            for method in METHODS[workload]:
                rec = {"workload": workload, "method": method, "B": B, "D": args.dim, "k": k}
                if materialising_bytes(method, B) > args.mem_limit_gib * 2**30:
                    rec["skipped"] = f"needs ~{materialising_bytes(method, B) / 2**30:.0f} GiB"
                else:
                    rec.update(run_point(workload, method, B, args.dim, k, args.reps))
                results.append(rec)
                shown = {key: rec[key] for key in ("time_s", "extra_mem_bytes", "skipped", "error") if key in rec}
                print(workload, B, k, method, shown, flush=True)


def index(rs):
    return {(r["workload"], r["B"], r["k"], r["method"]): r for r in rs if "time_s" in r}


idx = index(results)
lines = ["| workload | B | k | method | time (s) | x fused | extra memory (MiB) | x fused |",
         "|---|---|---|---|---|---|---|---|"]
for r in results:
    f = idx.get((r["workload"], r["B"], r["k"], "fused"))
    if "time_s" not in r:
        why = r.get("skipped", r.get("error"))
        lines.append(f"| {r['workload']} | {r['B']} | {r['k']} | {r['method']} | {why} | | | |")
        continue
    tr = r["time_s"] / f["time_s"] if f else float("nan")
    mr = r["extra_mem_bytes"] / max(f["extra_mem_bytes"], 1) if f else float("nan")
    lines.append(f"| {r['workload']} | {r['B']} | {r['k']} | {r['method']} | {r['time_s']:.3f} | {tr:.2f} | "
                 f"{r['extra_mem_bytes'] / 2**20:.0f} | {mr:.1f} |")
targets = []
for (workload, B, k, method), r in sorted(idx.items()):
    if method != "fused":
        continue
    u = idx.get((workload, B, k, "unmasked"))
    if u:
        ratio = r["time_s"] / u["time_s"]
        targets.append(f"- {workload} B={B} k={k}: fused / unmasked time {ratio:.2f} (goal <= 1.2: "
                       f"{'met' if ratio <= 1.2 else 'missed'})")
    if B >= 16384:
        frac = r["extra_mem_bytes"] / (B * B * 4)
        targets.append(f"- {workload} B={B} k={k}: fused extra memory {r['extra_mem_bytes'] / 2**20:.0f} MiB = "
                       f"1/{1 / max(frac, 1e-12):.0f} of a B x B float32 matrix (goal <= 1/20: "
                       f"{'met' if frac <= 1 / 20 else 'missed'})")
report = "\n".join(lines + ["", "Targets:"] + targets)
print(report)
args.out.mkdir(parents=True, exist_ok=True)
json_path, png_path = args.out / f"{args.name}.json", args.out / f"{args.name}.png"
import torch  # noqa: E402  (only for the versions in the record)

meta = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "cpu": next((line.split(":", 1)[1].strip() for line in
                                                          open("/proc/cpuinfo") if line.startswith("model name")), "?")}
json_path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for workload, ax in zip(args.workloads, axes):
    for method in METHODS[workload]:
        for k in args.positives:
            pts = [(B, idx[(workload, B, k, method)]) for B in args.batch_sizes if (workload, B, k, method) in idx]
            if pts:
                ax.plot([B for B, _ in pts], [r["time_s"] for _, r in pts], marker="o",
                        linestyle="-" if k == args.positives[0] else "--", label=f"{method} k={k}")
    ax.set(xscale="log", yscale="log", xlabel="batch B", ylabel="forward + backward (s)",
           title=f"{workload}, D={args.dim}, {meta['threads']} threads")
    ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(png_path, dpi=110)
print(f"\nwrote {json_path} and {png_path}")
