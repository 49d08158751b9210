"""Label-aware positives: ids that say which pairs are positive, and the per-anchor terms built from
the fused label-aware operator (:func:`mmcl_fast.pairwise_label_lse`).

With logits L_ij = s * sim(a_i, b_j) and int64 ids, the pair (i, j) is a positive when
``row_ids[i] == col_ids[j]`` (the pair (i, i) left out when a batch is compared with itself) and a
negative otherwise. Two per-anchor losses:

* multi-positive InfoNCE (the "sum inside the log"):
  ``-log sum_{j in P(i)} softmax(L_i)_j = softplus(LSE_{N(i)} L_ij - LSE_{P(i)} L_ij)``; with
  all-distinct ids it is the ordinary InfoNCE, a caption duplicated in the batch stops being a
  false negative;
* SupCon (Khosla et al. 2020), over a batch compared with itself:
  ``L_out: LSE_{j != i} L_ij - mean_{p in P(i)} L_ip`` and
  ``L_in:  softplus(LSE_{N(i)} - LSE_{P(i)}) + log |P(i)|``.

An anchor without a positive has no loss: its term is 0 and it is left out of a mean (as
pytorch-metric-learning's reducers do); :func:`positive_counts` tells which anchors those are.
"""
from __future__ import annotations

import torch
from torch import Tensor


def check_ids(name: str, ids, n: int, device: torch.device) -> Tensor:
    """``ids`` as an int64 [n] tensor on ``device``; a ValueError/TypeError naming ``name`` otherwise."""
    if not isinstance(ids, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of integer ids, got {type(ids).__name__}")
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"`{name}` must be an integer tensor, got {ids.dtype}")
    if ids.dim() != 1 or ids.shape[0] != n:
        raise ValueError(f"`{name}` must have shape [{n}] (one id per row), got {tuple(ids.shape)}")
    if ids.device != device:
        raise ValueError(f"`{name}` is on {ids.device} but the features on {device}")
    return ids.long()


def positive_counts(row_ids: Tensor, col_ids: Tensor, exclude_self: bool = False) -> Tensor:
    """|P(i)| for every row: how many ``col_ids`` equal ``row_ids[i]`` (minus one for the pair
    (i, i) when ``exclude_self``, the rows and columns being one batch). O((M + N) log N), int64."""
    uniq, counts = torch.unique(col_ids, return_counts=True)
    where = torch.searchsorted(uniq, row_ids).clamp_max(uniq.numel() - 1)
    found = uniq[where] == row_ids
    n = torch.where(found, counts[where], torch.zeros_like(row_ids))
    if exclude_self:
        n = n - 1
    return n


def finite(lse: Tensor) -> Tensor:
    """An LSE over an empty set (-inf) as the most negative finite value, so that sums like
    logaddexp stay finite and differentiable; softplus of it is 0 either way."""
    return lse.clamp_min(torch.finfo(lse.dtype).min)


def multi_positive_terms(neg: Tensor, pos: Tensor, softplus) -> Tensor:
    """softplus(neg - pos) per anchor (``neg``, ``pos``: the LSEs over its negatives and its
    positives), 0 where the anchor has no positive (pos = -inf) and no gradient there."""
    has_pos = pos > -torch.inf
    return torch.where(has_pos, softplus(neg - finite(pos)), torch.zeros_like(neg))


def mean_over_anchors(terms: Tensor, has_positive: Tensor) -> Tensor:
    """The mean of ``terms`` over the anchors with a positive (0 when there is none)."""
    n = has_positive.sum()
    return terms.sum() / n.clamp_min(1).to(terms.dtype)


def reduce_anchors(terms: Tensor, has_positive: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return mean_over_anchors(terms, has_positive)
    if reduction == "sum":
        return terms.sum()
    return terms
