"""Fused losses against the naive float64 reference (mmcl_fast.reference) on random inputs."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mmcl_fast as mf
from mmcl_fast import reference as ref

from conftest import cpu_isa_params, rel_err

LOSSES = {"symmetric_infonce": (mf.symmetric_infonce, ref.symmetric_infonce),
          "infonce": (mf.infonce, ref.infonce),
          "nt_xent": (mf.nt_xent, ref.nt_xent)}
SIMS = ["cosine", "dot", "euclidean", "l1"]
TOL32 = 1e-5


def _inputs(seed, m, n, d, sim, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    # Typical embeddings: coordinates scaled so that distances stay O(1..10) whatever D (squared
    # euclidean grows like D, l1 like D). Large magnitudes have tests of their own below.
    spread = {"cosine": 1.0, "dot": 1.0, "euclidean": d ** -0.5, "l1": 1.0 / d}[sim]
    a = (torch.randn(m, d, generator=g, dtype=dtype) * spread)
    b = (torch.randn(n, d, generator=g, dtype=dtype) * spread)
    return a, b


def _positive_sims(name, a, b, sim, labels):
    """sim of each anchor's positive pair, one entry per element of the unreduced loss."""
    if name == "nt_xent":
        d = ref.similarity_matrix(a, b, sim).diagonal()
        return torch.cat([d, d])
    full = ref.similarity_matrix(a, b, sim)
    cols = torch.arange(a.shape[0]) if labels is None else labels.cpu()
    return full[torch.arange(a.shape[0]), cols]


def _compare(name, a, b, *, sim, reduction, temperature=None, logit_scale=None, labels=None,
             dtype=torch.float32, device="cpu"):
    """Loss and gradients of the fused loss in `dtype` vs. the float64 reference."""
    fused, naive = LOSSES[name]
    kw = dict(similarity=sim, reduction=reduction)
    extra = {"labels": labels} if name == "infonce" else {}
    # The reference sees exactly the values the fused loss sees (inputs rounded to `dtype`):
    # otherwise l1's discontinuous gradient can flip sign on a near-tie.
    a, b = a.to(dtype).double(), b.to(dtype).double()
    a64, b64 = a.clone().requires_grad_(), b.clone().requires_grad_()
    a32 = a.to(dtype=dtype, device=device).requires_grad_()
    b32 = b.to(dtype=dtype, device=device).requires_grad_()
    extra_cpu = {k: (v.cpu() if v is not None else v) for k, v in extra.items()}
    if logit_scale is not None:
        s64 = torch.tensor(logit_scale, dtype=torch.float64, requires_grad=True)
        s32 = torch.tensor(logit_scale, dtype=dtype, device=device, requires_grad=True)
        out = fused(a32, b32, logit_scale=s32, **extra, **kw)
        want = naive(a64, b64, logit_scale=s64, **extra_cpu, **kw)
        params, params64 = [a32, b32, s32], [a64, b64, s64]
    else:
        out = fused(a32, b32, temperature=temperature, **extra, **kw)
        want = naive(a64, b64, temperature=temperature, **extra_cpu, **kw)
        params, params64 = [a32, b32], [a64, b64]
    assert out.shape == want.shape
    assert torch.isfinite(out).all()
    # The upstream gradient is random too, so "none" reductions test every element's backward.
    w = torch.rand(want.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.5
    grads = torch.autograd.grad((out.double().cpu() * w).sum(), params)
    grads64 = torch.autograd.grad((want * w).sum(), params64)
    # Relative errors. The loss and its gradients are differences of the log-sum-exp part and the
    # positive-pair part, which can cancel almost exactly (a saturated
    # softmax, a single pair, 1-D cosine); each is judged against max(||ref||, ||positive part||),
    # the magnitude of the terms that cancel, computed in float64 from the same inputs.
    s64 = params64[2] if logit_scale is not None else 1.0 / temperature
    pos_part = (w * s64 * _positive_sims(name, params64[0], params64[1], sim, labels)).sum()
    pos_grads = torch.autograd.grad(pos_part, params64, allow_unused=True)
    pos_loss = s64 * _positive_sims(name, params64[0], params64[1], sim, labels)
    pos_loss = {"mean": pos_loss.mean, "sum": pos_loss.sum, "none": lambda: pos_loss}[reduction]()
    errs = [rel_err(out, want, floor=max(1.0, pos_loss.detach().norm().item()))]
    for g, g64, gp in zip(grads, grads64, pos_grads):
        floor = max(1e-12, gp.norm().item() if gp is not None else 0.0)
        errs.append(rel_err(g, g64, floor=floor))
    return errs


@cpu_isa_params
@given(data=st.data())
def test_symmetric_matches_reference(cpu_isa, data):
    sim = data.draw(st.sampled_from(SIMS))
    m = data.draw(st.integers(2, 300))  # M = 1 (all gradients exactly 0): test_single_pair_...
    d = data.draw(st.integers(2 if sim == "cosine" else 1, 256))
    seed = data.draw(st.integers(0, 2**31 - 1))
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]))
    a, b = _inputs(seed, m, m, d, sim)
    if data.draw(st.booleans()):
        kw = {"temperature": data.draw(st.floats(0.05, 5.0))}
    else:
        kw = {"logit_scale": data.draw(st.floats(0.2, 20.0))}
    errs = _compare("symmetric_infonce", a, b, sim=sim, reduction=reduction, **kw)
    assert max(errs) < TOL32, errs


