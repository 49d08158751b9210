"""PyTorch's custom-op conventions: opcheck, needs_input_grad, fake kernels and output dtypes."""
import pytest
import torch

import mmcl_fast as mf
from mmcl_fast import chunked
from mmcl_fast import reference as ref

from conftest import OpRecorder, rel_err

mf.backend_info()  # the ops are registered at the first call
LSE_FWD, LSE_BWD = torch.ops.mmcl_fast.lse_fwd.default, torch.ops.mmcl_fast.lse_bwd.default
LABEL_BWD = torch.ops.mmcl_fast.label_lse_bwd.default


def _operands(m, n, d, dtype, grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, d, generator=g, dtype=dtype).requires_grad_(grad)
    y = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_(grad)
    s = torch.tensor(0.8, dtype=dtype).requires_grad_(grad)
    return x, y, s


@pytest.mark.parametrize("similarity", ["dot", "euclidean", "l1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_forward(similarity, dtype):
    for m, n, d, mask, col in ((7, 7, 3, True, True), (5, 9, 20, False, True), (6, 4, 2, False, False)):
        x, y, s = _operands(m, n, d, dtype, grad=True)
        torch.library.opcheck(LSE_FWD, (x, y, s, similarity, mask, col))
    # the kernel options as explicit arguments (the CPU kernel always checks and is deterministic)
    x, y, s = _operands(7, 7, 3, dtype, grad=True)
    torch.library.opcheck(LSE_FWD, (x, y, s, similarity, True, True, True, True, "simt"))


@pytest.mark.parametrize("similarity", ["dot", "euclidean", "l1"])
@pytest.mark.parametrize("output_mask", [[True, True, True], [True, False, False], [False, True, True]])
def test_opcheck_backward(similarity, output_mask):
    x, y, s = _operands(6, 9, 17, torch.float64)
    row, col = LSE_FWD(x, y, s, similarity, False, True)
    gr, gc = torch.rand(6, dtype=torch.float64), torch.rand(9, dtype=torch.float64)
    torch.library.opcheck(LSE_BWD, (gr, gc, x, y, s, row, col, similarity, False, output_mask))
    torch.library.opcheck(LSE_BWD, (gr, gc, x, y, s, row, col, similarity, False, output_mask, True, "tc"))


def _bwd_masks(rec: OpRecorder) -> list[list[bool]]:
    """The output_mask of every lse_bwd and label_lse_bwd call the recorder saw (the CPU losses
    take their diagonal positives from label_lse_fwd's tiles)."""
    return [list(args[9]) for func, args in rec.calls if func in (LSE_BWD, LABEL_BWD)]


@pytest.mark.parametrize("similarity", ["cosine", "euclidean", "l1"])
@pytest.mark.parametrize("d", [5, 40])
def test_frozen_tower_skips_its_gradient(similarity, d):
    """LiT: only the image side trains. The backward asks the kernel for dX alone, and the
    gradient equals the one from a run where both sides require grad."""
    g = torch.Generator().manual_seed(d)
    img = torch.randn(33, d, generator=g, requires_grad=True)
    txt = torch.randn(33, d, generator=g)
    with OpRecorder() as rec:
        mf.symmetric_infonce(img, txt, temperature=0.2, similarity=similarity).backward()
    masks = _bwd_masks(rec)
    assert masks and all(mask == [True, False, False] for mask in masks), masks
    assert txt.grad is None
    want_img = img.detach().double().requires_grad_()
    ref.symmetric_infonce(want_img, txt.double(), temperature=0.2, similarity=similarity).backward()
    assert rel_err(img.grad, want_img.grad) < 1e-5


def test_frozen_features_with_a_learnable_scale():
    a, b = torch.randn(20, 8), torch.randn(20, 8)
    log_scale = torch.tensor(1.5, requires_grad=True)
    with OpRecorder() as rec:
        mf.symmetric_infonce(a, b, logit_scale=log_scale.exp()).backward()
    masks = _bwd_masks(rec)
    assert all(mask == [False, False, True] for mask in masks), masks
    want = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    ref.symmetric_infonce(a.double(), b.double(), logit_scale=want.exp()).backward()
    assert rel_err(log_scale.grad, want.grad) < 1e-5


def test_kernel_returns_empty_outputs_that_were_not_requested():
    x, y, s = _operands(10, 12, 20, torch.float32)
    row, col = LSE_FWD(x, y, s, "dot", False, True)
    full = LSE_BWD(torch.ones(10), torch.ones(12), x, y, s, row, col, "dot", False, [True, True, True])
    only_dx = LSE_BWD(torch.ones(10), torch.ones(12), x, y, s, row, col, "dot", False, [True, False, False])
    assert only_dx[1].numel() == 0 and only_dx[2].numel() == 0
    assert torch.equal(only_dx[0], full[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fallback_output_dtypes_agree_with_the_fake_kernels(dtype):
    """The chunked fallback returns what the fake kernel declares: float32 LSEs for half inputs,
    input-dtype gradients."""
    x, y, s = _operands(8, 8, 4, torch.float32)
    x, y = x.to(dtype), y.to(dtype)
    row, col = chunked.lse_fwd(x, y, s, "dot", False, True)
    fake_mode = torch._subclasses.fake_tensor.FakeTensorMode()
    with fake_mode:
        frow, fcol = LSE_FWD(fake_mode.from_tensor(x), fake_mode.from_tensor(y), fake_mode.from_tensor(s),
                             "dot", False, True)
    assert (row.dtype, col.dtype) == (frow.dtype, fcol.dtype) == (torch.float32, torch.float32)
    dx, dy, ds = chunked.lse_bwd(torch.ones(8), torch.ones(8), x, y, s, row, col, "dot", False)
    assert (dx.dtype, dy.dtype, ds.dtype) == (dtype, dtype, torch.float32)


def test_fake_kernel_rejects_mismatched_shapes():
    fake_mode = torch._subclasses.fake_tensor.FakeTensorMode()
    with fake_mode, pytest.raises(Exception, match="feature dimension"):
        LSE_FWD(torch.empty(4, 3), torch.empty(5, 2), torch.empty(()), "dot", False, True)
