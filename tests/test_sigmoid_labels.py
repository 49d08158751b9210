"""The label-aware sigmoid (SigLIP) loss, ``siglip_loss(..., ids=)`` / ``SigLipLoss()(..., ids=)``:
every pair with equal ids is a positive (z = +1), the rest negatives, each term taken with its own
sign in the tile (the ``label_softplus`` op pair). Float64 property tests with drawn id
multiplicities on every similarity and on the compiled and pure-PyTorch backends, the op
conventions, the special cases (all-distinct ids, one id for the whole batch) and bad input."""
import math
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

import mmcl_fast as mf
from mmcl_fast import _ops, chunked, reference

from conftest import rel_err

SIMS = ("dot", "cosine", "euclidean", "l1")


def _inputs(seed, m, d, sim, classes):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, d, generator=g, dtype=torch.float64)
    b = a + torch.randn(m, d, generator=g, dtype=torch.float64)
    if sim == "dot":
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    elif sim in ("euclidean", "l1"):
        a, b = a / math.sqrt(d), b / math.sqrt(d)
    ids = torch.randint(0, classes, (m,), generator=g)
    return a.float(), b.float(), ids


def _loss_and_grads(fn, a, b, s, t, **kw):
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    s, t = s.clone().requires_grad_(), t.clone().requires_grad_()
    loss = fn(a, b, s, t, **kw)
    return [loss.detach()] + [g.detach() for g in torch.autograd.grad(loss.double().sum(), (a, b, s, t))]


def _part_gradients(a, b, s, t, sim, ids, positives):
    """float64 gradients of the positives' (or the negatives') part of the loss alone: the
    magnitudes that cancel in the total, against which its gradients are judged."""
    def part(x, y, p, q, **_):
        logits = p * reference.similarity_matrix(x, y, sim) + q
        pos = ids[:, None] == ids[None, :]
        terms = torch.where(pos, F.softplus(-logits, threshold=1e9), F.softplus(logits, threshold=1e9))
        return torch.where(pos if positives else ~pos, terms, 0).sum() / x.shape[0]
    return _loss_and_grads(part, a, b, s, t)


def _dscale_magnitude(a, b, s, t, sim, ids):
    """sum_ij |dloss/dL_ij| |sim_ij| in float64: dscale's terms cancel among themselves (sims of
    both signs), so float32 can promise a few roundings of this sum, not of dscale itself."""
    logits = (s * reference.similarity_matrix(a, b, sim) + t).requires_grad_()
    z = torch.where(ids[:, None] == ids[None, :], -logits, logits)
    (g,) = torch.autograd.grad(F.softplus(z, threshold=1e9).sum() / a.shape[0], logits)
    return (g.abs() * reference.similarity_matrix(a, b, sim).abs()).sum().item()


def _assert_matches_float64(a, b, s, t, sim, ids, tol=1e-5):
    """Loss and the four gradients against the float64 formula on the same inputs, each gradient
    judged against the larger of the positives' and the negatives' parts that cancel in it, and
    dscale against at least 1e-2 of the sum of its terms' magnitudes (as test_sigmoid_loss.py)."""
    got = _loss_and_grads(mf.siglip_loss, a, b, torch.tensor(s), torch.tensor(t), similarity=sim, ids=ids)
    s64, t64 = torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)
    want = _loss_and_grads(reference.siglip_loss, a.double(), b.double(), s64, t64, similarity=sim, ids=ids)
    pos = _part_gradients(a.double(), b.double(), s64, t64, sim, ids, True)
    neg = _part_gradients(a.double(), b.double(), s64, t64, sim, ids, False)
    magnitude = _dscale_magnitude(a.double(), b.double(), s64, t64, sim, ids)
    for k, name in enumerate(("loss", "d a", "d b", "d scale", "d bias")):
        floor = 1e-30 if k == 0 else max(1e-12, pos[k].norm().item(), neg[k].norm().item())
        if name == "d scale":
            floor = max(floor, 1e-2 * magnitude)
        err = rel_err(got[k].double().reshape(-1), want[k].reshape(-1), floor=floor)
        assert err <= tol, f"{sim} {name}: relative error {err:.2e} > {tol}"


BACKENDS = ["compiled", "python"]


