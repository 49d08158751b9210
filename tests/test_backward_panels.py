"""The CPU backward over panels of columns (csrc/cpu/tile_engine/engine_kernels.h, run_backward):
with two threads, the second worker's dY partial covers at most 2 MiB of columns, so at D = 1024
a 600-column batch is taken in 2 panels (float32), 3 (float64) or 3 (the streamed l1 path, whose
every worker has a partial). The gradients must equal the float64 reference and repeat bitwise."""
import pytest
import torch
import torch.nn.functional as F

import mmcl_fast as mf
from mmcl_fast import reference as ref

from conftest import rel_err

N, D = 600, 1024
TOL = {torch.float32: 2e-5, torch.float64: 1e-10}


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _inputs(sim, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(N, D, generator=g, dtype=torch.float64)
    b = a + 0.7 * torch.randn(N, D, generator=g, dtype=torch.float64)
    if sim == "dot":
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    else:                                    # distances of order 1 between rows
        a, b = a / D ** (0.5 if sim == "euclidean" else 1.0), b / D ** (0.5 if sim == "euclidean" else 1.0)
    return a.to(dtype), b.to(dtype)


LOSSES = {
    "symmetric_infonce": (lambda a, b, sim: mf.symmetric_infonce(a, b, temperature=0.1, similarity=sim),
                          lambda a, b, sim: ref.symmetric_infonce(a, b, temperature=0.1, similarity=sim)),
    "label_aware": (lambda a, b, sim: mf.symmetric_infonce(a, b, temperature=0.1, similarity=sim,
                                                           ids=torch.arange(N) % 250),
                    lambda a, b, sim: ref.multi_positive_symmetric_infonce(a, b, torch.arange(N) % 250,
                                                                           temperature=0.1, similarity=sim)),
    "siglip": (lambda a, b, sim: mf.siglip_loss(a, b, 10.0, -5.0, similarity=sim),
               lambda a, b, sim: ref.siglip_loss(a, b, 10.0, -5.0, similarity=sim)),
}


def _l1_by_cdist(naive_similarity):
    """The reference's similarity, with l1 by torch.cdist: the naive broadcast holds N x N x D."""
    def similarity(a, b, sim):
        return -torch.cdist(a, b, p=1) if sim == "l1" else naive_similarity(a, b, sim)
    return similarity


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("sim", ["dot", "euclidean", "l1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_panelled_backward_matches_float64_and_repeats(two_threads, monkeypatch, loss, sim, dtype):
    monkeypatch.setattr(ref, "similarity_matrix", _l1_by_cdist(ref.similarity_matrix))
    fused, naive = LOSSES[loss]
    a, b = _inputs(sim, dtype, seed=hash((loss, sim)) % 1000)
    grads = []
    for _ in range(2):
        x, y = a.clone().requires_grad_(), b.clone().requires_grad_()
        fused(x, y, sim).backward()
        grads.append((x.grad, y.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1]), "not repeatable"
    X, Y = a.double().requires_grad_(), b.double().requires_grad_()
    naive(X, Y, sim).backward()
    assert rel_err(grads[0][0], X.grad) < TOL[dtype], "d a"
    assert rel_err(grads[0][1], Y.grad) < TOL[dtype], "d b"
