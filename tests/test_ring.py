"""The ring mode of the distributed InfoNCE losses (mmcl_fast.ring_lse) on 2 to 4 gloo ranks:
ring = gather = the single-process full batch in float64, for every similarity, with and without
ids, the scale's gradient, ClipLoss(mode="ring"), a DDP step, bad arguments, and a rank failing
mid-ring."""
import pytest
import torch
from dist_workers import (
    RING_SIMILARITIES,
    full_batch,
    full_batch_ids,
    launch,
    ring_emulated_cuda_worker,
    ring_failure_worker,
    ring_worker,
)
from test_distributed import N_LOCAL, SEED, _assert_close, _expected_labelled_clip, expected_clip

import mmcl_fast as mf
from mmcl_fast import reference

from conftest import rel_err

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
DIM = 16


def _full_batch_expectation(loss, X, Y, s, ids, factor, sl):
    """(value, factor * d a_r, factor * d b_r, d s) of the float64 full-batch loss."""
    X, Y, s = X.clone().requires_grad_(), Y.clone().requires_grad_(), s.clone().requires_grad_()
    value = loss(X, Y, s, ids)
    gx, gy, gs = torch.autograd.grad(value, (X, Y, s))
    return value, factor * gx[sl], factor * gy[sl], gs


def _symmetric(sim):
    def loss(X, Y, s, ids):
        if ids is None:
            return reference.symmetric_infonce(X, Y, logit_scale=s, similarity=sim)
        return reference.multi_positive_symmetric_infonce(X, Y, ids, logit_scale=s, similarity=sim)
    return loss


def _infonce(sim):
    def loss(X, Y, s, ids):
        if ids is None:
            return reference.infonce(X, Y, logit_scale=s, similarity=sim)
        return reference.multi_positive_infonce(X, Y, ids, ids, logit_scale=s, similarity=sim)
    return loss


LOSSES = {"symmetric": _symmetric, "infonce": _infonce}


@pytest.mark.parametrize("world", [2, pytest.param(3, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow)])
def test_ring_equals_gather_equals_the_full_batch(world, tmp_path):
    results = launch(ring_worker, world, tmp_path, SEED, N_LOCAL, DIM)
    img, txt, scale = full_batch(SEED, world * N_LOCAL, DIM, dtype=torch.float64)
    ids = full_batch_ids(SEED, world * N_LOCAL)
    for rank, out in enumerate(results):
        sl = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        for mode in ("gather", "ring"):
            for name, loss in LOSSES.items():
                for sim in RING_SIMILARITIES:
                    want = _full_batch_expectation(loss(sim), 3 * img, 3 * txt, scale, None, world, sl)
                    _assert_close(out[(name, sim, mode)], want, f"{name} {sim} {mode} rank {rank}")
                for sim in ("cosine", "l1"):
                    want = _full_batch_expectation(loss(sim), 3 * img, 3 * txt, scale, ids, world, sl)
                    _assert_close(out[(name, sim, mode, "ids")], want, f"{name} ids {sim} {mode} rank {rank}")
            want = _full_batch_expectation(_symmetric("dot"), img, txt, scale, None, 1, sl)
            _assert_close(out[("symmetric", "dot", mode, "no ddp")], want, f"no ddp {mode} rank {rank}")
        # the two exchanges agree with each other as closely as with the reference
        for key in [k for k in out if isinstance(k, tuple) and "ring" in k]:
            gathered = out[tuple("gather" if x == "ring" else x for x in key)]
            _assert_close(out[key], gathered, f"ring vs gather {key} rank {rank}")
        for clip_mode in ((False, False), (False, True), (True, True)):
            want = list(expected_clip(img, txt, scale, rank, world, N_LOCAL, clip_mode))
            want_ids = list(_expected_labelled_clip(img, txt, ids, scale, rank, world, N_LOCAL, clip_mode))
            if clip_mode[0]:  # local loss on the ring: the scale gets dL/ds of the global loss
                want[3] = _full_batch_expectation(_symmetric("dot"), img, txt, scale, None, 1, sl)[3]
                want_ids[3] = _full_batch_expectation(_symmetric("dot"), img, txt, scale, ids, 1, sl)[3]
            _assert_close(out[("ClipLoss", clip_mode, False)], want, f"ClipLoss ring {clip_mode} rank {rank}")
            _assert_close(out[("ClipLoss", clip_mode, True)], want_ids, f"ClipLoss ring ids {clip_mode} rank {rank}")
        # bfloat16 features: the ring's statistics and accumulators in float32
        value, ga, gb = out[("symmetric", "bf16")]
        X, Y = img.bfloat16().double().requires_grad_(), txt.bfloat16().double().requires_grad_()
        want = reference.symmetric_infonce(X, Y, logit_scale=scale, similarity="dot")
        gx, gy = torch.autograd.grad(want, (X, Y))
        assert ga.dtype == torch.bfloat16 and gb.dtype == torch.bfloat16
        assert rel_err(value, want) < 1e-5
        assert rel_err(ga, world * gx[sl]) < 1e-2 and rel_err(gb, world * gy[sl]) < 1e-2
        assert "local batch sizes differ" in out["uneven"], out["uneven"]


