"""ClipLoss (single process) against the open_clip re-implementation; SymmetricInfoNCE / NTXent."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import mmcl_fast as mf
from mmcl_fast import reference as ref

from conftest import device_params, rel_err


def _features(seed, n, d, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    txt = F.normalize(img + torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    return img.to(dtype=dtype, device=device), txt.to(dtype=dtype, device=device)


@device_params
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 200), d=st.integers(1, 96),
       log_scale=st.floats(0.0, math.log(100.0)), scale_shape=st.sampled_from([(), (1,)]),
       bias=st.one_of(st.none(), st.floats(-12.0, 12.0)), output_dict=st.booleans())
def test_clip_loss_matches_open_clip(device, seed, n, d, log_scale, scale_shape, bias,
                                     output_dict):
    img, txt = _features(seed, n, d, device=device)
    # open_clip's usual parameterisation: logit_scale = param.exp(), bias a learnable parameter
    p32 = torch.full(scale_shape, log_scale, device=device, requires_grad=True)
    p64 = torch.full(scale_shape, log_scale, dtype=torch.float64, requires_grad=True)
    b32 = None if bias is None else torch.tensor(bias, device=device, requires_grad=True)
    b64 = None if bias is None else torch.tensor(bias, dtype=torch.float64, requires_grad=True)
    a32, t32 = img.clone().requires_grad_(), txt.clone().requires_grad_()
    a64, t64 = img.double().cpu().requires_grad_(), txt.double().cpu().requires_grad_()
    out = mf.ClipLoss()(a32, t32, p32.exp(), b32, output_dict=output_dict)
    want = ref.OpenClipLoss()(a64, t64, p64.exp(), b64, output_dict=output_dict)
    if output_dict:
        assert set(out) == {"contrastive_loss"}
        out, want = out["contrastive_loss"], want["contrastive_loss"]
    assert out.shape == want.shape == ()
    leaves32 = [a32, t32, p32] + ([b32] if bias is not None else [])
    leaves64 = [a64, t64, p64] + ([b64] if bias is not None else [])
    g32 = torch.autograd.grad(out, leaves32)
    g64 = torch.autograd.grad(want, leaves64)
    # The loss is a difference of O(scale) terms that cancel for n = 1 or a saturated softmax:
    # judge the loss and its gradients against the magnitude of those terms.
    scale = math.exp(log_scale)
    assert rel_err(out, want, floor=scale) < 1e-5
    # Feature gradients are O(scale / n) per entry; d/d(log scale) = sum_ij dL/dlogit_ij * logit_ij
    # is a sum over all n^2 logits whose cancelling terms are as large as the loss: floor `scale`
    # (with the floor scale / n it failed at n = 197, d = 1 with a 2e-7 absolute float32 error).
    for g, w, floor in zip(g32[:3], g64[:3], (scale / n, scale / n, scale)):
        assert g.shape == w.shape
        assert rel_err(g, w, floor=floor) < 1e-5
    if bias is not None:                       # the bias cancels: exactly zero, open_clip ~1e-17
        assert g32[3].abs().item() == 0.0 and g64[3].abs().item() < 1e-9


def test_clip_loss_checks_its_world():
    with pytest.raises(NotImplementedError, match="horovod"):
        mf.ClipLoss(use_horovod=True)
    with pytest.raises(ValueError, match="rank"):
        mf.ClipLoss(rank=2, world_size=2)
    img, txt = _features(0, 8, 4)
    with pytest.raises(RuntimeError, match="torch.distributed reports rank 0 of 1"):
        mf.ClipLoss(rank=1, world_size=2)(img, txt, torch.tensor(10.0))
    with pytest.raises(ValueError, match="same number of pairs"):
        mf.ClipLoss()(img, txt[:5], torch.tensor(10.0))
    with pytest.raises(ValueError, match="2-D"):
        mf.ClipLoss()(img[0], txt[0], torch.tensor(10.0))
    with pytest.raises(ValueError, match="logit_scale"):
        mf.ClipLoss()(img, txt, torch.tensor([10.0, 2.0]))
    with pytest.raises(ValueError, match="positive"):
        mf.ClipLoss()(img, txt, -1.0)


@pytest.mark.slow
def test_compiled_training_step_with_clip_loss():
    """A whole training step under torch.compile: no graph break inside the loss."""
    torch.manual_seed(0)
    enc_i, enc_t = torch.nn.Linear(12, 8), torch.nn.Linear(10, 8)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    loss_fn = mf.ClipLoss()
    x, y = torch.randn(64, 12), torch.randn(64, 10)

    def step(x, y):
        img = F.normalize(enc_i(x), dim=1)
        txt = F.normalize(enc_t(y), dim=1)
        return loss_fn(img, txt, log_scale.exp(), output_dict=True)["contrastive_loss"]

    params = [*enc_i.parameters(), *enc_t.parameters(), log_scale]
    eager = step(x, y)
    g_eager = torch.autograd.grad(eager, params)
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)      # raises on any graph break
    out = compiled(x, y)
    g_comp = torch.autograd.grad(out, params)
    assert rel_err(out, eager) < 1e-5
    for g, w in zip(g_comp, g_eager):
        assert rel_err(g, w) < 1e-4


@pytest.mark.parametrize("module, fn", [(mf.SymmetricInfoNCE, ref.symmetric_infonce),
                                        (mf.NTXent, ref.nt_xent)])
@pytest.mark.parametrize("similarity", ["cosine", "euclidean"])
def test_modules_own_their_scale(module, fn, similarity):
    a, b = _features(3, 40, 6)
    loss = module(temperature=0.2, learnable=True, similarity=similarity)
    assert isinstance(loss.log_scale, torch.nn.Parameter) and abs(loss.temperature - 0.2) < 1e-6
    out = loss(a, b)
    (g,) = torch.autograd.grad(out, [loss.log_scale])
    log_s = torch.tensor(math.log(5.0), dtype=torch.float64, requires_grad=True)
    want = fn(a.double(), b.double(), logit_scale=log_s.exp(), similarity=similarity)
    (gw,) = torch.autograd.grad(want, [log_s])
    assert rel_err(out, want) < 1e-5 and rel_err(g, gw) < 1e-4
    fixed = module(temperature=0.2, similarity=similarity)
    assert "log_scale" in dict(fixed.named_buffers()) and not list(fixed.parameters())
    assert rel_err(fixed(a, b), want) < 1e-5


def test_learnable_scale_is_clamped():
    m = mf.SymmetricInfoNCE(temperature=0.07, learnable=True, max_scale=50.0)
    assert abs(m.temperature - 0.07) < 1e-6            # 1/0.07 = 14.3 is in range ...
    m = mf.SymmetricInfoNCE(temperature=0.07, learnable=True, max_scale=10.0)
    a, b = _features(1, 16, 4)
    out = m(a, b)
    assert abs(m.temperature - 0.1) < 1e-6             # ... 1/0.07 > 10 is clamped,
    (g,) = torch.autograd.grad(out, [m.log_scale])
    assert g.item() == 0.0                              # and the clamped log-scale gets no gradient


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0.0), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(similarity="cos"), "similarity"), (dict(reduction="avg"), "reduction"),
    (dict(max_scale=0.5, max_temperature=1.0), "max_scale"),
])
def test_module_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mf.SymmetricInfoNCE(**kwargs)
    with pytest.raises(ValueError, match=match):
        mf.NTXent(**kwargs)
