"""A small forward + backward of every CUDA kernel variant (both reductions), for compute-sanitizer.

    compute-sanitizer --tool memcheck python3 benchmarks/cuda_sanitizer_case.py

Runs the symmetric InfoNCE (plain, and label-aware with repeated ids: the label pair) and the sigmoid
loss (mean: softplus_total; "none": the softplus pair; with ids: label_softplus_total) on
a 150 x 130 problem (three row blocks, tiles cut at the edges) for every
dtype and similarity, on both math paths (CUDA cores and tensor cores, KernelOptions.cuda_math_path), in
atomic and in deterministic mode, then synchronises. Exits non-zero if a
result is not finite.
"""
import torch

import mmcl_fast as mf


def main():
    torch.manual_seed(0)
    ok = True
    for path, deterministic in ((p, d) for p in ("simt", "tc") for d in (False, True)):
        options = mf.KernelOptions(deterministic=deterministic, cuda_math_path=path)
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for sim in ("cosine", "dot", "euclidean", "l1"):
                if path == "tc" and sim == "l1":
                    continue
                a = torch.randn(150, 130, device="cuda", dtype=dtype, requires_grad=True)
                b = torch.randn(150, 130, device="cuda", dtype=dtype, requires_grad=True)
                scale = torch.tensor(5.0, device="cuda", requires_grad=True)
                bias = torch.tensor(-2.0, device="cuda", requires_grad=True)
                ids = torch.randint(0, 40, (150,), device="cuda")
                losses = {
                    "infonce": lambda: mf.symmetric_infonce(a, b, logit_scale=scale, similarity=sim,
                                                            kernel_options=options),
                    "infonce_ids": lambda: mf.symmetric_infonce(a, b, logit_scale=scale, similarity=sim, ids=ids,
                                                                kernel_options=options),
                    "siglip": lambda: mf.siglip_loss(a, b, scale, bias, similarity=sim, kernel_options=options),
                    "siglip_ids": lambda: mf.siglip_loss(a, b, scale, bias, similarity=sim, ids=ids,
                                                         kernel_options=options),
                    "siglip_none": lambda: mf.siglip_loss(a, b, scale, bias, similarity=sim, reduction="none",
                                                          kernel_options=options).sum()}
                for name, loss_fn in losses.items():
                    a.grad = b.grad = scale.grad = bias.grad = None
                    loss = loss_fn()
                    loss.backward()
                    torch.cuda.synchronize()
                    finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(a.grad).all())
                    ok &= finite
                    print(f"path={path} deterministic={deterministic} {dtype} {sim} {name}: "
                          f"loss {loss.item():.4f} finite={finite}")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
