"""GPU benchmark of the fused CLIP loss (run on a lent GPU; see benchmarks/RESULTS.md).

    python benchmarks/bench_cuda.py [--batch-sizes 6144 32768 65536 131072] [--dims 5 128 768]

Forward+backward of the symmetric InfoNCE (cosine, logit_scale 100/7) timed with CUDA events
(median of warm repetitions, inputs rotated among several sets) and peak extra memory
(torch.cuda.max_memory_allocated minus the inputs), for bf16 and fp32, against:
eager PyTorch (open_clip's formulation), torch.compile of it, and Inf-CL (`inf_cl.cal_inf_loss`)
when it is installed. Effective TFLOP/s count 8 * B^2 * D (forward logits, backward dA and dB,
and the backward's recomputation). Writes benchmarks/results/bench_cuda.json and prints a table.
"""
import argparse
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

import mmcl_fast as mf


def eager_clip(a, b, scale):
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = scale * a @ b.T
    labels = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits.float(), labels) + F.cross_entropy(logits.T.float(), labels)) / 2


def fused_clip(a, b, scale):
    return mf.symmetric_infonce(a, b, logit_scale=scale)


def infcl_clip(a, b, scale):
    from inf_cl import cal_inf_loss
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    labels = torch.arange(a.shape[0], device=a.device)
    forward = cal_inf_loss(a, b, scale=scale, labels=labels).mean()
    return (forward + cal_inf_loss(b, a, scale=scale, labels=labels).mean()) / 2


def measure(fn, B, D, dtype, reps=10, sets=3):
    ins = [(torch.randn(B, D, device="cuda", dtype=dtype, requires_grad=True),
            torch.randn(B, D, device="cuda", dtype=dtype, requires_grad=True)) for _ in range(sets)]
    scale = torch.tensor(100.0 / 7, device="cuda", requires_grad=True)
    fn(*ins[0], scale).backward()  # warm-up / compile
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    times = []
    for i in range(reps):
        a, b = ins[i % sets]
        a.grad = b.grad = scale.grad = None
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(a, b, scale).backward()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    t = statistics.median(times)
    return {"time_s": t, "tflops": 8 * B * B * D / t / 1e12,
            "extra_mem_bytes": torch.cuda.max_memory_allocated() - base}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[6144, 32768, 65536, 131072])
    p.add_argument("--dims", type=int, nargs="+", default=[5, 128, 768])
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "bench_cuda.json")
    args = p.parse_args()
    methods = {"fused": fused_clip, "eager": eager_clip, "compiled": torch.compile(eager_clip)}
    try:
        import inf_cl  # noqa: F401
        methods["inf_cl"] = infcl_clip
    except ImportError:
        print("inf_cl not installed: Inf-CL column skipped")
    rows = []
    print(f"device: {torch.cuda.get_device_name()}  backend: {mf.backend_info()}")
    for dtype in args.dtypes:
        for D in args.dims:
            for B in args.batch_sizes:
                for name, fn in methods.items():
                    rec = {"method": name, "B": B, "D": D, "dtype": dtype}
                    try:
                        rec.update(measure(fn, B, D, getattr(torch, dtype)))
                    except torch.OutOfMemoryError:
                        rec["error"] = "out of memory"
                    except Exception as exc:  # noqa: BLE001 - report and go on
                        rec["error"] = f"{type(exc).__name__}: {exc}"[:200]
                    torch.cuda.empty_cache()
                    rows.append(rec)
                    cells = (f"{rec['time_s'] * 1e3:9.2f} ms {rec['tflops']:7.1f} TFLOP/s "
                             f"{rec['extra_mem_bytes'] / 2**20:9.1f} MiB") if "time_s" in rec else rec["error"]
                    print(f"{dtype:9s} D={D:4d} B={B:7d} {name:9s} {cells}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "results": rows}, indent=1))


if __name__ == "__main__":
    main()
