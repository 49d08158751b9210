"""The fused Lp-SimCLR estimator against its float64 transcription over the full matrix."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mmcl_fast as mf
from mmcl_fast import reference as ref

from conftest import rel_err


def _grads(fn, tensors, *args, **kw):
    out = fn(*tensors, *args, **kw)
    return out, torch.autograd.grad(out, tensors)


@given(m=st.integers(1, 41), k=st.integers(1, 53), d=st.integers(1, 20),
       tau=st.floats(0.2, 5.0), alpha=st.floats(0.0, 1.0),
       include_positive=st.booleans(), log_mean=st.booleans(),
       reduction=st.sampled_from(["mean", "sum", "none"]), seed=st.integers(0, 2**31 - 1))
def test_lpsimclr_matches_float64_reference(m, k, d, tau, alpha, include_positive, log_mean, reduction, seed):
    g = torch.Generator().manual_seed(seed)
    offset = torch.randn(1, d, generator=g, dtype=torch.float64) * 3  # shared offset: centring matters
    a, p, n = (torch.randn(r, d, generator=g, dtype=torch.float64) + offset for r in (m, m, k))
    opts = dict(alpha=alpha, include_positive=include_positive, log_mean=log_mean, reduction=reduction)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        xs = [t.to(dtype).requires_grad_() for t in (a, p, n)]
        x64 = [t.to(dtype).double().requires_grad_() for t in (a, p, n)]
        out, grads = _grads(lambda *t: mf.lpsimclr(*t, tau, **opts).sum(), xs)
        want, grads64 = _grads(lambda *t: ref.lpsimclr(*t, tau, **opts).sum(), x64)
        assert rel_err(out, want, floor=1.0) < tol
        for name, gg, g64 in zip(("anchor", "positive", "negatives"), grads, grads64):
            assert rel_err(gg, g64, floor=1e-3) < tol, name


def test_symmetric_lpsimclr_is_the_average_of_both_directions():
    g = torch.Generator().manual_seed(0)
    z1, z2, n1, n2 = (torch.randn(37, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4))
    tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    out = mf.symmetric_lpsimclr(z1, z2, n1, n2, tau)
    want = ref.symmetric_lpsimclr(z1, z2, n1, n2, tau)
    assert rel_err(out, want) < 1e-12
    for gg, g64 in zip(torch.autograd.grad(out, [z1, z2, n1, n2, tau]),
                       torch.autograd.grad(want, [z1, z2, n1, n2, tau])):
        assert rel_err(gg, g64) < 1e-10


def test_lpsimclr_half_inputs_computed_in_float32():
    g = torch.Generator().manual_seed(1)
    a, p, n = (torch.randn(20, 4, generator=g) for _ in range(3))
    out = mf.lpsimclr(a.half(), p.half(), n.half())
    assert out.dtype == torch.float32
    assert rel_err(out, ref.lpsimclr(a.half().double(), p.half().double(), n.half().double())) < 1e-5


@pytest.mark.parametrize("call, match", [
    (lambda a: mf.lpsimclr(a, a[:3], a), "`anchor` and `positive` must hold the same number"),
    (lambda a: mf.lpsimclr(a, a, a[:, :2]), "`anchor` and `negatives` must have the same feature"),
    (lambda a: mf.lpsimclr(a, a, a, 0.0), "temperature"),
    (lambda a: mf.lpsimclr(a, a, a, alpha=float("nan")), "`alpha`"),
    (lambda a: mf.lpsimclr(a, a, a, reduction="avg"), "`reduction`"),
    (lambda a: mf.lpsimclr(a, a, a.long()), "`negatives` must be a floating-point"),
])
def test_lpsimclr_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(torch.randn(5, 4))
