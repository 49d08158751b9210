"""Euclidean losses stay exact when the embeddings share a large offset (float32 vs float64).

-||a - b||^2 is translation invariant, so an encoder's outputs may drift far from the origin. The
operator centres euclidean inputs on their joint mean before expanding the square, streamed small-D
tiles work on differences, and the losses evaluate each cross-entropy as softplus(LSE over the
negatives - positive): errors then follow the data's spread, not its offset, and a per-item loss
is never negative.

Inputs are drawn so that the typical negative logit s * 2 D spread^2 lies in [0.5, 50]: float32
logits of magnitude |L| carry a few ulps of |L| (~1e-7 |L|) of rounding whatever the formula, and
1e-4 relative is what float32 can promise for logits up to ~50.
"""
import contextlib
import math
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

import mmcl_fast as mf
from mmcl_fast import _ops, chunked
from mmcl_fast import reference as ref

from conftest import rel_err

TOL = 1e-4
FLOAT32_TINY = torch.finfo(torch.float32).tiny


# Float64 ground truth without cancellation: logits from differences, and each cross-entropy as
# log(1 + sum_neg exp(L_neg - L_pos)) = softplus(LSE_neg - L_pos). The naive float64 formula
# LSE - L_pos itself rounds losses below ~1e-16 |L| to zero.
def _exact_logits(a, b, temperature):
    return -(a[:, None, :] - b[None, :, :]).square().sum(-1) / temperature


def _exact_ce(logits, positive):
    rows = torch.arange(logits.shape[0])
    pos = logits[rows, positive]
    neg = logits.clone()
    neg[rows, positive] = -math.inf
    return F.softplus(torch.logsumexp(neg, 1) - pos)


# Each loss as (its logits' operands, the loss as a function of its logits).
def _pairs_ab(a, b):
    return a, b


def _pairs_nt_xent(a, b):
    z = torch.cat([a, b])
    return z, z


def _symmetric_from_logits(logits):
    diag = torch.arange(logits.shape[0])
    return 0.5 * (_exact_ce(logits, diag) + _exact_ce(logits.T, diag))


def _infonce_from_logits(logits):
    return _exact_ce(logits, torch.arange(logits.shape[0]))