@cpu_isa_params
@given(data=st.data())
def test_infonce_matches_reference(cpu_isa, data):
    sim = data.draw(st.sampled_from(SIMS))
    m = data.draw(st.integers(1, 200))
    n = data.draw(st.integers(m, 300))
    d = data.draw(st.integers(2 if sim == "cosine" else 1, 256))
    seed = data.draw(st.integers(0, 2**31 - 1))
    a, b = _inputs(seed, m, n, d, sim)
    labels = None
    if data.draw(st.booleans()):  # labels that are not arange, with repeats
        labels = torch.randint(0, n, (m,), generator=torch.Generator().manual_seed(seed))
    errs = _compare("infonce", a, b, sim=sim, reduction=data.draw(st.sampled_from(["mean", "sum", "none"])),
                    temperature=data.draw(st.floats(0.05, 5.0)), labels=labels)
    assert max(errs) < TOL32, errs


@cpu_isa_params
@given(data=st.data())
def test_nt_xent_matches_reference(cpu_isa, data):
    sim = data.draw(st.sampled_from(SIMS))
    m = data.draw(st.integers(2, 150))  # M = 1: each denominator holds only the positive, loss 0
    d = data.draw(st.integers(2 if sim == "cosine" else 1, 256))
    seed = data.draw(st.integers(0, 2**31 - 1))
    a, b = _inputs(seed, m, m, d, sim)
    errs = _compare("nt_xent", a, b, sim=sim, reduction=data.draw(st.sampled_from(["mean", "sum", "none"])),
                    logit_scale=data.draw(st.floats(0.2, 20.0)))
    assert max(errs) < TOL32, errs


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("name", list(LOSSES))
def test_gradcheck_float64(name, sim):
    fused, _ = LOSSES[name]
    g = torch.Generator().manual_seed(hash((name, sim)) % 2**31)
    a = torch.randn(9, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(9 if name != "infonce" else 13, 4, dtype=torch.float64, generator=g, requires_grad=True)
    s = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y, t: fused(x, y, logit_scale=t, similarity=sim, reduction="sum"),
                                    (a, b, s), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_pairwise_lse_both_outputs():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(11, 3, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randn(7, 3, dtype=torch.float64, generator=g, requires_grad=True)
    s = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    for sim in ("dot", "euclidean", "l1"):
        assert torch.autograd.gradcheck(lambda a, b, t: mf.pairwise_lse(a, b, t, sim), (x, y, s))


def test_pairwise_lse_masked_diagonal_values():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(40, 6, dtype=torch.float64, generator=g)
    s = torch.tensor(2.0, dtype=torch.float64)
    row, col = mf.pairwise_lse(x, x, s, "euclidean", mask_diag=True)
    logits = 2.0 * ref.similarity_matrix(x, x, "euclidean")
    logits.fill_diagonal_(float("-inf"))
    torch.testing.assert_close(row, torch.logsumexp(logits, 1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(col, torch.logsumexp(logits, 0), rtol=1e-12, atol=1e-12)


# --- extreme scales -------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("kw", [{"logit_scale": 100.0}, {"temperature": 0.01}])
def test_extreme_scale_cosine(name, kw):
    a, b = _inputs(5, 257, 257, 32, "cosine")
    errs = _compare(name, a, b, sim="cosine", reduction="mean", **kw)
    assert max(errs) < TOL32, errs


@pytest.mark.parametrize("name", list(LOSSES))
def test_euclidean_distances_in_the_hundreds(name):
    g = torch.Generator().manual_seed(6)
    a = torch.randn(200, 16, dtype=torch.float64, generator=g) * 40.0  # ||a - b|| ~ 200
    b = torch.randn(200, 16, dtype=torch.float64, generator=g) * 40.0
    # float64 kernel: exact; LSEs finite although logits reach -1e5.
    row, col = mf.pairwise_lse(a, b, torch.tensor(1.0, dtype=torch.float64), "euclidean")
    assert torch.isfinite(row).all() and torch.isfinite(col).all()
    assert row.min() < -1e3
    errs64 = _compare(name, a, b, sim="euclidean", reduction="mean", temperature=1.0, dtype=torch.float64)
    assert max(errs64) < 1e-10, errs64
    # float32: finite and as accurate as float32 logits of magnitude 1e5 allow.
    errs32 = _compare(name, a, b, sim="euclidean", reduction="mean", temperature=1.0)
    assert max(errs32) < 1e-4, errs32


def test_one_dimensional_cosine_has_zero_gradient():
    # cos of 1-D vectors is +-1 whatever their length: the loss is constant, its gradient zero
    # (which is why the property tests draw D >= 2 for cosine: a relative error of 0 is undefined).
    a, b = _inputs(12, 30, 30, 1, "cosine")
    a.requires_grad_()
    for name in LOSSES:
        (g,) = torch.autograd.grad(LOSSES[name][0](a, b, temperature=0.5, similarity="cosine"), a)
        assert g.abs().max() < 1e-6


def test_single_pair_and_repeated_rows():
    # One pair: the loss is exactly 0 and so is every gradient (LSE and positive term coincide).
    for sim in SIMS:
        a, b = _inputs(7, 1, 1, 8, sim)
        a.requires_grad_()
        s = torch.tensor(3.0, requires_grad=True)
        loss = mf.symmetric_infonce(a, b, logit_scale=s, similarity=sim)
        ga, gs = torch.autograd.grad(loss, [a, s])
        assert abs(loss.item()) < 1e-5 and ga.abs().max() < 1e-5 and abs(gs.item()) < 1e-5
    a, b = _inputs(8, 50, 50, 8, "euclidean")
    a[10:20] = a[0]  # repeated rows: ties in every row and column
    b[10:20] = b[0]
    for sim in SIMS:
        assert max(_compare("symmetric_infonce", a, b, sim=sim, reduction="none", temperature=0.3)) < TOL32


def test_half_precision_inputs_on_cpu_compute_in_float32():
    a, b = _inputs(9, 64, 64, 16, "cosine")
    out = mf.symmetric_infonce(a.bfloat16(), b.bfloat16(), temperature=0.1)
    want = ref.symmetric_infonce(a.bfloat16().double(), b.bfloat16().double(), temperature=0.1)
    assert out.dtype == torch.float32
    assert abs(out.item() - want.item()) / want.item() < 1e-5


def test_deterministic_for_fixed_threads():
    a, b = _inputs(10, 700, 700, 33, "dot")
    a.requires_grad_()
    outs = []
    for _ in range(2):
        loss = mf.symmetric_infonce(a, b, temperature=0.2, similarity="euclidean")
        (g,) = torch.autograd.grad(loss, a)
        outs.append((loss, g))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_learnable_logit_scale_gets_gradient_like_open_clip():
    a, b = _inputs(11, 64, 64, 16, "cosine")
    log_scale = torch.nn.Parameter(torch.tensor(2.6592))  # log(1 / 0.07)
    mf.symmetric_infonce(a, b, logit_scale=log_scale.exp()).backward()
    log_scale64 = torch.tensor(2.6592, dtype=torch.float64, requires_grad=True)
    ref.symmetric_infonce(a, b, logit_scale=log_scale64.exp()).backward()
    assert abs(log_scale.grad.item() - log_scale64.grad.item()) <= 1e-5 * abs(log_scale64.grad.item())
