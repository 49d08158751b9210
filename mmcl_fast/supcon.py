"""Supervised contrastive loss (SupCon, Khosla et al., NeurIPS 2020) on the fused label-aware
operator: O(N * D) memory, never the N x N logits or mask.

Over the anchors z_1..z_n (every view of every sample) with labels y and L_ij = s * sim(z_i, z_j),
P(i) = {p != i : y_p = y_i}:

* ``variant="out"`` (the paper's recommended L_out, and pytorch-metric-learning's SupConLoss):
  ``loss_i = LSE_{j != i} L_ij - (1 / |P(i)|) sum_{p in P(i)} L_ip``;
* ``variant="in"``: ``loss_i = -log( (1 / |P(i)|) sum_{p in P(i)} exp(L_ip) / sum_{j != i} exp(L_ij) )
  = softplus(LSE_{N(i)} - LSE_{P(i)}) + log |P(i)|``.

The LSEs over the positives and the negatives and the sum of the positive logits come from one
pass of :func:`mmcl_fast.pairwise_label_lse` over (z, z) with the diagonal left out.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import _ops
from .labels import check_ids, finite, multi_positive_terms, positive_counts, reduce_anchors
from .losses import _softplus
from .operands import kernel_inputs
from .options import KernelOptions, checked
from .validation import check_features, check_options, loss_scale

VARIANTS = ("out", "in")


def _anchors(features: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """(z [n, D], ids [n], the shape of a "none" result) from [N, V, D] or [N, D] features."""
    if not isinstance(features, Tensor):
        raise TypeError(f"`features` must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() == 3:
        n, v, d = features.shape
        if v == 0:
            raise ValueError(f"`features` has no views (shape {tuple(features.shape)})")
        z = features.transpose(0, 1).reshape(v * n, d)  # view-major, as torch.cat(features.unbind(1))
        check_features("features", z)
        ids = (torch.arange(n, device=features.device) if labels is None
               else check_ids("labels", labels, n, features.device))
        return z, ids.repeat(v), (v, n)
    if features.dim() == 2:
        check_features("features", features)
        if labels is None:
            raise ValueError("`labels` is required for 2-D features [N, D] (with [N, V, D] features and no "
                             "labels, the other views of a sample are its positives)")
        return features, check_ids("labels", labels, features.shape[0], features.device), (features.shape[0],)
    raise ValueError(f"`features` must be [N, V, D] (V views) or [N, D], got shape {tuple(features.shape)}")


def supcon_loss(features: Tensor, labels: Tensor | None = None, temperature: float | Tensor = 0.1, *,
                variant: str = "out", similarity: str = "cosine", reduction: str = "mean",
                kernel_options: KernelOptions | None = None) -> Tensor:
    r"""The supervised contrastive loss (see the module docstring for the formulas).

    ``features``: [N, V, D] (V views of N samples, as SupCon's reference code takes them) or
    [N, D]; ``labels``: int [N] (with [N, V, D] and no labels, the positives are the other views of
    the same sample: SimCLR's loss in SupCon's form). ``similarity`` defaults to cosine (the
    features are L2-normalised, as the reference code expects and pytorch-metric-learning does).

    An anchor without a positive (a label seen once, with one view) has no loss: 0 in
    ``reduction="none"``/``"sum"`` and left out of the ``"mean"`` (as pytorch-metric-learning's
    reducer does; ``mmcl_fast.labels.positive_counts`` finds them). ``"none"`` returns [V, N] for
    [N, V, D] features (view v of sample n at [v, n]) and [N] for [N, D].
    """
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}, got {variant!r}")
    check_options(similarity, reduction)
    z, ids, shape = _anchors(features, labels)
    s = loss_scale(temperature, None, _ops.lse_dtype(z.dtype), z.device)
    ksim, (kz,) = kernel_inputs(similarity, z)
    neg, _, pos, _, pos_sum, _ = _ops.pairwise_label_lse(kz, kz, s, ids, ids, ksim, True, False,
                                                         kernel_options=kernel_options)
    count = positive_counts(ids, ids, exclude_self=True)
    has_pos = count > 0
    if variant == "out":
        # LSE_{j != i} - mean_P L = [LSE_{j != i} - LSE_P] + [LSE_P - mean_P L]: the first is
        # softplus(neg - pos) (no cancellation), the second >= log |P| by Jensen's inequality and
        # exactly 0 for one positive, so a small loss keeps its relative precision
        spread = finite(pos) - pos_sum / count.clamp_min(1).to(pos_sum.dtype)
        terms = torch.where(has_pos, multi_positive_terms(neg, pos, _softplus) + spread, torch.zeros_like(neg))
    else:
        terms = multi_positive_terms(neg, pos, _softplus) + torch.log(count.clamp_min(1).to(neg.dtype))
    out = reduce_anchors(terms, has_pos, reduction)
    return out.reshape(shape) if reduction == "none" else out


class SupConLoss(nn.Module):
    """:func:`supcon_loss` as a module: ``SupConLoss(temperature=0.1, variant="out")(features, labels)``."""

    def __init__(self, temperature: float = 0.1, *, variant: str = "out", similarity: str = "cosine",
                 reduction: str = "mean", kernel_options: KernelOptions | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {VARIANTS}, got {variant!r}")
        check_options(similarity, reduction)
        loss_scale(temperature, None, torch.float32, torch.device("cpu"))  # validates the temperature
        self.temperature, self.variant, self.similarity, self.reduction = temperature, variant, similarity, reduction
        self.kernel_options = checked(kernel_options)

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        return supcon_loss(features, labels, self.temperature, variant=self.variant, similarity=self.similarity,
                           reduction=self.reduction, kernel_options=self.kernel_options)
