"""Forward+backward time, peak extra memory and float64 error of contrastive-loss implementations
(CPU), each measured on the same inputs in the same run.

Workloads (the ``similarity`` of a point):

* ``clip``: open_clip's setting: features already L2-normalised by the towers, a learnable
  logit_scale (1/0.07), the symmetric loss over the batch's pairs;
* ``siglip``: SigLIP's setting: normalised features, the sigmoid loss with a learnable
  logit_scale 10 and logit_bias -10 (SigLIP's initialisation);
* ``cosine``, ``euclidean``, ``dot``, ``l1``: :func:`mmcl_fast.symmetric_infonce` with that
  similarity and temperature 0.07 (cosine) or 1 (the others).

Methods:

* ``fused``:     :func:`mmcl_fast.symmetric_infonce` on the compiled operator (``clip``: with
  ``similarity="dot"``, as ``mf.ClipLoss`` calls it; ``siglip``: :func:`mmcl_fast.siglip_loss`);
* ``chunked``:   the same loss on this project's pure-PyTorch chunked backend
  (``MMCL_FAST_BACKEND=python``);
* ``naive``:     :func:`mmcl_fast.reference.symmetric_infonce`, which stores the B x B logits;
* ``open_clip``: open_clip's ``ClipLoss`` formula, ``(CE(s A B^T) + CE(s B A^T)) / 2`` (``clip``),
  or its ``SigLipLoss`` formula, ``-sum(logsigmoid(Z * (s A B^T + t))) / B`` with Z = 2I - 1
  (``siglip``; one process);
* ``compiled``:  ``torch.compile`` of that formula (inductor fuses the elementwise work; the logits
  are still stored). Compile time is reported separately (``compile_s``) and not in ``time_s``;
* ``torch_lce``: torch's chunked ``linear_cross_entropy`` once per direction
  (``options=LinearCrossEntropyOptions()``: it never stores the full B x B either; ``clip`` only).

Every (method, B, D, similarity) point runs in a fresh subprocess with glibc's mmap threshold fixed
(``MALLOC_MMAP_THRESHOLD_``), so freed tensors leave the resident set. After the warm-up passes the
process's peak RSS is reset (``/proc/self/clear_refs``); the peak over the timed passes minus the
resident level before them is the method's extra memory per step (the inputs and parameters are
excluded; the gradients it produces are included). Time is the median of the timed passes. The
float64 error is the largest relative error of the loss and the gradients against
:mod:`mmcl_fast.reference` in float64 on the same inputs, where that fits (B <= 8192).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

METHODS = ("fused", "chunked", "naive", "open_clip", "compiled", "torch_lce")
OPEN_CLIP_WORKLOADS = ("clip", "siglip")          # where open_clip's formulas (and their compile) apply
CLIP_ONLY = ("torch_lce",)

# What a measuring worker process starts with: status("VmRSS:") / status("VmHWM:") in bytes (the
# resident set and its peak, which writing "5" to /proc/self/clear_refs resets).
RSS_HELPERS = textwrap.dedent("""
    def status(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))
