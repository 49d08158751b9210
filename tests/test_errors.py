"""Bad input raises a clear exception naming the argument; never a crash or a silent NaN."""
import pytest
import torch

import mmcl_fast as mf

A = torch.randn(8, 4)
B = torch.randn(8, 4)


@pytest.mark.parametrize("fn", [mf.symmetric_infonce, mf.nt_xent, mf.infonce])
@pytest.mark.parametrize("args, kwargs, exc, match", [
    ((A[0], B), {"temperature": 0.1}, ValueError, "`(a|query)` must be 2-D"),
    ((A, B[None]), {"temperature": 0.1}, ValueError, "`(b|keys)` must be 2-D"),
    ((A, torch.randn(8, 5)), {"temperature": 0.1}, ValueError, "same feature dimension"),
    ((A, B.double()), {"temperature": 0.1}, TypeError, "same dtype"),
    ((A.long(), B.long()), {"temperature": 0.1}, TypeError, "floating-point"),
    ((A, torch.randn(8, 4, device="meta")), {"temperature": 0.1}, ValueError, "same device"),
    ((A[:0], B[:0]), {"temperature": 0.1}, ValueError, "empty batch"),
    ((A, B), {"temperature": 0.0}, ValueError, "`temperature` must be a positive"),
    ((A, B), {"temperature": -1.0}, ValueError, "`temperature` must be a positive"),
    ((A, B), {"temperature": float("nan")}, ValueError, "`temperature` must be a positive"),
    ((A, B), {}, ValueError, "exactly one of `temperature` and `logit_scale`"),
    ((A, B), {"temperature": 0.1, "logit_scale": torch.tensor(10.0)}, ValueError, "exactly one"),
    ((A, B), {"logit_scale": torch.ones(2)}, ValueError, "`logit_scale` must be a 0-dim"),
    ((A, B), {"temperature": 0.1, "similarity": "cos"}, ValueError, "`similarity` must be one of"),
    ((A, B), {"temperature": 0.1, "reduction": "avg"}, ValueError, "`reduction` must be one of"),
])
def test_bad_arguments(fn, args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


@pytest.mark.parametrize("fn", [mf.symmetric_infonce, mf.nt_xent, mf.infonce])
def test_non_positive_logit_scale_tensor_is_rejected_by_the_kernel(fn):
    for bad in (0.0, -2.0, float("inf")):
        with pytest.raises(RuntimeError, match="logit_scale.* must be positive"):
            fn(A, B, logit_scale=torch.tensor(bad))


@pytest.mark.parametrize("fn", [mf.symmetric_infonce, mf.nt_xent, mf.infonce])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features(fn, bad):
    a = A.clone()
    a[3, 1] = bad
    with pytest.raises(RuntimeError, match="NaN or Inf"):
        fn(a, B, temperature=0.1, similarity="dot")


def test_paired_losses_need_equal_batches():
    with pytest.raises(ValueError, match="same number of pairs"):
        mf.symmetric_infonce(A, torch.randn(9, 4), temperature=0.1)
    with pytest.raises(ValueError, match="same number of pairs"):
        mf.nt_xent(A, torch.randn(9, 4), temperature=0.1)


def test_infonce_labels():
    with pytest.raises(ValueError, match="N >= M is required"):
        mf.infonce(torch.randn(9, 4), B, temperature=0.1)
    with pytest.raises(ValueError, match="must lie in"):
        mf.infonce(A, B, labels=torch.full((8,), 8), temperature=0.1)
    with pytest.raises(ValueError, match="one entry per query"):
        mf.infonce(A, B, labels=torch.zeros(7, dtype=torch.long), temperature=0.1)
    with pytest.raises(TypeError, match="integer"):
        mf.infonce(A, B, labels=torch.zeros(8), temperature=0.1)
    # M > N is fine when labels say where the positives are.
    loss = mf.infonce(torch.randn(12, 4), torch.randn(3, 4), labels=torch.arange(12) % 3, temperature=0.5)
    assert torch.isfinite(loss)


def test_operator_checks_its_arguments():
    mf.backend_info()  # the ops are registered at the first call, not at import
    s = torch.tensor(1.0)
    with pytest.raises(RuntimeError, match="x must be 2-D"):
        torch.ops.mmcl_fast.lse_fwd(A[0], B, s, "dot", False, True)
    with pytest.raises(RuntimeError, match="unknown similarity"):
        torch.ops.mmcl_fast.lse_fwd(A, B, s, "cosine", False, True)
    with pytest.raises(RuntimeError, match="feature dimension"):
        torch.ops.mmcl_fast.lse_fwd(A, torch.randn(3, 5), s, "dot", False, True)
    with pytest.raises(RuntimeError, match="exactly one element"):
        torch.ops.mmcl_fast.lse_fwd(A, B, torch.ones(2), "dot", False, True)
    with pytest.raises(RuntimeError, match="float32 and float64"):
        torch.ops.mmcl_fast.lse_fwd(A.half(), B.half(), s, "dot", False, True)
    row, col = torch.ops.mmcl_fast.lse_fwd(A, B, s, "dot", False, True)
    with pytest.raises(RuntimeError, match="grad_col must be empty or have N"):
        torch.ops.mmcl_fast.lse_bwd(torch.ones(8), torch.ones(3), A, B, s, row, col, "dot", False,
                                    [True, True, True])
