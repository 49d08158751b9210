"""Label-aware positives: the label-aware operator and the losses built on it (multi-positive
CLIP / InfoNCE / NT-Xent, SupCon) against float64 formulas over the full matrix (hypothesis: random
id multiplicities, every similarity), their edge cases (one id for the whole batch, anchors without
a positive, all-distinct ids), pytorch-metric-learning's SupConLoss, the op conventions and bad input."""
import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import mmcl_fast as mf
from mmcl_fast import chunked, reference
from mmcl_fast.labels import positive_counts

from conftest import OpRecorder, cpu_isa_params, rel_err

SIMS = ("cosine", "dot", "euclidean", "l1")
KERNEL_SIMS = ("dot", "euclidean", "l1")
mf.backend_info()  # the ops are registered at the first call
FWD, BWD = torch.ops.mmcl_fast.label_lse_fwd.default, torch.ops.mmcl_fast.label_lse_bwd.default


def _features(seed, n, d, dtype=torch.float64, sim="dot"):
    """float32-representable values (also in float64): the float64 reference then sees the inputs
    the float32 kernels see, and l1's sign(x - y) is the same in both."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    if sim in ("euclidean", "l1"):
        x = x / math.sqrt(d)  # logits of order one per unit of scale
    return x.float().to(dtype)


def _ids(seed, n, distinct):
    return torch.randint(0, max(1, distinct), (n,), generator=torch.Generator().manual_seed(seed + 1))


def _dense_stats(x, y, s, row_ids, col_ids, sim, mask_diag, L=None):
    """The six outputs of label_lse_fwd from the full matrix and a full boolean mask."""
    L = s * reference.similarity_matrix(x, y, sim) if L is None else L
    pos = row_ids[:, None] == col_ids[None, :]
    neg = ~pos
    if mask_diag:
        eye = torch.eye(*L.shape, dtype=torch.bool)
        pos, neg = pos & ~eye, neg & ~eye
    ninf = torch.tensor(-math.inf, dtype=L.dtype)
    return (torch.logsumexp(torch.where(neg, L, ninf), 1), torch.logsumexp(torch.where(neg, L, ninf), 0),
            torch.logsumexp(torch.where(pos, L, ninf), 1), torch.logsumexp(torch.where(pos, L, ninf), 0),
            torch.where(pos, L, 0).sum(1), torch.where(pos, L, 0).sum(0))


def _weighted(outs, weights):
    """sum_k <w_k, out_k> with the LSEs over empty sets (-inf) left out."""
    return sum((w * torch.where(o > -math.inf, o, 0)).sum() for o, w in zip(outs, weights))


@cpu_isa_params
@given(m=st.integers(1, 300), n=st.integers(1, 300), d=st.integers(1, 40), distinct=st.integers(1, 40),
       sim=st.sampled_from(KERNEL_SIMS), mask_diag=st.booleans(), seed=st.integers(0, 2**16))
@example(m=140, n=270, d=20, distinct=3, sim="dot", mask_diag=True, seed=0)      # two row and two column tiles
@example(m=64, n=64, d=5, distinct=1, sim="euclidean", mask_diag=True, seed=1)   # no negatives anywhere
@example(m=40, n=60, d=3, distinct=1000, sim="l1", mask_diag=False, seed=2)      # rows without a positive
def test_operator_matches_float64(cpu_isa, m, n, d, distinct, sim, mask_diag, seed):
    """float32 outputs and gradients (of a random weighting of all six outputs) against float64."""
    x64, y64 = _features(seed, m, d, sim=sim), _features(seed + 7, n, d, sim=sim)
    s64 = torch.tensor(2.5, dtype=torch.float64)
    rid, cid = _ids(seed, m, distinct), _ids(seed + 3, n, distinct)
    weights = [torch.rand(k, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + i))
               for i, k in enumerate((m, n, m, n, m, n))]
    x, y, s = (t.float().requires_grad_() for t in (x64, y64, s64))
    out = mf.pairwise_label_lse(x, y, s, rid, cid, sim, mask_diag, True)
    X, Y, S = (t.clone().requires_grad_() for t in (x64, y64, s64))
    want = _dense_stats(X, Y, S, rid, cid, sim, mask_diag)
    for k, (o, w) in enumerate(zip(out, want)):
        assert torch.equal(o == -math.inf, w == -math.inf), k
        finite = w > -math.inf
        scale = max(w[finite].abs().max().item() if finite.any() else 0.0, 1.0)
        assert (o[finite].double() - w[finite]).abs().max().item() <= 1e-5 * scale if finite.any() else True, k
    got = torch.autograd.grad(_weighted(out, [w.float() for w in weights]), (x, y, s))
    ref = torch.autograd.grad(_weighted(want, weights), (X, Y, S))
    # The terms of dX, dY and dscale cancel among themselves (e.g. D = 1, signs of y_j mixed): each
    # gradient is judged against at least 1e-2 of the norm of its terms' magnitudes, bounded with
    # |d sim_ij / d x_i| <= |x_i| + |y_j| + 1 for every similarity.
    L = (s64 * reference.similarity_matrix(x64, y64, sim)).requires_grad_()
    (G,) = torch.autograd.grad(_weighted(_dense_stats(None, None, None, rid, cid, sim, mask_diag, L), weights), L)
    G, ax, ay = G.abs(), x64.abs().max() + 1, y64.abs().max() + 1
    magnitudes = (s64 * (G @ (y64.abs() + ax)), s64 * (G.T @ (x64.abs() + ay)), (G * (L / s64).abs()).sum())
    for k, (g, r, mag) in enumerate(zip(got, ref, magnitudes)):
        err = rel_err(g, r, floor=max(1e-2 * mag.norm().item(), 1e-6))
        assert err < 2e-5, (k, err)


# A gradient can vanish by cancellation of O(1) terms (the softmax weights of a row sum to the
# positives' weight; cosine's normalisation); float32 then leaves ~1e-7 of those terms (times the
# scale, 3.3 here), judged against a norm of at least 0.1 (typical gradients here have norm ~1).
GRAD_FLOOR = {"cosine": 1e-1, "dot": 1e-1, "euclidean": 1e-1, "l1": 1e-1}


def _loss_cases(seed, b, d, distinct, sim):
    if sim == "cosine":
        d = max(d, 2)  # at D = 1 normalised features are +-1: a gradient of exactly 0 in any precision
    a, bb = _features(seed, b, d, sim=sim), _features(seed + 5, b, d, sim=sim)
    keys = _features(seed + 9, b + 17, d, sim=sim)
    ids, kid = _ids(seed, b, distinct), _ids(seed + 4, b + 17, distinct)
    return a, bb, keys, ids, kid


@given(b=st.integers(2, 200), d=st.integers(1, 32), distinct=st.integers(1, 60), sim=st.sampled_from(SIMS),
       reduction=st.sampled_from(("mean", "sum", "none")), seed=st.integers(0, 2**16))
@example(b=150, d=16, distinct=150 * 4, sim="cosine", reduction="none", seed=0)  # mostly distinct
@example(b=33, d=3, distinct=1, sim="dot", reduction="mean", seed=1)             # one id for the batch
def test_multi_positive_losses_match_float64(b, d, distinct, sim, reduction, seed):
    a, bb, keys, ids, kid = _loss_cases(seed, b, d, distinct, sim)
    t = 0.3
    cases = [
        (lambda x, y: mf.symmetric_infonce(x, y, t, similarity=sim, reduction=reduction, ids=ids),
         lambda x, y: reference.multi_positive_symmetric_infonce(x, y, ids, t, similarity=sim, reduction=reduction),
         (a, bb)),
        (lambda x, y: mf.infonce(x, y, temperature=t, similarity=sim, reduction=reduction, ids=(ids, kid)),
         lambda x, y: reference.multi_positive_infonce(x, y, ids, kid, t, similarity=sim, reduction=reduction),
         (a, keys)),
        (lambda x, y: mf.nt_xent(x, y, t, similarity=sim, reduction=reduction, ids=ids),
         lambda x, y: reference.multi_positive_nt_xent(x, y, ids, t, similarity=sim, reduction=reduction),
         (a, bb)),
    ]
    for k, (fused, naive, (x64, y64)) in enumerate(cases):
        x, y = x64.float().requires_grad_(), y64.float().requires_grad_()
        X, Y = x64.clone().requires_grad_(), y64.clone().requires_grad_()
        got, want = fused(x, y), naive(X, Y)
        assert torch.isfinite(got).all()
        assert rel_err(got, want) < 1e-5, (k, rel_err(got, want))
        gx = torch.autograd.grad(got.sum(), (x, y))
        rx = torch.autograd.grad(want.sum(), (X, Y))
        for g, r in zip(gx, rx):
            assert rel_err(g, r, floor=GRAD_FLOOR[sim]) < 1e-5, (k, rel_err(g, r))


@given(n=st.integers(1, 120), views=st.integers(1, 3), classes=st.integers(1, 30), sim=st.sampled_from(SIMS),
       variant=st.sampled_from(("out", "in")), reduction=st.sampled_from(("mean", "sum", "none")),
       seed=st.integers(0, 2**16))
@example(n=50, views=1, classes=45, sim="cosine", variant="out", reduction="none", seed=3)  # lone anchors
@example(n=20, views=2, classes=1, sim="dot", variant="in", reduction="mean", seed=4)        # no negatives
def test_supcon_matches_float64(n, views, classes, sim, variant, reduction, seed):
    f64 = _features(seed, n * views, 24, sim=sim).reshape(n, views, 24)
    labels = _ids(seed, n, classes)
    f = f64.float().requires_grad_()
    F64 = f64.clone().requires_grad_()
    got = mf.supcon_loss(f, labels, 0.2, variant=variant, similarity=sim, reduction=reduction)
    want = reference.supcon_loss(F64, labels, 0.2, variant=variant, similarity=sim, reduction=reduction)
    assert got.shape == want.shape
    assert torch.isfinite(got).all()
    assert rel_err(got, want) < 1e-5
    (g,) = torch.autograd.grad(got.sum(), f)
    (r,) = torch.autograd.grad(want.sum(), F64)
    assert rel_err(g, r, floor=GRAD_FLOOR[sim]) < 1e-5


def test_all_distinct_ids_give_the_plain_losses():
    """ids = arange: bitwise the plain losses where those take their positives from the tiles too
    (the CPU engine); elsewhere (CUDA, the Python backend: L_ii from the O(B D) operands, summed in
    another order) to float32 rounding."""
    a, b = _features(0, 300, 48, torch.float32), _features(1, 300, 48, torch.float32)
    ids = torch.arange(300)
    bitwise = mf._ops.positives_in_tile(a.device)
    for sim in SIMS:
        pairs = [(mf.symmetric_infonce(a, b, 0.1, similarity=sim, ids=ids, reduction="none"),
                  mf.symmetric_infonce(a, b, 0.1, similarity=sim, reduction="none")),
                 (mf.infonce(a, b, temperature=0.1, similarity=sim, ids=ids, reduction="none"),
                  mf.infonce(a, b, temperature=0.1, similarity=sim, reduction="none")),
                 (mf.nt_xent(a, b, 0.1, similarity=sim, ids=ids, reduction="none"),
                  mf.nt_xent(a, b, 0.1, similarity=sim, reduction="none"))]
        for got, want in pairs:
            assert torch.equal(got, want) if bitwise else rel_err(got, want) < 1e-6, sim


def test_supcon_equals_pytorch_metric_learning():
    """pytorch-metric-learning's SupConLoss (L_out, cosine, mean over anchors with a positive):
    the same value and gradients to 1e-5, with lone anchors in the batch."""
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    g = torch.Generator().manual_seed(0)
    for n, classes, t in ((64, 10, 0.1), (300, 120, 0.07), (257, 3, 0.5)):
        emb = torch.randn(n, 32, generator=g)
        labels = torch.randint(0, classes, (n,), generator=g)
        x, y = emb.clone().requires_grad_(), emb.clone().requires_grad_()
        ours, theirs = mf.supcon_loss(x, labels, t), pml.SupConLoss(temperature=t)(y, labels)
        assert rel_err(ours, theirs) < 1e-5, (n, ours.item(), theirs.item())
        (gx,), (gy,) = torch.autograd.grad(ours, x), torch.autograd.grad(theirs, y)
        assert rel_err(gx, gy) < 1e-5, n


def test_supcon_module_and_views_layout():
    """SupConLoss == supcon_loss; [N, V, D] without labels: the other views are the positives
    (SimCLR in SupCon's form), equal to nt_xent for two views; "none" is [V, N]."""
    f = _features(0, 80, 16, torch.float32).reshape(40, 2, 16)
    labels = _ids(0, 40, 7)
    assert torch.equal(mf.SupConLoss(0.2)(f, labels), mf.supcon_loss(f, labels, 0.2))
    per = mf.supcon_loss(f, None, 0.2, variant="in", reduction="none")
    assert per.shape == (2, 40)
    want = mf.nt_xent(f[:, 0], f[:, 1], 0.2, reduction="none").reshape(2, 40)
    assert rel_err(per, want) < 1e-6


def test_anchors_without_a_positive_are_left_out_of_the_mean():
    f = _features(0, 10, 8, torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 4, 4, 5])  # 2, 3 and 5 are alone
    per = mf.supcon_loss(f, labels, 0.5, reduction="none")
    counts = positive_counts(labels, labels, exclude_self=True)
    assert counts.tolist() == [1, 1, 2, 2, 2, 0, 0, 1, 1, 0]
    assert (per[counts == 0] == 0).all() and (per[counts > 0] > 0).all()
    assert mf.supcon_loss(f, labels, 0.5) == pytest.approx(per.sum().item() / 7, rel=1e-12)
    lone = torch.arange(10)
    assert mf.supcon_loss(f, lone, 0.5).item() == 0.0  # no anchor has a positive
    q = _features(1, 4, 8, torch.float64).requires_grad_()
    loss = mf.infonce(q, f, temperature=0.5, ids=(torch.tensor([0, 9, 9, 4]), labels))
    (g,) = torch.autograd.grad(loss, q)
    assert torch.isfinite(g).all() and (g[1:3] == 0).all()  # ids 9 are nowhere among the keys


