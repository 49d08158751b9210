"""The label-aware CUDA kernels (csrc/cuda/pairwise_lse.cu: RED = kLabel, and kSoftplus with label
signs) against float64.

As in test_cuda.py, every test runs under the host emulator (the same kernel and launcher source on
the CPU, two thread blocks at a time) and, marked ``cuda``, on a GPU when there is one. The label
op's six statistics and their gradients are compared with float64 autograd on the same (rounded)
inputs, for drawn ids with repeated values, for the pairs (i, i) without ids, and for a masked
diagonal (nt_xent's own-view pairs); the losses with ``ids=`` run the kernels end to end.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cuda import TF32_TOL, TOL
from torch.library import opcheck

import mmcl_fast as mf
from mmcl_fast import reference as ref

from conftest import rel_err


def _tol(dtype, path):
    return TF32_TOL if dtype == torch.float32 and path == "tc" else TOL[dtype]


def label_statistics64(x, y, scale, similarity, row_ids, col_ids, mask_diag):
    """(row_neg, col_neg, row_pos, col_pos, row_sum, col_sum) of L = scale * sim(x, y) in float64."""
    logits = scale * ref.similarity_matrix(x, y, similarity)
    m, n = logits.shape
    if row_ids is None:
        positive = torch.eye(m, n, dtype=torch.bool)
    else:
        positive = row_ids[:, None] == col_ids[None, :]
    excluded = torch.eye(m, n, dtype=torch.bool) if mask_diag else torch.zeros(m, n, dtype=torch.bool)
    positive = positive & ~excluded
    negative = ~positive & ~excluded
    ninf = torch.tensor(-math.inf, dtype=logits.dtype)
    neg, pos = torch.where(negative, logits, ninf), torch.where(positive, logits, ninf)
    psum = torch.where(positive, logits, torch.zeros_like(logits))
    return (torch.logsumexp(neg, 1), torch.logsumexp(neg, 0), torch.logsumexp(pos, 1), torch.logsumexp(pos, 0),
            psum.sum(1), psum.sum(0))


def _problem(seed, m, n, d, similarity, mode, classes, dtype, device):
    g = torch.Generator().manual_seed(seed)
    if mode == "masked":
        n = m
    x = torch.randn(m, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    y = x.clone() if mode == "masked" else torch.randn(n, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    x, y = x.to(dtype), y.to(dtype)  # the reference sees the rounded inputs
    if mode == "none":
        row_ids = col_ids = None
    else:
        row_ids = torch.randint(0, classes, (m,), generator=g)
        col_ids = row_ids.clone() if mode == "masked" else torch.randint(0, classes, (n,), generator=g)
    weights = [torch.randn(k, generator=g, dtype=torch.float64) for k in (m, n, m, n, m, n)]
    return x.to(device), y.to(device), row_ids, col_ids, weights


def _objective(stats, weights):
    """sum_k w_k . stat_k over the finite entries (a row without positives has LSE -inf)."""
    total = 0
    for s, w in zip(stats, weights):
        s = s.double()
        total = total + (torch.where(torch.isfinite(s), s, torch.zeros_like(s)) * w.to(s.device)).sum()
    return total


def _compare_statistics(device, path, dtype, similarity, x, y, row_ids, col_ids, weights, mask_diag, scale=2.5):
    ids = (None, None) if row_ids is None else (row_ids.to(device), col_ids.to(device))
    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    s = torch.tensor(scale, device=device, requires_grad=True)
    got = mf.pairwise_label_lse(xs, ys, s, *ids, similarity, mask_diag, True,
                                kernel_options=mf.KernelOptions(cuda_math_path=path))
    _objective(got, weights).backward()

    x64, y64 = x.detach().cpu().double().requires_grad_(), y.detach().cpu().double().requires_grad_()
    s64 = torch.tensor(scale, dtype=torch.float64, requires_grad=True)
    want = label_statistics64(x64, y64, s64, similarity, row_ids, col_ids, mask_diag)
    _objective(want, weights).backward()

    tol = _tol(dtype, path)
    for k, (a, b) in enumerate(zip(got, want)):
        a = a.detach().cpu().double()
        assert torch.equal(torch.isfinite(a), torch.isfinite(b)), k
        fin = torch.isfinite(b)
        # LSEs are judged against the logits' scale (an LSE near 0 has no relative precision)
        assert rel_err(a[fin], b[fin], floor=scale * math.sqrt(max(fin.sum().item(), 1))) < tol, k
    assert rel_err(xs.grad.cpu(), x64.grad, floor=1e-2) < tol
    assert rel_err(ys.grad.cpu(), y64.grad, floor=1e-2) < tol
    assert rel_err(s.grad.cpu(), s64.grad, floor=1.0) < tol


MODES = ["ids", "none", "masked"]


def _matrix(fast, modes=MODES):
    """(similarity, path, mode) for every combination; those ``fast`` rejects run in the slow lane."""
    return [pytest.param(sim, path, mode, marks=() if fast(sim, path, mode) else (pytest.mark.slow,))
            for sim in ("dot", "euclidean", "l1") for path in ("simt", "tc") for mode in modes]


# the fast lane: every similarity and mode on the CUDA cores, the tensor cores for dot
@pytest.mark.parametrize("similarity, path, mode", _matrix(lambda sim, path, mode: path == "simt" or sim == "dot"))
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 130), n=st.integers(1, 130), d=st.integers(1, 40),
       classes=st.integers(1, 12))
def test_label_statistics_match_float64(device, similarity, path, mode, seed, m, n, d, classes):
    x, y, ri, ci, w = _problem(seed, m, n, d, similarity, mode, classes, torch.float32, device)
    _compare_statistics(device, path, torch.float32, similarity, x, y, ri, ci, w, mode == "masked")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("similarity", ["dot", "euclidean", "l1"])
@pytest.mark.parametrize("path", ["simt", "tc"])
@pytest.mark.parametrize("mode", MODES)
def test_label_statistics_of_half_inputs(device, dtype, similarity, path, mode):
    x, y, ri, ci, w = _problem(7, 129, 65, 33, similarity, mode, 9, dtype, device)
    _compare_statistics(device, path, dtype, similarity, x, y, ri, ci, w, mode == "masked")


def test_a_class_shared_by_the_whole_batch_has_no_negatives(device):
    x, y, _, _, w = _problem(3, 70, 70, 8, "dot", "ids", 1, torch.float32, device)
    ids = torch.zeros(70, dtype=torch.long)
    _compare_statistics(device, "simt", torch.float32, "dot", x, y, ids, ids, w, False)
    stats = mf.pairwise_label_lse(x, y, torch.tensor(2.0, device=device), ids.to(device), ids.to(device), "dot",
                                  False, True)
    assert torch.isneginf(stats[0]).all() and torch.isneginf(stats[1]).all()


@pytest.mark.parametrize("loss", ["symmetric_infonce", "infonce", "nt_xent", "supcon"])
def test_label_aware_losses_run_the_kernels_end_to_end(device, loss):
    g = torch.Generator().manual_seed(5)
    n, d = 70, 16
    a64 = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    b64 = torch.nn.functional.normalize(a64 + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    ids = torch.randint(0, 20, (n,), generator=g)
    a, b = a64.float().to(device).requires_grad_(), b64.float().to(device).requires_grad_()
    ar, br = a64.float().double().requires_grad_(), b64.float().double().requires_grad_()
    if loss == "supcon":
        views, views64 = torch.stack([a, b], 1), torch.stack([ar, br], 1)
        out = mf.supcon_loss(views, ids.to(device), temperature=0.2)
        want = ref.supcon_loss(views64, ids, temperature=0.2)
    else:
        fused, naive = getattr(mf, loss), getattr(ref, f"multi_positive_{loss}")
        out = fused(a, b, temperature=0.2, ids=ids.to(device))
        want = naive(ar, br, ids, ids, temperature=0.2) if loss == "infonce" else naive(ar, br, ids, temperature=0.2)
    (out + 0).backward()
    want.backward()
    assert rel_err(out.detach().cpu(), want.detach()) < 1e-5
    assert rel_err(a.grad.cpu(), ar.grad, floor=1e-3) < 1e-4
    assert rel_err(b.grad.cpu(), br.grad, floor=1e-3) < 1e-4


def test_ids_arange_gives_the_plain_loss(device):
    g = torch.Generator().manual_seed(9)
    a, b = torch.randn(100, 24, generator=g).to(device), torch.randn(100, 24, generator=g).to(device)
    plain = mf.symmetric_infonce(a, b, temperature=0.1, reduction="none")
    labelled = mf.symmetric_infonce(a, b, temperature=0.1, reduction="none",
                                    ids=torch.arange(100, device=device))
    # the plain CUDA loss takes L_ii outside the tiles: equal to float32 rounding, not bitwise
    assert rel_err(labelled, plain) < 1e-6


def test_label_kernels_are_deterministic(device):
    x, y, ri, ci, _ = _problem(11, 129, 129, 20, "euclidean", "ids", 7, torch.float32, device)
    ri, ci = ri.to(device), ci.to(device)
    s = torch.tensor(3.0, device=device)
    first = mf.pairwise_label_lse(x, y, s, ri, ci, "euclidean", False, True)
    again = mf.pairwise_label_lse(x, y, s, ri, ci, "euclidean", False, True)
    assert all(torch.equal(u, v) for u, v in zip(first, again))
    lse = list(first[:4])
    grads = [torch.randn_like(t) for t in first]
    out = [torch.ops.mmcl_fast.label_lse_bwd(grads, x, y, s, ri, ci, lse, "euclidean", False, [True, True, True])
           for _ in range(2)]
    assert all(torch.equal(u, v) for u, v in zip(*out))


@pytest.mark.parametrize("with_ids", [True, False])
def test_opcheck_of_the_label_pair_on_the_cuda_implementation(device, with_ids):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(66, 9, generator=g).to(device).requires_grad_()
    y = torch.randn(70, 9, generator=g).to(device).requires_grad_()
    s = torch.tensor(2.0, device=device, requires_grad=True)
    ri = torch.randint(0, 5, (66,), generator=g).to(device) if with_ids else torch.empty(0, dtype=torch.long)
    ci = torch.randint(0, 5, (70,), generator=g).to(device) if with_ids else torch.empty(0, dtype=torch.long)
    opcheck(torch.ops.mmcl_fast.label_lse_fwd.default, (x, y, s, ri.to(device), ci.to(device), "dot", False, True),
            test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


def test_label_kernels_name_the_bad_argument(device):
    x, y = torch.randn(8, 4).to(device), torch.randn(8, 4).to(device)
    s = torch.tensor(1.0, device=device)
    ids = torch.arange(8, device=device)
    with pytest.raises(RuntimeError, match="float32, float16 and bfloat16"):
        torch.ops.mmcl_fast.label_lse_fwd(x.double(), y.double(), s, ids, ids, "dot", False, True)
    with pytest.raises(RuntimeError, match="col_ids must have shape"):
        torch.ops.mmcl_fast.label_lse_fwd(x, y, s, ids, ids[:5], "dot", False, True)
    stats = torch.ops.mmcl_fast.label_lse_fwd(x, y, s, ids, ids, "dot", False, True)
    grads = [torch.ones_like(t) for t in stats]
    grads[2] = grads[2].double()
    with pytest.raises(RuntimeError, match="grad_row_pos must be Float"):
        torch.ops.mmcl_fast.label_lse_bwd(grads, x, y, s, ids, ids, list(stats[:4]), "dot", False, [True] * 3)


# the fast lane: ids on every similarity on the CUDA cores, and dot on the tensor cores
@pytest.mark.parametrize("similarity, path, mode", _matrix(
    lambda sim, path, mode: mode == "ids" and (path == "simt" or sim == "dot"), modes=("ids", "none")))
def test_label_aware_sigmoid_terms_match_float64(device, similarity, path, mode):
    """The softplus reduction with label signs: row_i = sum_j softplus(-z_ij (L_ij + t)) and the
    gradients of a random weighting of the rows (x, y, scale, bias)."""
    with_ids = mode == "ids"
    x, y, ri, ci, w = _problem(13, 129, 70, 20, similarity, mode, 9, torch.float32, device)
    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    s = torch.tensor(3.0, device=device, requires_grad=True)
    t = torch.tensor(-1.5, device=device, requires_grad=True)
    ids = (ri.to(device), ci.to(device)) if with_ids else (None, None)
    options = mf.KernelOptions(cuda_math_path=path)
    row = mf.pairwise_label_softplus(xs, ys, s, t, *ids, similarity, kernel_options=options)
    (row.double().cpu() * w[0]).sum().backward()

    x64, y64 = x.cpu().double().requires_grad_(), y.cpu().double().requires_grad_()
    s64 = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    t64 = torch.tensor(-1.5, dtype=torch.float64, requires_grad=True)
    logits = s64 * ref.similarity_matrix(x64, y64, similarity) + t64
    positive = ri[:, None] == ci[None, :] if with_ids else torch.eye(129, 70, dtype=torch.bool)
    want = torch.nn.functional.softplus(torch.where(positive, -logits, logits), threshold=1e9).sum(1)
    (want * w[0]).sum().backward()
    tol = _tol(torch.float32, path)
    assert rel_err(row.detach().cpu(), want) < tol
    assert rel_err(xs.grad.cpu(), x64.grad, floor=1e-2) < tol
    assert rel_err(ys.grad.cpu(), y64.grad, floor=1e-2) < tol
    assert rel_err(s.grad.cpu(), s64.grad, floor=1.0) < tol
    assert rel_err(t.grad.cpu(), t64.grad, floor=1.0) < tol


def test_siglip_loss_with_ids_runs_the_kernels_end_to_end(device):
    g = torch.Generator().manual_seed(21)
    a64 = torch.nn.functional.normalize(torch.randn(70, 16, generator=g, dtype=torch.float64), dim=1)
    b64 = torch.nn.functional.normalize(a64 + 0.3 * torch.randn(70, 16, generator=g, dtype=torch.float64), dim=1)
    ids = torch.randint(0, 20, (70,), generator=g)
    a, b = a64.float().to(device).requires_grad_(), b64.float().to(device).requires_grad_()
    ar, br = a64.float().double().requires_grad_(), b64.float().double().requires_grad_()
    out = mf.SigLipLoss()(a, b, torch.tensor(10.0, device=device), torch.tensor(-5.0, device=device),
                          ids=ids.to(device))
    want = ref.siglip_loss(ar, br, 10.0, -5.0, ids=ids)
    out.backward()
    want.backward()
    assert rel_err(out.detach().cpu(), want.detach()) < 1e-5
    assert rel_err(a.grad.cpu(), ar.grad, floor=1e-3) < 1e-4
    assert rel_err(b.grad.cpu(), br.grad, floor=1e-3) < 1e-4
