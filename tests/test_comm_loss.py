"""mmcl_fast.comm_loss (CoMM's objective on the fused NT-Xent) against a float64 transcription of
the paper's definition (mmcl_fast.reference.comm_loss)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mmcl_fast as mf
from mmcl_fast import reference as ref

from conftest import rel_err


def _views(seed, n, dims, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    make = lambda: [torch.randn(n, d, generator=g, dtype=dtype) for d in dims]  # noqa: E731
    return make(), make()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 40), modalities=st.integers(1, 3),
       d=st.integers(2, 24), full_first=st.booleans(), temperature=st.floats(0.05, 2.0),
       use_weights=st.booleans())
def test_comm_loss_matches_the_float64_definition(seed, n, modalities, d, full_first, temperature, use_weights):
    dims = [d] * (modalities + 1)
    v1, v2 = _views(seed, n, dims)
    full_index = 0 if full_first else -1
    weights = torch.rand(modalities + 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) \
        if use_weights else None
    a1 = [v.float().requires_grad_() for v in v1]
    a2 = [v.float().requires_grad_() for v in v2]
    r1 = [v.clone().requires_grad_() for v in v1]
    r2 = [v.clone().requires_grad_() for v in v2]
    got = mf.comm_loss(a1, a2, temperature, full_index=full_index, weights=weights)
    want = ref.comm_loss(r1, r2, temperature, full_index=full_index, weights=weights)
    assert rel_err(got, want, floor=1.0) < 1e-5
    g_got = torch.autograd.grad(got, a1 + a2)
    g_want = torch.autograd.grad(want, r1 + r2)
    for x, y in zip(g_got, g_want):
        assert rel_err(x, y, floor=1e-3) < 1e-4


def test_comm_loss_terms_and_the_fig5_ablation_weights():
    v1, v2 = _views(3, 32, [8, 8, 8])
    loss, terms = mf.comm_loss(v1, v2, return_terms=True)
    assert terms.shape == (3,) and torch.allclose(loss, terms.mean())
    # L'' only (the multimodal term) and the unimodal terms only
    only_full = mf.comm_loss(v1, v2, weights=[0, 0, 1])
    only_uni = mf.comm_loss(v1, v2, weights=[1, 1, 0])
    assert torch.allclose(only_full, terms[2] / 3) and torch.allclose(only_uni, terms[:2].sum() / 3)
    # the multimodal term is SimCLR's NT-Xent of the two multimodal views
    assert torch.allclose(terms[2], mf.nt_xent(v1[2], v2[2], temperature=0.1))
    # a unimodal term aligns the modality with the *other* view's multimodal embedding
    want0 = (mf.nt_xent(v1[0], v2[2], temperature=0.1) + mf.nt_xent(v2[0], v1[2], temperature=0.1)) / 2
    assert torch.allclose(terms[0], want0)


def test_comm_loss_refuses_bad_input():
    v1, v2 = _views(0, 8, [4, 4])
    with pytest.raises(TypeError, match="`views1` must be a list"):
        mf.comm_loss(v1[0], v2)
    with pytest.raises(ValueError, match="the same embeddings"):
        mf.comm_loss(v1, v2[:1])
    with pytest.raises(ValueError, match="at least one unimodal"):
        mf.comm_loss(v1[:1], v2[:1])
    with pytest.raises(ValueError, match="`full_index`"):
        mf.comm_loss(v1, v2, full_index=2)
    with pytest.raises(ValueError, match="one N and one D"):
        mf.comm_loss(v1, [v2[0], v2[1][:5]])
    with pytest.raises(ValueError, match="one N and one D"):
        mf.comm_loss(v1, [v2[0], v2[1][:, :3]])
    with pytest.raises(ValueError, match="one weight per embedding"):
        mf.comm_loss(v1, v2, weights=[1.0])
    with pytest.raises(ValueError, match="non-negative"):
        mf.comm_loss(v1, v2, weights=[1.0, -1.0])