def _backend(name):
    if name == "python":  # the chunked pair under the same loss
        return mock.patch.object(_ops, "pairwise_label_softplus", _chunked_label_softplus)
    return mock.patch.object(_ops, "pairwise_label_softplus", _ops.pairwise_label_softplus)


class _ChunkedLabelSoftplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, s, t, row_ids, col_ids, similarity):
        ctx.save_for_backward(x, y, s, t, row_ids, col_ids)
        ctx.similarity = similarity
        return chunked.label_softplus_fwd(x, y, s, t, row_ids, col_ids, similarity)

    @staticmethod
    def backward(ctx, grad_row):
        x, y, s, t, row_ids, col_ids = ctx.saved_tensors
        dx, dy, ds, dt = chunked.label_softplus_bwd(grad_row, x, y, s, t, row_ids, col_ids, ctx.similarity)
        return dx, dy, ds, dt, None, None, None


def _chunked_label_softplus(x, y, s, t, row_ids, col_ids, similarity, kernel_options=None):
    return _ChunkedLabelSoftplus.apply(x, y, s, t, row_ids, col_ids, similarity)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 200), d=st.integers(2, 48), sim=st.sampled_from(SIMS), classes=st.integers(1, 40),
       log_scale=st.floats(math.log(0.5), math.log(30.0)), bias=st.floats(-12.0, 6.0),
       seed=st.integers(0, 2**31 - 1))
# one class, 2-D dot features: dscale's terms cancel (a fresh-clone run drew it)
@example(m=65, d=2, sim="dot", classes=1, log_scale=0.0, bias=-8.0, seed=1)
def test_label_aware_sigmoid_loss_matches_float64(backend, m, d, sim, classes, log_scale, bias, seed):
    a, b, ids = _inputs(seed, m, d, sim, classes)
    with _backend(backend):
        _assert_matches_float64(a, b, math.exp(log_scale), bias, sim, ids)


@pytest.mark.parametrize("sim", SIMS)
def test_all_distinct_ids_give_the_plain_loss(sim):
    a, b, _ = _inputs(3, 130, 17, sim, 1)
    s, t = torch.tensor(8.0), torch.tensor(-3.0)
    plain = _loss_and_grads(mf.siglip_loss, a, b, s, t, similarity=sim)
    labelled = _loss_and_grads(mf.siglip_loss, a, b, s, t, similarity=sim, ids=torch.arange(130) * 7 - 50)
    for x, y in zip(plain, labelled):  # the same terms, summed in another order
        assert rel_err(x.reshape(-1), y.reshape(-1)) < 1e-6


def test_one_id_for_the_whole_batch_makes_every_pair_a_positive():
    a, b, _ = _inputs(4, 40, 8, "dot", 1)
    ids = torch.full((40,), 3)
    per = mf.siglip_loss(a, b, 5.0, -1.0, ids=ids, reduction="none")
    logits = 5.0 * a.double() @ b.double().T - 1.0
    assert rel_err(per, F.softplus(-logits).sum(1)) < 1e-6


def test_tiny_per_anchor_losses_keep_their_relative_precision():
    # duplicates far apart from the rest and close to each other: every term is tiny
    g = torch.Generator().manual_seed(5)
    centres = 4.0 * torch.randn(20, 8, generator=g, dtype=torch.float64)
    ids = torch.arange(20).repeat_interleave(3)
    a = centres[ids] + 0.01 * torch.randn(60, 8, generator=g, dtype=torch.float64)
    b = centres[ids] + 0.01 * torch.randn(60, 8, generator=g, dtype=torch.float64)
    per = mf.siglip_loss(a.float(), b.float(), 2.0, 20.0, similarity="euclidean", ids=ids, reduction="none")
    want = reference.siglip_loss(a.float().double(), b.float().double(), 2.0, 20.0, similarity="euclidean", ids=ids,
                                 reduction="none")
    assert want.max() < 1e-3
    assert ((per.double() - want).abs() / want).max() < 1e-4


def test_siglip_module_takes_ids():
    a, b, ids = _inputs(6, 50, 12, "dot", 10)
    s, t = torch.tensor([10.0]), torch.tensor([-10.0])
    got = mf.SigLipLoss()(a, b, s, t, ids=ids)
    assert rel_err(got, mf.siglip_loss(a, b, s, t, ids=ids)) < 1e-7
    assert rel_err(got, reference.siglip_loss(a.double(), b.double(), 10.0, -10.0, ids=ids)) < 1e-5