def _nt_xent_from_logits(logits):
    m = logits.shape[0]
    self_pairs = torch.eye(m, dtype=torch.bool)
    return _exact_ce(logits.masked_fill(self_pairs, -math.inf), (torch.arange(m) + m // 2) % m)


EXACT = {"symmetric_infonce": (_pairs_ab, _symmetric_from_logits),
         "infonce": (_pairs_ab, _infonce_from_logits),
         "nt_xent": (_pairs_nt_xent, _nt_xent_from_logits)}


def _exact(loss):
    pairs, from_logits = EXACT[loss]
    return lambda a, b, temperature: from_logits(_exact_logits(*pairs(a, b), temperature))


exact_symmetric_infonce, exact_infonce, exact_nt_xent = (_exact(k) for k in EXACT)


def gradient_term_magnitudes(loss, a, b, temperature, weight=None):
    """Per element of dloss/da and dloss/db, the sum of its terms' magnitudes, in float64.

    d mean(loss) / d p_u = sum_v G_uv dL_uv/dp_u with G = d mean(loss) / dL and
    dL_uv/dp_u = -2 (p_u - q_v) / t. Where the terms cancel (a softmax weight against the
    positive's pull), float32 can only promise a few ulps of these magnitudes, not of their sum.
    With ``weight``, every |G_uv| is replaced by it: ``weight=FLOAT32_TINY`` bounds what flushing
    the subnormal entries of G to zero can change.
    """
    pairs, from_logits = EXACT[loss]
    p, q = pairs(a.double(), b.double())
    logits = _exact_logits(p, q, temperature).requires_grad_()
    from_logits(logits).mean().backward()
    weights = logits.grad.abs() if weight is None else torch.full_like(logits, weight)
    dist = (p[:, None, :] - q[None, :, :]).abs()
    dp = 2 / temperature * torch.einsum("uv,uvd->ud", weights, dist)
    dq = 2 / temperature * torch.einsum("uv,uvd->vd", weights, dist)
    if p is q:                     # nt_xent: both operands are cat([a, b])
        dz = dp + dq
        return dz[: a.shape[0]], dz[a.shape[0]:]
    return dp, dq


def _chunked_pairwise_lse(x, y, scale, similarity="dot", mask_diag=False, compute_col=True, kernel_options=None):
    return chunked.ChunkedPairwiseLSE.apply(x, y, scale, similarity, mask_diag, compute_col)


def _backend(name: str):
    """The compiled operator, or the chunked pure-PyTorch fallback under the same losses."""
    if name == "python":
        return mock.patch.object(_ops, "pairwise_lse", _chunked_pairwise_lse)
    return contextlib.nullcontext()


backends = pytest.mark.parametrize("backend", ["compiled", "python"])


@st.composite
def offset_batches(draw):
    n = draw(st.integers(2, 70))
    d = draw(st.sampled_from([1, 2, 5, 16, 17, 33, 48]))       # streamed (<= 16) and BLAS tiles
    temperature = draw(st.floats(0.01, 1.0))
    logit = draw(st.floats(0.5, 50.0))                          # s * 2 d spread^2
    spread = math.sqrt(logit * temperature / (2 * d))
    offset = spread * draw(st.floats(0.0, 1e3))
    noise = draw(st.floats(0.05, 1.0))                          # positives' distance / spread
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    direction = F.normalize(torch.randn(d, generator=g, dtype=torch.float64), dim=0)
    a = spread * torch.randn(n, d, generator=g, dtype=torch.float64) + offset * direction
    b = a + noise * spread * torch.randn(n, d, generator=g, dtype=torch.float64)
    return a.float(), b.float(), temperature


def _compare(backend, loss, a, b, temperature):
    fused = LOSSES[loss]
    a32, b32 = a.clone().requires_grad_(), b.clone().requires_grad_()
    with _backend(backend):
        per = fused(a32, b32, temperature=temperature, similarity="euclidean", reduction="none")
        per.mean().backward()
    a64, b64 = a.double().requires_grad_(), b.double().requires_grad_()
    want = _exact(loss)(a64, b64, temperature)
    want.mean().backward()
    terms = gradient_term_magnitudes(loss, a, b, temperature)
    flushed = gradient_term_magnitudes(loss, a, b, temperature, weight=FLOAT32_TINY)
    assert per.detach().min() >= 0, "a negative cross-entropy"
    assert rel_err(per.mean(), want.mean()) < TOL
    # a gradient that cancels to far below its terms is judged against 1e-2 of their magnitude, and
    # none against less than what the engine's flush of subnormal G entries to zero can change
    floor_a, floor_b = (max(1e-2 * t.norm().item(), f.norm().item() / TOL) for t, f in zip(terms, flushed))
    assert rel_err(a32.grad, a64.grad, floor=floor_a) < TOL
    assert rel_err(b32.grad, b64.grad, floor=floor_b) < TOL


LOSSES = {"symmetric_infonce": mf.symmetric_infonce, "infonce": mf.infonce, "nt_xent": mf.nt_xent}


@backends
@pytest.mark.parametrize("loss", list(LOSSES))
@settings(max_examples=50)
@given(batch=offset_batches())
# a fresh-clone run drew this one: nt_xent's gradient of b cancels to 2.5e-7 from terms of ~1
@example(batch=(torch.tensor([[-5.3538], [2.9813]]), torch.tensor([[-10.7316], [1.4232]]), 1.0))
# and this one: infonce's exact gradient is 5.7e-39, below float32's normal range; float32 gives 0
@example(batch=(torch.tensor([[-8.3584], [1.8011]]), torch.tensor([[-7.7429], [2.6299]]), 1.0))
# and this one: nt_xent's gradient of a is 6e-36, summed from G entries of which some are subnormal
@example(batch=(torch.tensor([[2.4052, 1.4250], [-4.9527, -5.0748]]),
                torch.tensor([[2.4777, 5.1531], [-5.9119, -8.1147]]), 1.0))
def test_euclidean_losses_under_offsets(backend, loss, batch):
    _compare(backend, loss, *batch)


def test_exact_reference_agrees_with_the_naive_one_where_both_are_exact():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(20, 7, generator=g, dtype=torch.float64), torch.randn(20, 7, generator=g, dtype=torch.float64)
    for exact, naive in ((exact_symmetric_infonce, ref.symmetric_infonce), (exact_infonce, ref.infonce),
                         (exact_nt_xent, ref.nt_xent)):
        want = naive(a, b, temperature=0.7, similarity="euclidean", reduction="none")
        assert rel_err(exact(a, b, 0.7), want) < 1e-9


def test_issue_reproducer_to_float64():
    """64 x 16 at offset 10, spread 0.3, positives 0.1 apart, temperature 0.1."""
    torch.manual_seed(0)
    a = 0.3 * torch.randn(64, 16) + 10
    b = a + 0.1 * torch.randn(64, 16)
    per = mf.infonce(a, b, temperature=0.1, similarity="euclidean", reduction="none")
    want = F.cross_entropy(-(a.double()[:, None] - b.double()[None]).square().sum(-1) / 0.1,
                           torch.arange(64), reduction="none")
    assert per.min() >= 0
    assert rel_err(per.mean(), want.mean()) < 1e-5
    assert rel_err(per, want) < 1e-5