""")

_WORKER = RSS_HELPERS + textwrap.dedent("""
    import json, statistics, sys, time, torch
    import torch.nn.functional as F
    import mmcl_fast as mf
    from mmcl_fast import reference
    method, sim = sys.argv[1], sys.argv[4]
    B, D, reps, budget = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5]), float(sys.argv[6])

    def clip_formula(x, y, s):  # open_clip's ClipLoss.forward for one process
        logits = s * x @ y.T
        labels = torch.arange(x.shape[0])
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2

    def siglip_formula(x, y, s, t):  # open_clip's SigLipLoss.forward for one process
        logits = s * x @ y.T + t
        labels = 2 * torch.eye(x.shape[0]) - 1
        return -F.logsigmoid(labels * logits).sum() / x.shape[0]

    def torch_lce(x, y, s):
        labels, opts = torch.arange(x.shape[0]), torch.nn.LinearCrossEntropyOptions()
        return (F.linear_cross_entropy(s * x, y, labels, options=opts)
                + F.linear_cross_entropy(s * y, x, labels, options=opts)) / 2

    kernel_sim = "dot" if sim in ("clip", "siglip") else sim
    temp = 0.07 if sim in ("clip", "cosine") else (0.1 if sim == "siglip" else 1.0)
    bias = torch.tensor(-10.0, requires_grad=True)    # SigLIP's logit_bias (siglip only)
    if sim == "siglip":
        formula = {"fused": mf.siglip_loss, "chunked": mf.siglip_loss, "naive": reference.siglip_loss,
                   "open_clip": siglip_formula}.get(method)
        if method == "compiled":
            formula = torch.compile(siglip_formula, dynamic=False)
        fn = lambda x, y, s: formula(x, y, s, bias)
    elif method in ("fused", "chunked"):
        fn = lambda x, y, s: mf.symmetric_infonce(x, y, logit_scale=s, similarity=kernel_sim)
    elif method == "naive":
        fn = lambda x, y, s: reference.symmetric_infonce(x, y, logit_scale=s, similarity=kernel_sim)
    elif method == "open_clip":
        fn = clip_formula
    elif method == "compiled":
        fn = torch.compile(clip_formula, dynamic=False)
    elif method == "torch_lce":
        fn = torch_lce
    torch.manual_seed(0)
    a, b = torch.randn(B, D), torch.randn(B, D)
    if sim in ("clip", "siglip"):
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    a.requires_grad_(); b.requires_grad_()
    s = torch.tensor(1.0 / temp, requires_grad=True)

    def step():
        a.grad = b.grad = s.grad = bias.grad = None
        loss = fn(a, b, s)
        loss.backward()
        return loss

    # Warm-up: a small pass loads libraries and thread pools; a full-size pass compiles (compiled).
    fn(a[:64].detach().requires_grad_(), b[:64].detach().requires_grad_(), s).backward()
    t = time.perf_counter(); step(); first_s = time.perf_counter() - t
    a.grad = b.grad = s.grad = bias.grad = None
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set (VmHWM) to the current level
    base = status("VmRSS:")
    times = []
    t_start = time.perf_counter()
    for i in range(reps):
        t = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - t_start > budget:
            break
    peak = status("VmHWM:")
    rec = {"time_s": statistics.median(times), "n_timed": len(times), "extra_mem_bytes": max(0, peak - base),
           "loss": loss.item(), "first_pass_s": first_s}
    if method == "compiled":
        rec["compile_s"] = max(0.0, first_s - rec["time_s"])
    if B <= 8192:
        got = [loss.detach(), a.grad, b.grad, s.grad] + ([bias.grad] if sim == "siglip" else [])
        a64, b64 = a.detach().double().requires_grad_(), b.detach().double().requires_grad_()
        s64, t64 = s.detach().double().requires_grad_(), bias.detach().double().requires_grad_()
        if sim == "siglip":
            ref = reference.siglip_loss(a64, b64, s64, t64)
            want = [ref.detach(), *torch.autograd.grad(ref, (a64, b64, s64, t64))]
        else:
            ref = reference.symmetric_infonce(a64, b64, logit_scale=s64, similarity=kernel_sim)
            want = [ref.detach(), *torch.autograd.grad(ref, (a64, b64, s64))]
        rec["err_f64"] = max(((g.double() - w).norm() / w.norm().clamp_min(1e-30)).item() for g, w in zip(got, want))
    print(json.dumps(rec))
""")


_NEIGHBOUR = textwrap.dedent("""
    import sys, time, torch
    import mmcl_fast as mf
    torch.set_num_threads(int(sys.argv[2]))
    a = torch.randn(256, 32, requires_grad=True); b = torch.randn(256, 32)
    layer = torch.nn.Linear(32, 32)
    end = time.time() + float(sys.argv[1])
    while time.time() < end:
        for _ in range(20):
            layer(a).relu().sum()
        mf.symmetric_infonce(a, b, temperature=0.1).backward()