def test_opcheck_and_fake_kernel():
    a, b, ids = _inputs(7, 20, 6, "dot", 5)
    s, t = torch.tensor(5.0, requires_grad=True), torch.tensor(-1.0, requires_grad=True)
    none = torch.empty(0, dtype=torch.long)
    for row_ids, col_ids in ((ids, ids), (none, none)):
        torch.library.opcheck(torch.ops.mmcl_fast.label_softplus_fwd,
                              (a.clone().requires_grad_(), b.clone().requires_grad_(), s, t, row_ids, col_ids, "l1"))
    torch.library.opcheck(torch.ops.mmcl_fast.label_softplus_total,
                          (a.clone().requires_grad_(), b.clone().requires_grad_(), s, t, ids, ids, "dot", [True] * 4))
    torch.library.opcheck(torch.ops.mmcl_fast.label_softplus_total,
                          (a, b.clone().requires_grad_(), s.detach(), t, none, none, "euclidean",
                           [False, True, False, True]))
    torch.library.opcheck(torch.ops.mmcl_fast.label_softplus_bwd,
                          (torch.rand(20), a, b, s.detach(), t.detach(), ids, ids, "dot", [True, False, True, True]))


@pytest.mark.parametrize("sim", SIMS)
def test_the_one_pass_total_equals_the_row_sums_and_their_recomputed_gradients(sim):
    a, b, ids = _inputs(12, 150, 20, sim, 30)
    s, t = torch.tensor(5.0), torch.tensor(-2.0)
    one_pass = _loss_and_grads(mf.siglip_loss, a, b, s, t, similarity=sim, reduction="sum", ids=ids)
    recomputed = _loss_and_grads(lambda *x, **kw: mf.siglip_loss(*x, **kw).sum(), a, b, s, t, similarity=sim,
                                 reduction="none", ids=ids)
    for x, y in zip(one_pass, recomputed):
        assert rel_err(x.reshape(-1), y.reshape(-1)) < 1e-6


def test_without_ids_the_label_op_gives_the_diagonal_positives():
    a, b, _ = _inputs(8, 30, 5, "euclidean", 1)
    s, t = torch.tensor(3.0), torch.tensor(-1.0)
    got = mf.pairwise_label_softplus(a, b, s, t, None, None, "euclidean")
    want = reference.siglip_loss(a.double(), b.double(), 3.0, -1.0, similarity="euclidean", reduction="none")
    assert rel_err(got, want) < 1e-6


def test_torch_compile_fullgraph_matches_eager():
    a, b, ids = _inputs(9, 64, 16, "dot", 20)
    s, t = torch.tensor(10.0), torch.tensor(-10.0)
    compiled = torch.compile(lambda *x: mf.siglip_loss(*x, ids=ids), fullgraph=True, backend="aot_eager")
    got = _loss_and_grads(compiled, a, b, s, t)
    want = _loss_and_grads(lambda *x: mf.siglip_loss(*x, ids=ids), a, b, s, t)
    for g, w in zip(got, want):
        assert rel_err(g.reshape(-1), w.reshape(-1)) < 1e-6


@pytest.mark.parametrize("call, match", [
    (lambda a, b, ids: mf.siglip_loss(a, b, 10.0, ids=ids[:5]), "ids"),
    (lambda a, b, ids: mf.siglip_loss(a, b, 10.0, ids=ids.float()), "ids"),
    (lambda a, b, ids: mf.SigLipLoss()(a, b, 10.0, ids=ids[None]), "ids"),
    (lambda a, b, ids: mf.pairwise_label_softplus(a, b, torch.tensor(1.0), torch.tensor(0.0), ids, None), "both"),
    (lambda a, b, ids: torch.ops.mmcl_fast.label_softplus_fwd(a, b, torch.tensor(1.0), torch.tensor(0.0), ids,
                                                              ids[:3], "dot"), "col_ids"),
])
def test_bad_ids_get_a_clear_error(call, match):
    a, b, ids = _inputs(0, 10, 4, "dot", 3)
    with pytest.raises((ValueError, TypeError, RuntimeError), match=match):
        call(a, b, ids)