def test_the_mask_is_never_a_batch_by_batch_matrix():
    """The label-aware loss's temporaries stay O(B D): its largest allocation at B = 4096 is far
    below one B x B float32 matrix (64 MiB)."""
    b = 4096
    a, t = _features(0, b, 64, torch.float32), _features(1, b, 64, torch.float32)
    ids = _ids(0, b, b // 4)
    largest = []

    class Track(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for o in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(o, torch.Tensor):
                    largest.append(o.numel() * o.element_size())
            return out

    x, y = a.requires_grad_(), t.requires_grad_()
    with Track():
        loss = mf.symmetric_infonce(x, y, 0.1, ids=ids)
        loss.backward()
    assert max(largest) <= 4 * b * 64 * 4, max(largest)


@pytest.mark.parametrize("sim", KERNEL_SIMS)
def test_opcheck(sim):
    x, y = _features(0, 7, 5, sim=sim).requires_grad_(), _features(1, 9, 5, sim=sim).requires_grad_()
    s = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    rid, cid = torch.tensor([0, 1, 1, 2, 3, 0, 5]), torch.tensor([1, 0, 2, 2, 7, 1, 0, 3, 3])
    torch.library.opcheck(FWD, (x, y, s, rid, cid, sim, False, True))
    sq = _features(2, 7, 5, sim=sim).requires_grad_()
    torch.library.opcheck(FWD, (x, sq, s, rid, rid, sim, True, False))
    out = FWD(x.detach(), y.detach(), s.detach(), rid, cid, sim, False, True)
    grads = [torch.rand(o.shape[0], dtype=torch.float64) for o in out]
    for mask in ([True, True, True], [True, False, False], [False, True, True]):
        torch.library.opcheck(BWD, (grads, x.detach(), y.detach(), s.detach(), rid, cid, list(out[:4]), sim, False,
                                    mask))


def test_frozen_tower_asks_for_its_gradient_only():
    a = _features(0, 50, 6, torch.float32).requires_grad_()
    b = _features(1, 50, 6, torch.float32)
    with OpRecorder() as rec:
        mf.symmetric_infonce(a, b, 0.1, ids=_ids(0, 50, 20)).backward()
    masks = [list(args[9]) for func, args in rec.calls if func is BWD]
    assert masks == [[True, False, False]]


def test_compiled_backend_equals_the_chunked_implementation():
    """The C++ engine and the chunked PyTorch pair (the CUDA and fallback implementation) agree."""
    x, y = _features(0, 150, 9), _features(1, 290, 9)
    s = torch.tensor(3.0, dtype=torch.float64)
    rid, cid = _ids(0, 150, 30), _ids(1, 290, 30)
    for sim in KERNEL_SIMS:
        got = FWD(x, y, s, rid, cid, sim, False, True)
        want = chunked.label_lse_fwd(x, y, s, rid, cid, sim, False, True)
        for g, w in zip(got, want):
            assert torch.equal(g == -math.inf, w == -math.inf)
            assert (g - w).nan_to_num(0.0).abs().max() < 1e-10
        grads = [torch.rand(o.shape[0], dtype=torch.float64) for o in got]
        for g, w in zip(BWD(grads, x, y, s, rid, cid, list(got[:4]), sim, False, [True] * 3),
                        chunked.label_lse_bwd(*grads, x, y, s, rid, cid, *got[:4], sim, False)):
            assert rel_err(g, w) < 1e-12


def test_half_precision_inputs():
    a, b = _features(0, 100, 16), _features(1, 100, 16)
    ids = _ids(0, 100, 30)
    want = reference.multi_positive_symmetric_infonce(a, b, ids, 0.2)
    for dtype in (torch.float16, torch.bfloat16):
        got = mf.symmetric_infonce(a.to(dtype), b.to(dtype), 0.2, ids=ids)
        assert got.dtype == torch.float32
        assert rel_err(got, want) < (1e-2 if dtype == torch.bfloat16 else 2e-3)
    f = _features(2, 60, 16).reshape(30, 2, 16)
    labels = _ids(2, 30, 6)
    got = mf.supcon_loss(f.to(torch.bfloat16), labels, 0.2)
    assert rel_err(got, reference.supcon_loss(f, labels, 0.2)) < 1e-2


def test_bad_input_names_the_argument():
    a, b = _features(0, 8, 4, torch.float32), _features(1, 8, 4, torch.float32)
    with pytest.raises(TypeError, match="`ids` must be an integer tensor"):
        mf.symmetric_infonce(a, b, 0.1, ids=torch.zeros(8))
    with pytest.raises(ValueError, match=r"`ids` must have shape \[8\]"):
        mf.symmetric_infonce(a, b, 0.1, ids=torch.zeros(7, dtype=torch.long))
    with pytest.raises(TypeError, match="`ids` must be a torch.Tensor"):
        mf.nt_xent(a, b, 0.1, ids=[0] * 8)
    with pytest.raises(ValueError, match="`labels` or `ids`"):
        mf.infonce(a, b, torch.arange(8), 0.1, ids=torch.arange(8))
    with pytest.raises(ValueError, match="query_ids, key_ids"):
        mf.infonce(a, b[:5], temperature=0.1, ids=torch.arange(8))
    with pytest.raises(ValueError, match=r"`ids\[1\]` must have shape \[5\]"):
        mf.infonce(a, b[:5], temperature=0.1, ids=(torch.arange(8), torch.arange(4)))
    with pytest.raises(ValueError, match="`variant`"):
        mf.supcon_loss(a, torch.arange(8), variant="inside")
    with pytest.raises(ValueError, match="`labels` is required"):
        mf.supcon_loss(a)
    with pytest.raises(ValueError, match=r"`features` must be \[N, V, D\]"):
        mf.supcon_loss(a[None, None], torch.arange(8))
    with pytest.raises(ValueError, match="`labels` must have shape"):
        mf.supcon_loss(a.reshape(4, 2, 4), torch.arange(8))
    with pytest.raises(ValueError, match="`temperature`"):
        mf.SupConLoss(temperature=-1.0)
    s = torch.tensor(1.0)
    with pytest.raises(RuntimeError, match="row_ids must be int64"):
        FWD(a, b, s, torch.zeros(8, dtype=torch.int32), torch.zeros(8, dtype=torch.long), "dot", False, True)
    with pytest.raises(RuntimeError, match=r"col_ids must have shape \[8\]"):
        FWD(a, b, s, torch.zeros(8, dtype=torch.long), torch.zeros(3, dtype=torch.long), "dot", False, True)
    with pytest.raises(RuntimeError, match="x contains NaN or Inf"):
        FWD(a.clone().fill_(math.nan), b, s, torch.zeros(8, dtype=torch.long), torch.zeros(8, dtype=torch.long),
            "dot", False, True)


def test_module_arguments_follow_to_the_loss():
    f = _features(0, 40, 8, torch.float32).reshape(20, 2, 8)
    labels = _ids(0, 20, 5)
    m = mf.SupConLoss(0.3, variant="in", similarity="l1", reduction="sum")
    assert torch.equal(m(f, labels), mf.supcon_loss(f, labels, 0.3, variant="in", similarity="l1", reduction="sum"))
    # the default similarity is cosine: the scale of the features does not matter
    assert rel_err(mf.SupConLoss(0.3)(3 * f, labels), mf.SupConLoss(0.3)(f, labels)) < 1e-6


def test_without_ids_the_diagonal_is_the_positive_bit_for_bit():
    """row_ids = col_ids = None: the pairs (i, i) are the positives, with no id compared; the
    outputs and gradients are bitwise those of ids = arange (the same entries in the same order),
    also for a rectangular problem (positives (i, i), i < min(M, N))."""
    for m, n in ((300, 300), (130, 290), (290, 130)):
        x, y = _features(0, m, 20, torch.float32), _features(1, n, 20, torch.float32)
        s = torch.tensor(4.0)
        got, want = [], []
        for rid, cid, out in ((None, None, got), (torch.arange(m), torch.arange(n), want)):
            xx, yy, ss = x.clone().requires_grad_(), y.clone().requires_grad_(), s.clone().requires_grad_()
            o = mf.pairwise_label_lse(xx, yy, ss, rid, cid, "dot", False, True)
            w = [torch.linspace(0.1, 1, t.shape[0]) for t in o]
            out += [*o, *torch.autograd.grad(_weighted(o, w), (xx, yy, ss))]
        for g, w in zip(got, want):
            assert torch.equal(g, w)
    with pytest.raises(RuntimeError, match="mask_diag needs row_ids and col_ids"):
        mf.pairwise_label_lse(x, x, s, None, None, "dot", True, False)
    with pytest.raises(ValueError, match="both `row_ids` and `col_ids`, or neither"):
        mf.pairwise_label_lse(x, y, s, torch.arange(m), None)
    e = torch.empty(0, dtype=torch.long)
    xd, yd = x.double().requires_grad_(), y.double().requires_grad_()
    torch.library.opcheck(FWD, (xd, yd, s.double().requires_grad_(), e, e, "euclidean", False, True))


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager():
    """The label-aware losses compile without a graph break (fake kernels, registered autograd)
    and give eager's value and gradients."""
    torch._dynamo.reset()
    a = _features(0, 96, 16, torch.float32).requires_grad_()
    b = _features(1, 96, 16, torch.float32).requires_grad_()
    ids = _ids(0, 96, 30)
    log_scale = torch.tensor(2.0, requires_grad=True)

    def step(x, y, t, i):
        return (mf.symmetric_infonce(x, y, logit_scale=t.exp(), ids=i)
                + 0.5 * mf.supcon_loss(torch.stack([x, y], 1), i, 0.5)
                + 0.1 * mf.infonce(x, y, temperature=0.5, ids=(i, i.flip(0))))

    compiled = torch.compile(step, fullgraph=True)
    out_c = compiled(a, b, log_scale, ids)
    grads_c = torch.autograd.grad(out_c, [a, b, log_scale])
    out_e = step(a, b, log_scale, ids)
    grads_e = torch.autograd.grad(out_e, [a, b, log_scale])
    assert rel_err(out_c, out_e) < 1e-6
    for gc, ge in zip(grads_c, grads_e):
        assert rel_err(gc, ge) < 1e-5
