"""The compiled CPU ``operands`` op (cosine normalisation and positive-pair similarities of the
losses) against a float64 PyTorch transcription: values, gradients, the frozen side, errors."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import mmcl_fast as mf
from mmcl_fast import _ops
from mmcl_fast.operands import paired_operands

from conftest import OpRecorder, rel_err

mf.backend_info()
pytestmark = pytest.mark.skipif(not _ops.has_operands_op(), reason="needs the compiled CPU operands op")
SIMS = ["cosine", "dot", "euclidean", "l1"]


def _reference(a, b, similarity):
    """(ka, kb, pos) in float64 with PyTorch ops, as the losses computed them before the op."""
    a, b = a.double(), b.double()
    if similarity == "cosine":
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    m = a.shape[0]
    if similarity in ("cosine", "dot"):
        pos = (a * b[:m]).sum(1)
    elif similarity == "euclidean":
        pos = -(a - b[:m]).square().sum(1)
    else:
        pos = -(a - b[:m]).abs().sum(1)
    return a, b, pos


def _grads(fn, a, b, weights):
    a, b = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    outs = fn(a, b)
    total = sum((o.double() * w).sum() for o, w in zip(outs, weights))
    return outs, torch.autograd.grad(total, [a, b])


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 40), extra=st.integers(0, 20), d=st.integers(1, 70), sim=st.sampled_from(SIMS),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2**31 - 1))
@example(m=1, extra=0, d=1, sim="euclidean", dtype=torch.float32, seed=962)  # a - b cancels: input rounding
def test_operands_match_float64_reference(m, extra, d, sim, dtype, seed):
    # cosine at d = 1 (unit "vectors" +-1, an exactly zero input gradient that rounding divided by
    # a tiny norm turns into noise) is checked on its own below
    assume(not (sim == "cosine" and d == 1))
    g = torch.Generator().manual_seed(seed)
    n = m + extra
    a = torch.randn(m, d, generator=g, dtype=torch.float64) * 3
    b = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.5
    weights = [torch.randn(m, d, generator=g, dtype=torch.float64),
               torch.randn(n, d, generator=g, dtype=torch.float64),
               torch.randn(m, generator=g, dtype=torch.float64)]
    a, b = a.to(dtype).double(), b.to(dtype).double()  # the reference sees the inputs the op sees
    got, got_g = _grads(lambda x, y: _ops.operands(x, y, sim), a.to(dtype), b.to(dtype), weights)
    want, want_g = _grads(lambda x, y: _reference(x, y, sim), a, b, weights)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    # da and db add the weights of ka/kb and the positive's term, which may cancel (d = 1: a single
    # pair of numbers of size ~5): each is judged against at least 1e-2 of the norm of its terms'
    # magnitudes, |w_k| + |w_pos| |d pos / d k| (cosine, whose normalisation has more terms, keeps 1e-2)
    m = a.shape[0]
    dpos = {"dot": (b[:m].abs(), a.abs()), "euclidean": (2 * (a - b[:m]).abs(),) * 2,
            "l1": (torch.ones_like(a),) * 2}.get(sim)
    floors = [1e-2] * 5
    if dpos is not None:
        wpos = weights[2].abs()[:, None]
        floors[3] = max(1e-2, 1e-2 * (weights[0].abs() + wpos * dpos[0]).norm().item())
        db_pos = torch.cat([wpos * dpos[1], torch.zeros_like(b[m:])])
        floors[4] = max(1e-2, 1e-2 * (weights[1].abs() + db_pos).norm().item())
    for name, x, y, floor in zip(("ka", "kb", "pos", "da", "db"), (*got, *got_g), (*want, *want_g), floors):
        assert x.dtype == dtype, name
        assert rel_err(x, y, floor=floor) < tol, (name, rel_err(x, y, floor=floor))


def test_cosine_zero_row_matches_f_normalize():
    """A zero row: F.normalize's clamped denominator, value 0 and gradient g / eps."""
    a = torch.randn(4, 6, dtype=torch.float64)
    a[2] = 0
    b = torch.randn(5, 6, dtype=torch.float64)
    weights = [torch.randn(4, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64),
               torch.randn(4, dtype=torch.float64)]
    got, got_g = _grads(lambda x, y: _ops.operands(x, y, "cosine"), a, b, weights)
    want, want_g = _grads(lambda x, y: _reference(x, y, "cosine"), a, b, weights)
    for x, y in zip((*got, *got_g), (*want, *want_g)):
        assert rel_err(x, y) < 1e-12


