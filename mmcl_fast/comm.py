r"""CoMM's multimodal contrastive objective (Dufumier et al., "What to align in multimodal
contrastive learning?", ICLR 2025) on the fused NT-Xent.

Two augmentations of a multimodal batch give, for each view, one embedding per modality
(z'_1 .. z'_M, the fused model's output with the other modalities' tokens dropped) and the
multimodal embedding z'_F. With NT-Xent the SimCLR loss of :func:`mmcl_fast.nt_xent` (2N-way
softmax, intra-view negatives; cosine similarity and temperature 0.1 by default):

    L_F = NT-Xent(z'_F, z''_F)
    L_i = 1/2 [NT-Xent(z'_i, z''_F) + NT-Xent(z''_i, z'_F)]      i = 1 .. M
    L   = mean over the M + 1 terms of w_k L_k                    (w = 1 by default)

The weights make the paper's Fig. 5 ablation one argument: ``weights`` zero on the unimodal terms
keeps L_F only ("L''"), zero on L_F keeps the sum of the L_i. Every NT-Xent runs on the fused
operator, so no 2N x 2N logits matrix is materialised.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .losses import nt_xent
from .options import KernelOptions


def _check_views(views1: Sequence[Tensor], views2: Sequence[Tensor], full_index: int) -> int:
    for name, views in (("views1", views1), ("views2", views2)):
        if isinstance(views, Tensor) or not isinstance(views, Sequence):
            raise TypeError(f"`{name}` must be a list of tensors (one per modality and the multimodal one), "
                            f"got {type(views).__name__}")
        if not all(isinstance(v, Tensor) for v in views):
            raise TypeError(f"`{name}` must hold tensors only")
    if len(views1) != len(views2):
        raise ValueError(f"`views1` and `views2` must hold the same embeddings, got {len(views1)} and {len(views2)}")
    n = len(views1)
    if n < 2:
        raise ValueError(f"CoMM needs at least one unimodal and the multimodal embedding per view, got {n}")
    if not -n <= full_index < n:
        raise ValueError(f"`full_index` must index the {n} embeddings, got {full_index}")
    shapes = {tuple(v.shape) for v in (*views1, *views2)}
    if any(v.dim() != 2 for v in (*views1, *views2)) or len(shapes) != 1:
        listed = [tuple(v.shape) for v in (*views1, *views2)]
        raise ValueError("every embedding in `views1` and `views2` must be (N, D) with one N and one D (each is "
                         f"contrasted with the multimodal one), got {listed}")
    return full_index % n


def comm_loss(views1: Sequence[Tensor], views2: Sequence[Tensor], temperature: float | Tensor | None = 0.1, *,
              full_index: int = -1, weights: Sequence[float] | Tensor | None = None,
              logit_scale: Tensor | float | None = None, similarity: str = "cosine",
              return_terms: bool = False,
              kernel_options: KernelOptions | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """The CoMM loss of two views (see the module docstring).

    ``views1`` / ``views2``: the embeddings of the first / second augmentation, the unimodal
    ones and the multimodal one (at ``full_index``, default last), each (N, D). ``weights``:
    one per term, in the order of the embeddings (the multimodal term at ``full_index``).
    ``return_terms`` also returns the M + 1 unweighted terms. Scale and similarity as in
    :func:`mmcl_fast.nt_xent` (give ``logit_scale`` with ``temperature=None``), and so is
    ``kernel_options``.
    """
    full = _check_views(views1, views2, full_index)
    n = len(views1)
    scale = {"temperature": temperature, "logit_scale": logit_scale, "similarity": similarity,
             "kernel_options": kernel_options}
    terms = []
    for k in range(n):
        if k == full:  # NT-Xent is symmetric in its two views: 1/2 [L(z', z'') + L(z'', z')] = L(z', z'')
            terms.append(nt_xent(views1[k], views2[k], **scale))
        else:
            terms.append(0.5 * (nt_xent(views1[k], views2[full], **scale)
                                + nt_xent(views2[k], views1[full], **scale)))
    terms_t = torch.stack(terms)
    if weights is None:
        loss = terms_t.mean()
    else:
        w = torch.as_tensor(weights, dtype=terms_t.dtype, device=terms_t.device)
        if w.shape != (n,):
            raise ValueError(f"`weights` must hold one weight per embedding ({n}), got shape {tuple(w.shape)}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError(f"`weights` must be finite and non-negative, got {w.tolist()}")
        loss = (terms_t * w).mean()
    return (loss, terms_t.detach()) if return_terms else loss
