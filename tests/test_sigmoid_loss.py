"""The fused sigmoid (SigLIP) loss: float64 property tests against the materialised formula, its
numerics at extreme scales and biases, the op conventions (opcheck, fake kernel, torch.compile,
needs_input_grad), bad input, and SigLipLoss against open_clip's formulas on 1, 2 and 3 ranks."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

import mmcl_fast as mf
from mmcl_fast import chunked, reference

from conftest import cpu_isa_params, rel_err

SIMS = ("dot", "cosine", "euclidean", "l1")


def _inputs(seed, m, d, sim, dtype, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, d, generator=g, dtype=torch.float64)
    b = a + spread * torch.randn(m, d, generator=g, dtype=torch.float64)
    if sim == "dot":
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    elif sim in ("euclidean", "l1"):          # logits of order one per unit of scale
        a, b = a / math.sqrt(d), b / math.sqrt(d)
    return a.to(dtype), b.to(dtype)


def _loss_and_grads(fn, a, b, s, t, weights=None, **kw):
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    s, t = s.clone().requires_grad_(), t.clone().requires_grad_()
    loss = fn(a, b, s, t, **kw)
    upstream = loss.double() if weights is None else loss.double() * weights
    return [loss.detach()] + [g.detach() for g in torch.autograd.grad(upstream.sum(), (a, b, s, t))]


def _parts(a, b, s, t, sim, weights, reduction):
    """The float64 gradients of the positives' and the negatives' parts of the loss separately:
    the magnitudes that cancel in the total (each gradient is judged against the larger)."""
    def part(positives):
        def fn(x, y, p, q, **_):
            logits = p * reference.similarity_matrix(x, y, sim) + q
            eye = torch.eye(x.shape[0], dtype=torch.bool)
            terms = torch.where(eye, F.softplus(-logits, threshold=1e9), F.softplus(logits, threshold=1e9))
            per = torch.where(eye if positives else ~eye, terms, 0).sum(1)
            return per.mean() if reduction == "mean" else (per.sum() if reduction == "sum" else per)
        return _loss_and_grads(fn, a, b, s, t, weights)
    return part(True), part(False)


def _logit_gradient(a, b, s, t, sim, weights, reduction):
    """dloss/dL_ij in float64."""
    logits = (s * reference.similarity_matrix(a, b, sim) + t).requires_grad_()
    z = torch.where(torch.eye(a.shape[0], dtype=torch.bool), -logits, logits)
    per = F.softplus(z, threshold=1e9).sum(1)
    out = per.mean() if reduction == "mean" else (per.sum() if reduction == "sum" else (per * weights).sum())
    (g,) = torch.autograd.grad(out, logits)
    return g


def _dscale_magnitude(a, b, s, t, sim, weights, reduction):
    """sum_ij |dloss/dL_ij| |sim_ij| in float64: the sum of the magnitudes of dscale's terms, which
    cancel among themselves too (sim of both signs: e.g. 1-D features of +-1, where float32's
    rounding of the two sigmoid values alone moves the sum by ~1e-5 of itself)."""
    g = _logit_gradient(a, b, s, t, sim, weights, reduction)
    return (g.abs() * reference.similarity_matrix(a, b, sim).abs()).sum().item()


def _cosine_input_magnitudes(a, b, s, t, weights, reduction):
    """For cosine, the norms of s sum_j |dloss/dL_ij| / ||a_i|| (and the same for b): the size of
    the two terms that cancel in the gradient of a normalised row, g_i / ||a_i|| and its component
    along a_i (nearly parallel pairs leave a gradient ~1e-3 of those terms)."""
    g = _logit_gradient(a, b, s, t, "cosine", weights, reduction).abs() * s
    return ((g.sum(1) / a.norm(dim=1)).norm().item(), (g.sum(0) / b.norm(dim=1)).norm().item())


def _assert_matches_float64(a, b, s, t, sim, tol, reduction="mean"):
    """Loss and the four gradients (of a random weighting of the per-anchor losses for "none")
    against the float64 formula on the same inputs. Norm-wise relative errors; each gradient's
    floor is the larger gradient of the two parts that cancel in it (positives, negatives), as
    the LSE losses' tests judge theirs; dscale's is at least 1e-2 of the sum of its terms'
    magnitudes, so its error may reach 1e-7 of that sum, about two float32 roundings (a float32
    sum cannot do better); one wrong term in 1e5 still fails it."""
    s64, t64 = torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)
    weights = None
    if reduction == "none":
        weights = torch.rand(a.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.5
    got = _loss_and_grads(mf.siglip_loss, a, b, torch.tensor(s, dtype=a.dtype), torch.tensor(t, dtype=a.dtype),
                          weights, similarity=sim, reduction=reduction)
    want = _loss_and_grads(reference.siglip_loss, a.double(), b.double(), s64, t64, weights, similarity=sim,
                           reduction=reduction)
    pos, neg = _parts(a.double(), b.double(), s64, t64, sim, weights, reduction)
    magnitude = _dscale_magnitude(a.double(), b.double(), s64, t64, sim, weights, reduction)
    normalised = (_cosine_input_magnitudes(a.double(), b.double(), s64, t64, weights, reduction)
                  if sim == "cosine" else (0.0, 0.0))
    for k, name in enumerate(("loss", "d a", "d b", "d scale", "d bias")):
        floor = 1e-30 if k == 0 else max(1e-12, pos[k].norm().item(), neg[k].norm().item())
        if name == "d scale":
            floor = max(floor, 1e-2 * magnitude)
        if name in ("d a", "d b"):  # float32 leaves ~1e-7 of the normalisation's terms: 1e-1 of them
            floor = max(floor, 1e-1 * normalised[k - 1])
        err = rel_err(got[k].double().reshape(-1), want[k].reshape(-1), floor=floor)
        assert err <= tol, f"{sim} {name}: relative error {err:.2e} > {tol}"


@cpu_isa_params
@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 300), d=st.integers(1, 80), sim=st.sampled_from(SIMS),
       log_scale=st.floats(math.log(0.1), math.log(100.0)), bias=st.floats(-20.0, 10.0),
       seed=st.integers(0, 2**31 - 1))
# features +-1 with bias 1: the positives' logits are exactly 0, the kink of max(z, 0) + log1p(exp(-|z|))
@example(m=2, d=1, sim="dot", log_scale=0.0, bias=1.0, seed=0)
# +-1 features and bias 6: dscale's terms cancel among the negatives (~1000x)
@example(m=195, d=1, sim="dot", log_scale=0.0, bias=6.0, seed=0)
# a single, nearly parallel cosine pair: the normalisation's terms cancel to ~2e-3 of themselves
@example(m=1, d=1, sim="cosine", log_scale=0.0, bias=0.0, seed=680460)
def test_float32_loss_and_all_four_gradients_match_float64(cpu_isa, m, d, sim, log_scale, bias, seed):
    d = max(d, 2) if sim == "cosine" else d    # 1-D cosine features cannot turn: zero gradients
    a, b = _inputs(seed, m, d, sim, torch.float32)
    _assert_matches_float64(a, b, math.exp(log_scale), bias, sim, 1e-5)


@settings(max_examples=10, deadline=None)
@given(m=st.integers(1, 200), d=st.integers(1, 40), sim=st.sampled_from(SIMS), bias=st.floats(-20.0, 10.0),
       seed=st.integers(0, 2**31 - 1))
def test_float64_inputs_match_the_formula_to_rounding(m, d, sim, bias, seed):
    d = max(d, 2) if sim == "cosine" else d    # 1-D cosine features cannot turn: zero gradients
    a, b = _inputs(seed, m, d, sim, torch.float64)
    _assert_matches_float64(a, b, 7.0, bias, sim, 1e-11)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_the_float32_loss_of_their_values(dtype):
    a, b = _inputs(3, 96, 32, "dot", dtype)
    got = _loss_and_grads(mf.siglip_loss, a, b, torch.tensor(10.0), torch.tensor(-10.0))
    want = _loss_and_grads(reference.siglip_loss, a.double(), b.double(), torch.tensor(10.0, dtype=torch.float64),
                           torch.tensor(-10.0, dtype=torch.float64))
    assert got[0].dtype == torch.float32 and got[1].dtype == dtype
    for k, (g, w) in enumerate(zip(got, want)):
        tol = 1e-2 if g.dtype == dtype else 1e-5      # gradients of half inputs come back in half
        assert rel_err(g.double().reshape(-1), w.reshape(-1)) < tol, (k, tol)


@pytest.mark.parametrize("sim", SIMS)
def test_per_anchor_losses_are_positive_and_tiny_ones_keep_their_relative_precision(sim):
    # Orthogonal anchors with close positives, a large scale and a bias that puts every logit far
    # on its side: each term is ~1e-13..1e-7. A form that subtracted the positive's logit from a
    # full row sum would lose them entirely (or go negative).
    g = torch.Generator().manual_seed(5)
    a = torch.eye(32, 64, dtype=torch.float64)
    b = a + 1e-3 * torch.randn(32, 64, generator=g, dtype=torch.float64)
    s, t = (60.0, -30.0) if sim in ("dot", "cosine") else (20.0, 15.0)
    got = mf.siglip_loss(a.float(), b.float(), s, t, similarity=sim, reduction="none").double()
    want = reference.siglip_loss(a.float().double(), b.float().double(), s, t, similarity=sim, reduction="none")
    assert (got > 0).all() and (want < 1e-5).all()
    assert ((got - want).abs() / want).max() < 1e-4


def test_extreme_logits_stay_finite_with_exact_gradients():
    a, b = _inputs(9, 50, 8, "dot", torch.float32)
    for s, t in ((100.0, 10.0), (100.0, -20.0), (1e-3, -20.0)):
        _assert_matches_float64(a, b, s, t, "dot", 1e-5)
    a, b = 30 * torch.randn(40, 8), 30 * torch.randn(40, 8)       # |L| up to ~1e5
    loss = mf.siglip_loss(a, b, 100.0, 0.0)
    assert torch.isfinite(loss)
    _assert_matches_float64(a, b, 100.0, 0.0, "dot", 1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions(reduction):
    a, b = _inputs(1, 33, 7, "cosine", torch.float32)
    _assert_matches_float64(a, b, 10.0, -3.0, "cosine", 1e-5, reduction=reduction)


def test_no_bias_is_a_zero_bias_and_a_number_scale_works():
    a, b = _inputs(2, 40, 9, "dot", torch.float32)
    assert torch.allclose(mf.siglip_loss(a, b, 10.0), mf.siglip_loss(a, b, torch.tensor(10.0), torch.tensor(0.0)))


def test_the_pure_pytorch_pair_matches_the_compiled_one():
    a, b = _inputs(4, 70, 12, "euclidean", torch.float64)
    s, t = torch.tensor(3.0, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
    for mask in (False, True):
        row = mf.pairwise_softplus(a, b, s, t, "euclidean", mask)
        assert rel_err(row, chunked.softplus_fwd(a, b, s, t, "euclidean", mask)) < 1e-12
        g = torch.rand(70, dtype=torch.float64)
        got = torch.ops.mmcl_fast.softplus_bwd(g, a, b, s, t, "euclidean", mask, [True] * 4)
        want = chunked.softplus_bwd(g, a, b, s, t, "euclidean", mask)
        for x, y in zip(got, want):
            assert rel_err(x.reshape(-1), y.reshape(-1)) < 1e-12
    for diagonal in ("negative", "masked", "positive"):
        got = torch.ops.mmcl_fast.softplus_total(a, b, s, t, "euclidean", diagonal, [True] * 4)
        want = chunked.softplus_total(a, b, s, t, "euclidean", diagonal)
        for x, y in zip(got, want):
            assert rel_err(x.reshape(-1), y.reshape(-1)) < 1e-12, diagonal


@pytest.mark.parametrize("sim", SIMS)
def test_the_one_pass_total_equals_the_row_sums_and_their_recomputed_gradients(sim):
    """mean/sum reductions take softplus_total (gradients from the forward's tiles); "none" takes
    softplus_fwd + softplus_bwd (tiles recomputed): the same numbers."""
    a, b = _inputs(12, 150, 20, sim, torch.float32)
    s, t = torch.tensor(5.0), torch.tensor(-2.0)
    one_pass = _loss_and_grads(mf.siglip_loss, a, b, s, t, similarity=sim, reduction="sum")
    recomputed = _loss_and_grads(lambda *x, **kw: mf.siglip_loss(*x, **kw).sum(), a, b, s, t, similarity=sim,
                                 reduction="none")
    for x, y in zip(one_pass, recomputed):
        assert rel_err(x.reshape(-1), y.reshape(-1)) < 1e-6


def test_a_frozen_tower_gets_no_gradient_pass():
    a, b = _inputs(6, 30, 5, "dot", torch.float64)
    s, t = torch.tensor(4.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    dx, dy, ds, db = torch.ops.mmcl_fast.softplus_bwd(torch.ones(30, dtype=torch.float64), a, b, s, t, "dot", True,
                                                      [True, False, False, True])
    assert dx.shape == a.shape and dy.numel() == 0 and ds.numel() == 0 and db.shape == t.shape
    a_req = a.clone().requires_grad_()
    mf.siglip_loss(a_req, b, s, t).backward()          # b, s, t frozen
    want = _loss_and_grads(reference.siglip_loss, a, b, s, t)[1]
    assert rel_err(a_req.grad, want) < 1e-12


def test_opcheck_and_fake_kernel():
    a, b = _inputs(7, 20, 6, "dot", torch.float32)
    s, t = torch.tensor(5.0, requires_grad=True), torch.tensor(-1.0, requires_grad=True)
    for mask in (False, True):
        torch.library.opcheck(torch.ops.mmcl_fast.softplus_fwd,
                              (a.clone().requires_grad_(), b.clone().requires_grad_(), s, t, "dot", mask))
    # output_mask as the losses pass it: the inputs that require a gradient
    torch.library.opcheck(torch.ops.mmcl_fast.softplus_total,
                          (a.clone().requires_grad_(), b.clone().requires_grad_(), s, t, "dot", "positive", [True] * 4))
    torch.library.opcheck(torch.ops.mmcl_fast.softplus_total,
                          (a, b.clone().requires_grad_(), s.detach(), t, "l1", "masked", [False, True, False, True]))
    g = torch.rand(20)
    torch.library.opcheck(torch.ops.mmcl_fast.softplus_bwd, (g, a, b, s.detach(), t.detach(), "l1", True, [True] * 4))


def test_torch_compile_fullgraph_matches_eager():
    a, b = _inputs(8, 64, 16, "dot", torch.float32)
    s, t = torch.tensor(10.0), torch.tensor(-10.0)
    compiled = torch.compile(mf.siglip_loss, fullgraph=True, backend="aot_eager")
    got = _loss_and_grads(compiled, a, b, s, t)
    want = _loss_and_grads(mf.siglip_loss, a, b, s, t)
    for g, w in zip(got, want):
        assert rel_err(g.reshape(-1), w.reshape(-1)) < 1e-6


@pytest.mark.parametrize("call, match", [
    (lambda a, b: mf.siglip_loss(a, b[:5], 10.0), "same number of pairs"),
    (lambda a, b: mf.siglip_loss(a, b, -1.0), "logit_scale"),
    (lambda a, b: mf.siglip_loss(a, b, 10.0, float("nan")), "logit_bias"),
    (lambda a, b: mf.siglip_loss(a, b, 10.0, torch.zeros(2)), "logit_bias"),
    (lambda a, b: mf.siglip_loss(a, b, 10.0, torch.tensor(float("inf"))), "bias"),
    (lambda a, b: mf.siglip_loss(a, b, 10.0, similarity="angle"), "similarity"),
    (lambda a, b: mf.siglip_loss(a, b, 10.0, reduction="max"), "reduction"),
    (lambda a, b: mf.siglip_loss(a, b.double(), 10.0), "dtype"),
    (lambda a, b: mf.siglip_loss(a.new_full(a.shape, float("nan")), b, 10.0), "NaN"),
    (lambda a, b: mf.SigLipLoss(dist_impl="ring"), "dist_impl"),
    (lambda a, b: mf.pairwise_softplus_total(a, b, torch.tensor(1.0), torch.tensor(0.0), "dot", "diag"), "diagonal"),
    (lambda a, b: torch.ops.mmcl_fast.softplus_total(a, b, torch.tensor(1.0), torch.tensor(0.0), "dot", "pos",
                                                     [True] * 4), "diagonal"),
    (lambda a, b: mf.SigLipLoss(rank=2, world_size=2), "rank"),
    (lambda a, b: mf.SigLipLoss()(a, b[:, :3], 10.0, -1.0), "feature dimension"),
])
def test_bad_input_gets_a_clear_error(call, match):
    a, b = _inputs(0, 10, 4, "dot", torch.float32)
    with pytest.raises((ValueError, TypeError, RuntimeError), match=match):
        call(a, b)


def test_siglip_module_matches_open_clip_single_process():
    a, b = _inputs(11, 48, 24, "dot", torch.float32)
    s, t = torch.tensor([10.0]), torch.tensor([-10.0])
    got = _loss_and_grads(lambda x, y, p, q: mf.SigLipLoss()(x, y, p, q), a, b, s, t)
    want = _loss_and_grads(lambda x, y, p, q: reference.OpenClipSigLipLoss()(x, y, p, q),
                           a.double(), b.double(), s.double(), t.double())
    for g, w in zip(got, want):
        assert rel_err(g.double().reshape(-1), w.reshape(-1)) < 1e-5
    out = mf.SigLipLoss()(a, b, s, t, output_dict=True)
    assert set(out) == {"contrastive_loss"}
