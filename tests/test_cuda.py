"""CUDA kernels against the float64 CPU reference (skipped without a GPU and CUDA kernels)."""
import pytest
import torch

import mmcl_fast as mf
from mmcl_fast import _ops
from mmcl_fast import reference as ref

from conftest import rel_err

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not (torch.cuda.is_available() and _ops.has_cuda_kernels()),
                                 reason="needs a CUDA device and the compiled CUDA kernels")]

LOSSES = [(mf.symmetric_infonce, ref.symmetric_infonce), (mf.infonce, ref.infonce), (mf.nt_xent, ref.nt_xent)]
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("sim", ["cosine", "dot", "euclidean", "l1"])
@pytest.mark.parametrize("m, n, d", [(1, 1, 3), (67, 67, 5), (130, 130, 64), (200, 333, 130)])
@pytest.mark.parametrize("deterministic", [False, True])
def test_cuda_matches_float64_reference(dtype, sim, m, n, d, deterministic, monkeypatch):
    monkeypatch.setenv("MMCL_FAST_DETERMINISTIC", "1" if deterministic else "0")
    g = torch.Generator().manual_seed(m * 1000 + d)
    spread = {"cosine": 1.0, "dot": d ** -0.5, "euclidean": d ** -0.5, "l1": 1.0 / d}[sim]
    a = (torch.randn(m, d, generator=g, dtype=torch.float64) * spread).to(dtype)
    b = (torch.randn(n, d, generator=g, dtype=torch.float64) * spread).to(dtype)
    for fused, naive in LOSSES:
        if fused is not mf.infonce and m != n:
            continue
        a64, b64 = a.double().requires_grad_(), b.double().requires_grad_()
        s64 = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
        ac, bc = a.cuda().requires_grad_(), b.cuda().requires_grad_()
        sc = torch.tensor(3.0, device="cuda", requires_grad=True)
        out = fused(ac, bc, logit_scale=sc, similarity=sim)
        want = naive(a64, b64, logit_scale=s64, similarity=sim)
        grads = torch.autograd.grad(out, [ac, bc, sc])
        grads64 = torch.autograd.grad(want, [a64, b64, s64])
        assert rel_err(out, want, floor=1.0) < TOL[dtype]
        for gg, g64 in zip(grads, grads64):
            assert rel_err(gg, g64, floor=1e-3) < TOL[dtype]


def test_deterministic_mode_is_bitwise_reproducible(monkeypatch):
    monkeypatch.setenv("MMCL_FAST_DETERMINISTIC", "1")
    a = torch.randn(3000, 96, device="cuda", requires_grad=True)
    b = torch.randn(3000, 96, device="cuda")
    runs = []
    for _ in range(2):
        loss = mf.symmetric_infonce(a, b, logit_scale=torch.tensor(100.0, device="cuda"))
        (g,) = torch.autograd.grad(loss, a)
        runs.append((loss, g))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_logit_scale_100_column_merge_is_exact():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4096, 32, generator=g, dtype=torch.float64)
    b = torch.randn(4096, 32, generator=g, dtype=torch.float64)
    x = torch.nn.functional.normalize(a, dim=1)
    y = torch.nn.functional.normalize(b, dim=1)
    row, col = mf.pairwise_lse(x.float().cuda(), y.float().cuda(), torch.tensor(100.0, device="cuda"))
    logits = 100.0 * x @ y.T
    assert torch.isfinite(col).all()
    assert rel_err(col.cpu(), torch.logsumexp(logits, 0)) < 1e-5
    assert rel_err(row.cpu(), torch.logsumexp(logits, 1)) < 1e-5