""")


class BusyNeighbour:
    """Another process competing for the cores, as a DataLoader worker or a second run would.

    It runs many small PyTorch ops and small fused losses with ``threads`` OpenMP threads (the
    load under which BLAS calls nested in OpenMP workers used to collapse). Use as a context
    manager; the process also ends by itself after ``max_seconds``.
    """

    def __init__(self, threads: int = 2, max_seconds: float = 1800.0):
        self.cmd = [sys.executable, "-c", _NEIGHBOUR, str(max_seconds), str(threads)]
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)  # past its imports, into the busy loop
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def naive_bytes(B: int) -> int:
    """Rough peak of the naive loss: logits, two log-softmaxes and their gradients (float32)."""
    return 5 * B * B * 4


_RATES = textwrap.dedent("""
    import json, statistics, time, torch
    import mmcl_fast as mf
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(5):
        t = time.perf_counter(); torch.mm(a, b); times.append(time.perf_counter() - t)
    print(json.dumps({"sgemm_flops": 2 * n**3 / statistics.median(times), "exp_per_s": mf.cpu_exp_rate(0.5)}))
""")


def machine_rates(timeout_s: float = 300.0) -> dict:
    """This machine's limits, measured now with the same threads as the points: the float32 GEMM
    rate of a cache-friendly 2048^3 torch.mm (FLOP/s) and the rate of a tight at::vec exp_u20 loop
    over an L1-resident buffer on every thread (exp/s), the exp the fused kernel evaluates."""
    out = subprocess.run([sys.executable, "-c", _RATES], capture_output=True, text=True,
                         timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def fused_flops(B: int, D: int) -> float:
    """FLOPs of a fused symmetric forward + backward: 2 B^2 D for the logits, twice (forward and
    the backward's recompute), plus 2 B^2 D for each of dX = s G Y and dY = s G^T X."""
    return 8.0 * B * B * D


def fused_exps(B: int) -> float:
    """Exponentials of a fused symmetric forward + backward: row and column LSE in the forward,
    the row and column softmax terms of G in the backward."""
    return 4.0 * B * B


def run_point(method: str, B: int, D: int, sim: str, reps: int = 3, budget_s: float = 60.0,
              timeout_s: float = 1800.0) -> dict:
    """One measurement in a fresh interpreter; returns its JSON record (or an error entry)."""
    # "chunked" is the same public loss on the pure-PyTorch chunked backend.
    env = {"MMCL_FAST_BACKEND": "python"} if method == "chunked" else {}
    return run_worker(_WORKER, [method, B, D, sim, reps, budget_s], env=env, timeout_s=timeout_s)


def run_worker(script: str, argv: list, env: dict | None = None, timeout_s: float = 1800.0) -> dict:
    """Run a measuring ``script`` (``python -c``, arguments ``argv``) in a fresh interpreter with
    glibc's mmap threshold fixed, so that freed tensors leave the resident set; returns the JSON
    record of its last line with the wall time added, or an error entry."""
    cmd = [sys.executable, "-c", script, *map(str, argv)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", **(env or {})}
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout_s:.0f}s"}
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    rec["wall_s"] = time.perf_counter() - t0
    return rec


def run_grid(batch_sizes, dims, sims, methods=METHODS, mem_limit_bytes: int = 12 << 30,
             chunked_max_b: int = 16384, reps: int = 3, budget_s: float = 60.0, progress=print,
             load: str = "quiet"):
    """Measure every point; skip the methods that store the logits where they would not fit in
    mem_limit_bytes, open_clip's formulas outside the ``clip`` and ``siglip`` workloads, and torch's
    linear_cross_entropy outside ``clip``.

    ``load="neighbour"`` measures every point beside a :class:`BusyNeighbour` (one per point).
    """
    results = []
    for sim in sims:
        for D in dims:
            for B in batch_sizes:
                for method in methods:
                    rec = {"method": method, "B": B, "D": D, "similarity": sim, "load": load}
                    if (method in CLIP_ONLY and sim != "clip") or (
                            method in ("open_clip", "compiled") and sim not in OPEN_CLIP_WORKLOADS):
                        continue
                    if method in ("naive", "open_clip", "compiled") and naive_bytes(B) > mem_limit_bytes:
                        rec["skipped"] = f"needs ~{naive_bytes(B) / 2**30:.0f} GiB for the logits"
                    elif method == "chunked" and B > chunked_max_b:
                        rec["skipped"] = f"B > {chunked_max_b} (minutes per pass)"
                    elif load == "neighbour":
                        with BusyNeighbour():
                            rec.update(run_point(method, B, D, sim, reps=reps, budget_s=budget_s))
                    else:
                        rec.update(run_point(method, B, D, sim, reps=reps, budget_s=budget_s))
                    results.append(rec)
                    progress(_format_point(rec))
    return results


def _format_point(r: dict) -> str:
    head = f"{r['similarity']:9s} B={r['B']:6d} D={r['D']:4d} {r['method']:9s} {r.get('load', 'quiet'):9s}"
    if "skipped" in r:
        return f"{head} skipped: {r['skipped']}"
    if "error" in r:
        return f"{head} error: {r['error']}"
    extra = f"  compile {r['compile_s']:.1f} s" if "compile_s" in r else ""
    err = f"  err {r['err_f64']:.1e}" if "err_f64" in r else ""
    return f"{head} {r['time_s'] * 1e3:10.1f} ms  {r['extra_mem_bytes'] / 2**20:9.1f} MiB{err}{extra}"


def _index(results, load: str = "quiet"):
    return {(r["similarity"], r["D"], r["B"], r["method"]): r for r in results
            if "time_s" in r and r.get("load", "quiet") == load}


def efficiency_table(results, rates: dict) -> str:
    """Per fused point: time per B^2, and its fraction of the machine's limit: the GEMM roofline
    8 B^2 D / sgemm rate, or for small D (where exps dominate) the exp limit 4 B^2 / exp rate."""
    idx = _index(results)
    lines = ["| similarity | D | B | fused s | ns per B² | ratio to smallest B | GEMM roofline s "
             "| exp limit s | fraction of the binding limit |", "|---|---|---|---|---|---|---|---|---|"]
    for sim, D in sorted({(k[0], k[1]) for k in idx if k[3] == "fused"}):
        pts = sorted((k[2], r) for k, r in idx.items() if k[0] == sim and k[1] == D and k[3] == "fused")
        first = pts[0][1]["time_s"] / pts[0][0] ** 2
        for B, r in pts:
            per = r["time_s"] / B**2
            gemm_s = fused_flops(B, D) / rates["sgemm_flops"]
            exp_s = fused_exps(B) / rates["exp_per_s"] if rates.get("exp_per_s") else float("nan")
            bound = max(gemm_s, exp_s)
            lines.append(f"| {sim} | {D} | {B} | {r['time_s']:.3f} | {per * 1e9:.2f} | {per / first:.2f} "
                         f"| {gemm_s:.3f} | {exp_s:.3f} | {bound / r['time_s']:.2f} |")
    return "\n".join(lines)


def contention_table(quiet, loaded) -> str:
    """Each method beside a busy neighbour vs. quiet, and naive/fused under the same load."""
    q, n = _index(quiet), _index(loaded, "neighbour")
    lines = ["| similarity | D | B | method | quiet s | beside neighbour s | slowdown | naive/fused loaded |",
             "|---|---|---|---|---|---|---|---|"]
    for key in sorted(n):
        sim, D, B, method = key
        nf, nn = n.get((sim, D, B, "fused")), n.get((sim, D, B, "naive"))
        vs_naive = f"{nn['time_s'] / nf['time_s']:.1f}x" if method == "fused" and nf and nn else ""
        slow = f"{n[key]['time_s'] / q[key]['time_s']:.2f}x" if key in q else "—"
        quiet_s = f"{q[key]['time_s']:.3f}" if key in q else "—"
        lines.append(f"| {sim} | {D} | {B} | {method} | {quiet_s} | {n[key]['time_s']:.3f} | {slow} | {vs_naive} |")
    return "\n".join(lines)


def markdown_table(results) -> str:
    """One row per (similarity, D, B, method): time, extra memory, float64 error, and the time and
    memory of the method relative to fused in the same run."""
    idx = _index(results)
    lines = ["| workload | D | B | method | time s | x fused time | extra MiB | x fused memory | err vs f64 "
             "| compile s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["similarity"], r["D"], r["B"], METHODS.index(r["method"]))):
        if r.get("load", "quiet") != "quiet":
            continue
        head = f"| {r['similarity']} | {r['D']} | {r['B']} | {r['method']} "
        if "time_s" not in r:
            lines.append(head + f"| {r.get('skipped') or r.get('error')} | | | | | |")
            continue
        f = idx.get((r["similarity"], r["D"], r["B"], "fused"))
        x_time = f"{r['time_s'] / f['time_s']:.2f}" if f else "—"
        x_mem = f"{r['extra_mem_bytes'] / max(1, f['extra_mem_bytes']):.1f}" if f else "—"
        err = f"{r['err_f64']:.1e}" if "err_f64" in r else "—"
        comp = f"{r['compile_s']:.1f}" if "compile_s" in r else ""
        lines.append(head + f"| {r['time_s']:.3f} | {x_time} | {r['extra_mem_bytes'] / 2**20:.1f} | {x_mem} "
                     f"| {err} | {comp} |")
    return "\n".join(lines)


def targets(results) -> list[str]:
    """The CPU speed and memory targets, evaluated as ratios within this run."""
    idx = _index(results)
    out = []

    def speed(sim, D, B, other):
        a, b = idx.get((sim, D, B, other)), idx.get((sim, D, B, "fused"))
        return a["time_s"] / b["time_s"] if a and b else None

    def check(label, value, goal, fmt="%.1fx"):
        if value is None:
            out.append(f"- {label}: not measured")
        else:
            out.append(f"- {label}: {fmt % value} (target {goal}) {'MET' if value >= goal else 'MISSED'}")

    check("B=6144 D=5 euclidean, naive/fused time", speed("euclidean", 5, 6144, "naive"), 10)
    check("B=6144 D=128 cosine, naive/fused time", speed("cosine", 128, 6144, "naive"), 4)
    check("B=6144 D=128 cosine, chunked/fused time", speed("cosine", 128, 6144, "chunked"), 1.5)
    mem = [idx[k[:3] + ("naive",)]["extra_mem_bytes"] / max(1, idx[k]["extra_mem_bytes"])
           for k in idx if k[3] == "fused" and k[:3] + ("naive",) in idx and k[2] >= 6144]
    check("B>=6144, naive/fused extra memory (worst point)", min(mem) if mem else None, 20)
    for D in sorted({k[1] for k in idx if k[0] == "clip"}):
        for B in sorted({k[2] for k in idx if k[0] == "clip" and k[1] == D}):
            compiled, lce = speed("clip", D, B, "compiled"), speed("clip", D, B, "torch_lce")
            if D <= 128:
                check(f"clip B={B} D={D}, compiled/fused time", compiled, 2.0)
            else:
                check(f"clip B={B} D={D}, compiled/fused time", compiled, 1.0, "%.2fx")
            check(f"clip B={B} D={D}, torch_lce/fused time", lce, 1.5, "%.2fx")
            c, f = idx.get(("clip", D, B, "compiled")), idx.get(("clip", D, B, "fused"))
            if c and f and D >= 512:
                check(f"clip B={B} D={D}, compiled/fused extra memory",
                      c["extra_mem_bytes"] / max(1, f["extra_mem_bytes"]), 10)
    for D in sorted({k[1] for k in idx if k[0] == "siglip"}):
        for B in sorted({k[2] for k in idx if k[0] == "siglip" and k[1] == D}):
            if D <= 128 and speed("siglip", D, B, "open_clip") is not None:
                check(f"siglip B={B} D={D}, open_clip/fused time", speed("siglip", D, B, "open_clip"), 3.0)
            if speed("siglip", D, B, "compiled") is not None:
                check(f"siglip B={B} D={D}, compiled/fused time", speed("siglip", D, B, "compiled"), 1.0, "%.2fx")
            f = idx.get(("siglip", D, B, "fused"))
            if f and B >= 16384 and D <= 128:
                frac = f["extra_mem_bytes"] / (4.0 * B * B)
                out.append(f"- siglip B={B} D={D} fused extra memory: {f['extra_mem_bytes'] / 2**20:.0f} MiB = "
                           f"1/{1 / max(frac, 1e-12):.0f} of one B x B float32 matrix (target <= 1/20) "
                           f"{'MET' if frac <= 1 / 20 else 'MISSED'}")
    big = idx.get(("cosine", 128, 65536, "fused"))
    if big:
        gib = big["extra_mem_bytes"] / 2**30
        out.append(f"- B=65536 D=128 cosine fused: {big['time_s']:.1f} s, {gib * 1024:.0f} MiB extra "
                   f"(target < 1 GiB) {'MET' if gib < 1 else 'MISSED'}")
    return out


def plot(results, path: Path, rates: dict | None = None) -> None:
    """Time and extra memory against B per method and D; with ``rates``, the fused kernel's
    8 B^2 D FLOPs at the run's sgemm rate as a thin grey line per D (the softmax losses' recompute
    floor; the sigmoid loss's one pass does 6 B^2 D)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sims = sorted({r["similarity"] for r in results})
    dims = sorted({r["D"] for r in results})
    fig, axes = plt.subplots(2, len(sims), figsize=(6 * len(sims), 8), squeeze=False)
    for col, sim in enumerate(sims):
        for method, style in zip(METHODS, ("-o", "--s", ":^", "-.v", "--D", ":x")):
            for D, color in zip(dims, ("C0", "C1", "C2", "C3")):
                pts = sorted((r["B"], r) for r in results if r["similarity"] == sim and r["D"] == D
                             and r["method"] == method and "time_s" in r)
                if not pts:
                    continue
                bs = [b for b, _ in pts]
                axes[0][col].plot(bs, [r["time_s"] for _, r in pts], style, color=color,
                                  label=f"{method} D={D}")
                axes[1][col].plot(bs, [max(r["extra_mem_bytes"], 1) / 2**20 for _, r in pts], style,
                                  color=color, label=f"{method} D={D}")
        if rates and rates.get("sgemm_flops"):
            for D in dims:
                bs = sorted({r["B"] for r in results if r["similarity"] == sim and r["D"] == D})
                if bs:
                    axes[0][col].plot(bs, [fused_flops(b, D) / rates["sgemm_flops"] for b in bs], "-", color="0.6",
                                      lw=0.8, label="8·B²·D FLOPs at the sgemm rate" if D == dims[0] else None)
        for row, ylabel in enumerate(("forward+backward time [s]", "peak extra memory [MiB]")):
            ax = axes[row][col]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("batch size B")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{sim} (CPU, {os.cpu_count()} cores)")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][col].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results, out_dir: Path, name: str, rates: dict | None = None,
                  contended: dict | None = None) -> tuple[Path, Path, str]:
    """JSON + PNG of the run and its markdown report. ``contended`` maps "quiet" / "neighbour" to
    the records of the same points measured without and beside a busy neighbour."""
    contended = contended or {"quiet": [], "neighbour": []}
    out_dir.mkdir(parents=True, exist_ok=True)
    from mmcl_fast import backend_info
    meta = {"backend": backend_info(), "cpu_count": os.cpu_count(), "machine_rates": rates}
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps({"meta": meta, "results": results, "contended": contended}, indent=1))
    png_path = out_dir / f"{name}.png"
    plot(results, png_path, rates)
    report = markdown_table(results) + "\n\n" + "\n".join(targets(results))
    if rates:
        exp = f"{rates['exp_per_s'] / 1e9:.2f} G exp/s" if rates.get("exp_per_s") else "exp rate n/a"
        report += (f"\n\nMachine limits in this run: sgemm {rates['sgemm_flops'] / 1e9:.1f} GFLOP/s, "
                   f"{exp}\n\n" + efficiency_table(results, rates))
    if contended["neighbour"]:
        report += ("\n\nBeside a busy neighbour process (BusyNeighbour), each point measured quiet "
                   "and loaded back to back:\n\n" + contention_table(contended["quiet"], contended["neighbour"]))
    return json_path, png_path, report