def test_cosine_in_one_dimension_has_no_input_gradient():
    a, b = torch.randn(50, 1, requires_grad=True), torch.randn(50, 1, requires_grad=True)
    ka, kb, pos = _ops.operands(a, b, "cosine")
    assert torch.equal(ka.abs(), torch.ones_like(ka))
    da, db = torch.autograd.grad((ka * torch.randn(50, 1)).sum() + pos.sum() + kb.sum(), [a, b])
    assert (da.abs() * a.abs()).max() < 1e-6 and (db.abs() * b.abs()).max() < 1e-6


@pytest.mark.parametrize("sim", SIMS)
def test_opcheck(sim):
    a = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, 7, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.mmcl_fast.operands_fwd.default, (a, b, sim))


@pytest.mark.parametrize("sim", SIMS)
def test_frozen_side_gets_no_gradient_pass(sim):
    """Only ``a`` trains: the operands backward is asked for da alone, and kb needs no gradient."""
    a = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 5, dtype=torch.float64)
    with OpRecorder() as rec:
        ka, kb, pos = _ops.operands(a, b, sim)
        assert not kb.requires_grad
        (ka.sum() + pos.sum()).backward()
    masks = [list(args[8]) for func, args in rec.calls if func is torch.ops.mmcl_fast.operands_bwd.default]
    assert masks == [[True, False]]


def test_losses_use_the_op_on_cpu():
    a, b = torch.randn(9, 4), torch.randn(9, 4)
    with OpRecorder() as rec:
        mf.symmetric_infonce(a, b, temperature=0.5)
        mf.nt_xent(a, b, temperature=0.5)
        mf.infonce(a, torch.randn(12, 4), temperature=0.5)
    used = [func for func, _ in rec.calls if func is torch.ops.mmcl_fast.operands_fwd.default]
    assert len(used) == 3


def test_half_precision_inputs_are_upcast():
    a, b = torch.randn(5, 3).bfloat16(), torch.randn(5, 3).bfloat16()
    ksim, ka, kb, pos = paired_operands("cosine", a, b)
    assert ksim == "dot" and ka.dtype == torch.float32 and pos.dtype == torch.float32


@pytest.mark.parametrize("bad, match", [("a", "operands_fwd: a contains NaN or Inf"),
                                        ("b", "operands_fwd: b contains NaN or Inf")])
def test_non_finite_input_names_the_argument(bad, match):
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    (a if bad == "a" else b)[1, 2] = float("nan")
    with pytest.raises(RuntimeError, match=match):
        _ops.operands(a, b, "dot")


def test_bad_arguments_raise():
    with pytest.raises(RuntimeError, match="may not have more rows"):
        _ops.operands(torch.randn(5, 3), torch.randn(4, 3), "dot")
    with pytest.raises(RuntimeError, match="unknown similarity 'cos'"):
        _ops.operands(torch.randn(3, 3), torch.randn(3, 3), "cos")
    with pytest.raises(RuntimeError, match="feature dimension"):
        _ops.operands(torch.randn(3, 3), torch.randn(3, 4), "dot")
    with pytest.raises(RuntimeError, match="float32 or float64"):
        _ops.operands(torch.randn(3, 3).half(), torch.randn(3, 3).half(), "dot")
