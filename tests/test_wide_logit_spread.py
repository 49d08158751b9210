"""The pairwise LSE stays exact when a row's logits spread over hundreds of log units.

A wide spread (euclidean or unnormalised dot at a low temperature) sends the CPU kernel down its
two-exponential paths, which skip every vector of logits whose exponents against both the row and
the column offset lie below float's smallest normal (csrc/cpu/pairwise_lse_cpu.cpp,
negligible_exponent). Here each row's logits are spread uniformly over ~300 log units, so most
vectors are skipped and the vectors kept mix lanes that matter with lanes that do not. Values and
gradients (with random upstream gradients of both outputs) are compared with float64 autograd on
the same float32 inputs.
"""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mmcl_fast as mf
from mmcl_fast import reference as ref

from conftest import rel_err

TOL = 5e-5  # float32 logits of magnitude ~600 carry errors up to ~1e-5 relative in the gradients


def _logits64(x, y, s, sim):
    return s * ref.similarity_matrix(x, y, sim)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1),
       m=st.integers(1, 70),
       n=st.integers(1, 70),
       d=st.sampled_from([3, 8, 16, 24, 40]),
       sim=st.sampled_from(["dot", "euclidean"]),
       spread=st.floats(150.0, 600.0),
       mask=st.booleans())
def test_wide_spread_matches_float64(seed, m, n, d, sim, spread, mask):
    if mask:
        n = m
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, d, generator=g)
    y = x.clone() if mask else torch.randn(n, d, generator=g)
    raw = ref.similarity_matrix(x.double(), y.double(), sim)
    s = spread / max((raw.max() - raw.min()).item(), 1e-6)  # logits span `spread` log units
    gr = torch.rand(m, generator=g, dtype=torch.float64)
    gc = torch.rand(n, generator=g, dtype=torch.float64)

    x32, y32 = x.clone().requires_grad_(), y.clone().requires_grad_()
    row, col = mf.pairwise_lse(x32, y32, torch.tensor(s), sim, mask_diag=mask)
    ((row.double() * gr).sum() + (col.double() * gc).sum()).backward()

    x64, y64 = x.double().requires_grad_(), y.double().requires_grad_()
    logits = _logits64(x64, y64, s, sim)
    if mask:
        logits = logits.masked_fill(torch.eye(m, dtype=torch.bool), float("-inf"))
    row64, col64 = torch.logsumexp(logits, 1), torch.logsumexp(logits, 0)
    ((row64 * gr).sum() + (col64 * gc).sum()).backward()

    fr, fc = torch.isfinite(row64), torch.isfinite(col64)  # a 1 x 1 masked problem has no terms
    assert torch.equal(torch.isfinite(row), fr) and torch.equal(torch.isfinite(col), fc)
    assert rel_err(row[fr], row64[fr]) < TOL
    assert rel_err(col[fc], col64[fc]) < TOL
    assert rel_err(x32.grad, x64.grad) < TOL
    assert rel_err(y32.grad, y64.grad) < TOL


@pytest.mark.parametrize("sim", ["dot", "euclidean"])
def test_wide_spread_rows_keep_every_lane_that_matters(sim):
    # Every row has one logit at its maximum and 50 within a few units of it, scattered among
    # columns ~400 units lower: each vector the kernel keeps has lanes it must not drop.
    g = torch.Generator().manual_seed(11)
    m, n, d = 64, 256, 24
    x = torch.randn(m, d, generator=g)
    y = torch.randn(n, d, generator=g) * 3.0
    near = torch.randperm(n, generator=g)[:50]
    y[near] = x[torch.randint(0, m, (50,), generator=g)] + 0.01 * torch.randn(50, d, generator=g)
    raw = ref.similarity_matrix(x.double(), y.double(), sim)
    s = 400.0 / (raw.max() - raw.min()).item()
    row, col = mf.pairwise_lse(x, y, torch.tensor(s), sim)
    logits = _logits64(x.double(), y.double(), s, sim)
    assert rel_err(row, torch.logsumexp(logits, 1)) < TOL
    assert rel_err(col, torch.logsumexp(logits, 0)) < TOL