@pytest.mark.slow
def test_the_ring_on_the_emulated_cuda_kernels(tmp_path):
    """2 ranks, every block on the host-emulated CUDA kernels (plain and label-aware, dot and l1):
    the full-batch float64 losses and gradients."""
    import emulated_cuda
    emulated_cuda.load()  # built once here, not by both ranks at once
    results = launch(ring_emulated_cuda_worker, 2, tmp_path, SEED, 8, DIM, timeout=600)
    img, txt, scale = full_batch(SEED, 2 * 8, DIM, dtype=torch.float64)
    ids = full_batch_ids(SEED, 2 * 8)
    for rank, out in enumerate(results):
        sl = slice(rank * 8, (rank + 1) * 8)
        for (name, sim, with_ids), got in out.items():
            want = _full_batch_expectation(LOSSES[name](sim), 3 * img, 3 * txt, scale, ids if with_ids else None, 2,
                                           sl)
            _assert_close(got[:3], want[:3], f"emulated CUDA {name} {sim} ids={with_ids} rank {rank}")
            # d scale = sum_ij G_ij sim_ij / ... cancels ~11x here (l1 with ids: terms 14.5, sum 1.3), and
            # the CUDA kernels add each block's terms in float32
            assert rel_err(got[3], want[3]) < 1e-4, (name, sim, with_ids, rank)


@pytest.mark.slow
def test_a_rank_failing_mid_ring_makes_every_rank_raise(tmp_path):
    """Rank 1 raises at its second block; ranks 0 and 2 must get an error from their transfers
    (the failed rank's connection closes, or the process group's 30 s timeout), not wait forever."""
    results = launch(ring_failure_worker, 3, tmp_path, 8, 4, timeout=120, pg_timeout=30)
    assert results[1]["error"] == "RuntimeError: rank 1 fails mid-ring", results
    for rank in (0, 2):
        assert results[rank]["error"] != "no error", results
        assert results[rank]["seconds"] < 90, results


def test_bad_mode_and_ring_configurations_are_refused():
    a = torch.randn(4, 3)
    with pytest.raises(ValueError, match="`mode` must be one of"):
        mf.distributed.symmetric_infonce(a, a, temperature=0.1, mode="all_to_all")
    with pytest.raises(ValueError, match="`mode` must be one of"):
        mf.distributed.infonce(a, a, temperature=0.1, mode="ringg")
    with pytest.raises(ValueError, match="`mode` must be one of"):
        mf.ClipLoss(mode="tree")
    with pytest.raises(ValueError, match="gather_with_grad=True"):
        mf.ClipLoss(local_loss=True, gather_with_grad=False, rank=0, world_size=2, mode="ring")


def test_without_a_process_group_the_ring_is_the_single_process_loss():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(12, 5, generator=g), torch.randn(12, 5, generator=g)
    for fn, single in ((mf.distributed.symmetric_infonce, mf.symmetric_infonce),
                       (mf.distributed.infonce, mf.infonce)):
        got = fn(a, b, temperature=0.3, mode="ring")
        assert torch.equal(got, single(a, b, temperature=0.3))
