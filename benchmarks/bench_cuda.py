"""GPU benchmark of the fused CLIP and SigLIP losses (run on a lent GPU; figures in docs/benchmarks.md).

    python benchmarks/bench_cuda.py [--batch-sizes 6144 32768 65536 131072] [--dims 5 128 768] [--losses clip siglip]

Forward+backward of the symmetric InfoNCE (cosine, logit_scale 100/7) and of the sigmoid loss
(cosine, logit_scale 10, logit_bias -10; against open_clip's SigLipLoss formula and its
torch.compile) timed with CUDA events
(median of warm repetitions, inputs rotated among several sets) and peak extra memory
(torch.cuda.max_memory_allocated minus the inputs), for bf16 and fp32. The fused loss runs on
both math paths of the kernels (KernelOptions.cuda_math_path): `fused_simt` (CUDA cores) and `fused_tc`
(tensor cores; fp32 as TF32), against eager PyTorch (open_clip's formulation), torch.compile of
it, and Inf-CL (`inf_cl.cal_inf_loss`) when it is installed.

Effective TFLOP/s count 8 * B^2 * D (forward logits, backward dA and dB, and the backward's
recomputation); "of peak" divides them by the GPU's dense tensor-core peak for the dtype (bf16;
TF32 for fp32), from PEAK_TFLOPS by device name or --peak-tflops. Writes bench_cuda.json in
benchmarks/results (--out) and prints a table.
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


def eager_siglip(a, b, scale, bias=-10.0):
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = (scale * a @ b.T + bias).float()
    labels = 2 * torch.eye(a.shape[0], device=a.device) - 1
    return -F.logsigmoid(labels * logits).sum() / a.shape[0]


def siglip_fused_on(path):
    options = mf.KernelOptions(cuda_math_path=path)

    def fused_siglip(a, b, scale):
        return mf.siglip_loss(a, b, scale, -10.0, similarity="cosine", kernel_options=options)
    return fused_siglip


def fused_on(path):
    """The fused loss with the kernels' math path fixed to `path` (forward and backward)."""
    options = mf.KernelOptions(cuda_math_path=path)

    def fused_clip(a, b, scale):
        return mf.symmetric_infonce(a, b, logit_scale=scale, kernel_options=options)
    return fused_clip


# Dense (no sparsity) tensor-core peaks in TFLOP/s from NVIDIA's data sheets: (bf16/fp16, tf32).
PEAK_TFLOPS = {"H100 80GB HBM3": (989.4, 494.7), "H100 SXM": (989.4, 494.7), "H100 PCIe": (756.0, 378.0),
               "H100 NVL": (835.0, 417.5), "H200": (989.4, 494.7), "A100": (312.0, 156.0)}


def peak_for(device_name, dtype, override):
    if override is not None:
        return override
    for key, (half, tf32) in PEAK_TFLOPS.items():
        if key in device_name:
            return tf32 if dtype == "float32" else half
    return None


def infcl_clip(a, b, scale):
    from inf_cl import cal_inf_loss
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    labels = torch.arange(a.shape[0], device=a.device)
    forward = cal_inf_loss(a, b, scale=scale, labels=labels).mean()
    return (forward + cal_inf_loss(b, a, scale=scale, labels=labels).mean()) / 2


def measure(fn, B, D, dtype, reps=10, sets=3, scale_value=100.0 / 7):
    ins = [(torch.randn(B, D, device="cuda", dtype=dtype, requires_grad=True),
            torch.randn(B, D, device="cuda", dtype=dtype, requires_grad=True)) for _ in range(sets)]
    scale = torch.tensor(scale_value, device="cuda", requires_grad=True)
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
    p.add_argument("--losses", nargs="+", default=["clip", "siglip"], choices=["clip", "siglip"])
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="dense tensor-core peak for the 'of peak' column (default: by device name)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "bench_cuda.json")
    args = p.parse_args()
    methods = {}
    if "clip" in args.losses:
        methods.update({("clip", "fused_simt"): fused_on("simt"), ("clip", "fused_tc"): fused_on("tc"),
                        ("clip", "eager"): eager_clip, ("clip", "compiled"): torch.compile(eager_clip)})
        try:
            import inf_cl  # noqa: F401
            methods[("clip", "inf_cl")] = infcl_clip
        except ImportError:
            print("inf_cl not installed: Inf-CL column skipped")
    if "siglip" in args.losses:
        methods.update({("siglip", "fused_simt"): siglip_fused_on("simt"),
                        ("siglip", "fused_tc"): siglip_fused_on("tc"),
                        ("siglip", "eager"): eager_siglip, ("siglip", "compiled"): torch.compile(eager_siglip)})
    rows = []
    device = torch.cuda.get_device_name()
    print(f"device: {device}  backend: {mf.backend_info()}")
    for dtype in args.dtypes:
        for D in args.dims:
            for B in args.batch_sizes:
                for (loss, name), fn in methods.items():
                    rec = {"loss": loss, "method": name, "B": B, "D": D, "dtype": dtype}
                    try:
                        rec.update(measure(fn, B, D, getattr(torch, dtype),
                                           scale_value=10.0 if loss == "siglip" else 100.0 / 7))
                        peak = peak_for(device, dtype, args.peak_tflops)
                        rec["peak_tflops"] = peak
                        rec["fraction_of_peak"] = rec["tflops"] / peak if peak else None
                    except torch.OutOfMemoryError:
                        rec["error"] = "out of memory"
                    except Exception as exc:  # noqa: BLE001 - report and go on
                        rec["error"] = f"{type(exc).__name__}: {exc}"[:200]
                    torch.cuda.empty_cache()
                    rows.append(rec)
                    if "time_s" in rec:
                        of_peak = f"{rec['fraction_of_peak']:6.1%}" if rec["fraction_of_peak"] is not None else "     ?"
                        cells = (f"{rec['time_s'] * 1e3:9.2f} ms {rec['tflops']:7.1f} TFLOP/s {of_peak} of peak "
                                 f"{rec['extra_mem_bytes'] / 2**20:9.1f} MiB")
                    else:
                        cells = rec["error"]
                    print(f"{loss:6s} {dtype:9s} D={D:4d} B={B:7d} {name:10s} {cells}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": device, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
