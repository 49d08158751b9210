"""The pairwise LSE stays exact when a row's logits spread over hundreds of log units.

A wide spread (euclidean or unnormalised dot at a low temperature) sends the CPU kernel down its
two-exponential paths, which skip every vector of logits whose exponents against both the row and
the column offset lie below float's smallest normal (csrc/cpu/pairwise_lse_cpu.cpp,
negligible_exponent). Here each row's logits are spread uniformly over ~300 log units, so most
vectors are skipped and the vectors kept mix lanes that matter with lanes that do not. Values and
gradients (with random upstream gradients of both outputs) are compared with float64 autograd on
the same float32 inputs.

Spreads of 70 to 150 log units take the one-exponential paths instead, whose factors
(exp(offset differences) down to e^-80, times the upstream gradients in the backward) must not be
flushed to zero where the terms they scale still count: small upstream gradients, and columns whose
sum is held by rows of an earlier tile.
"""
import math

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


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1),
       m=st.integers(2, 70),
       n=st.integers(1, 70),
       d=st.sampled_from([3, 8, 24, 40]),
       sim=st.sampled_from(["dot", "euclidean"]),
       gap=st.floats(75.0, 145.0),
       grad_scale=st.floats(-30.0, 0.0))
def test_one_exponential_tiles_keep_small_upstream_gradients(seed, m, n, d, sim, gap, grad_scale):
    # Column 0 is an outlier whose largest logit lies `gap` units below the largest logit, so the
    # tiles take one exponential per logit with capped row offsets (o_i = lowest + 70 < r_i). The
    # gradient is linear in the upstream gradients: scaled by 10^-30..1, the float64 answer scales
    # exactly, and the float32 one must follow to its relative precision.
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(m, d, generator=g), torch.randn(n, d, generator=g)
    y[0] = 0.05 * y[0] if sim == "dot" else y[0] + 4.0
    raw = ref.similarity_matrix(x.double(), y.double(), sim)
    s = gap / max((raw.max() - raw.max(0).values.min()).item(), 1e-6)
    gr = torch.rand(m, generator=g) * 10.0 ** grad_scale
    gc = torch.rand(n, generator=g) * 10.0 ** grad_scale

    x32, y32 = x.clone().requires_grad_(), y.clone().requires_grad_()
    row, col = mf.pairwise_lse(x32, y32, torch.tensor(s), sim)
    ((row * gr).sum() + (col * gc).sum()).backward()
    x64, y64 = x.double().requires_grad_(), y.double().requires_grad_()
    logits = _logits64(x64, y64, s, sim)
    (torch.logsumexp(logits, 1) @ gr.double() + torch.logsumexp(logits, 0) @ gc.double()).backward()
    assert rel_err(x32.grad, x64.grad, floor=1e-300) < TOL
    assert rel_err(y32.grad, y64.grad, floor=1e-300) < TOL


def test_a_column_held_by_an_earlier_row_tile_keeps_the_later_tiles_terms():
    # Column 0's sum is held by row 0 (logit 157.5); rows 1.. reach 149.9 on it and 0 on column 1,
    # so a later row tile spans 149.9 units and takes one exponential per logit with t = 70:
    # exp(t - 157.5) lies below float's smallest normal while each of those rows adds e^-7.6 of
    # the column's sum. 600 rows: with up to 4 worker slots, each holds more than one row tile.
    m = 600
    x = torch.zeros(m, 2)
    x[0, 0], x[1:, 0] = 157.5, 149.9
    y = torch.eye(2)
    row, col = mf.pairwise_lse(x, y, torch.tensor(1.0), "dot")
    logits = x.double() @ y.double().T
    want = torch.logsumexp(logits, 0)
    assert math.isclose(col[0].item(), want[0].item(), rel_tol=0, abs_tol=1e-4), (col, want)
    assert rel_err(row, torch.logsumexp(logits, 1)) < 1e-6
    assert rel_err(col, want) < 1e-6
