"""Naive PyTorch implementations: they materialise the full logits matrix.

The ground truth of the tests (run in float64) and the "naive" baseline of the benchmarks.
Semantics are documented in :mod:`mmcl_fast.losses`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def similarity_matrix(a: Tensor, b: Tensor, similarity: str) -> Tensor:
    """The full M x N matrix sim(a_i, b_j)."""
    if similarity == "cosine":
        return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    if similarity == "dot":
        return a @ b.T
    if similarity == "euclidean":
        return 2 * a @ b.T - a.square().sum(1)[:, None] - b.square().sum(1)[None, :]
    if similarity == "l1":
        return -(a[:, None, :] - b[None, :, :]).abs().sum(-1)
    raise ValueError(similarity)


def _scale(temperature, logit_scale):
    return 1.0 / temperature if logit_scale is None else logit_scale


def _reduce(x: Tensor, reduction: str) -> Tensor:
    return {"mean": x.mean, "sum": x.sum, "none": lambda: x}[reduction]()


def symmetric_infonce(a, b, temperature=None, *, logit_scale=None, similarity="cosine",
                      reduction="mean"):
    logits = _scale(temperature, logit_scale) * similarity_matrix(a, b, similarity)
    labels = torch.arange(a.shape[0], device=a.device)
    per = 0.5 * (F.cross_entropy(logits, labels, reduction="none")
                 + F.cross_entropy(logits.T, labels, reduction="none"))
    return _reduce(per, reduction)


def infonce(query, keys, labels=None, temperature=None, *, logit_scale=None, similarity="cosine",
            reduction="mean"):
    logits = _scale(temperature, logit_scale) * similarity_matrix(query, keys, similarity)
    if labels is None:
        labels = torch.arange(query.shape[0], device=query.device)
    return _reduce(F.cross_entropy(logits, labels, reduction="none"), reduction)


def nt_xent(a, b, temperature=None, *, logit_scale=None, similarity="cosine", reduction="mean"):
    n = a.shape[0]
    z = torch.cat([a, b])
    logits = _scale(temperature, logit_scale) * similarity_matrix(z, z, similarity)
    eye = torch.eye(2 * n, dtype=torch.bool, device=a.device)
    logits = logits.masked_fill(eye, float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(a.device)
    return _reduce(F.cross_entropy(logits, labels, reduction="none"), reduction)
