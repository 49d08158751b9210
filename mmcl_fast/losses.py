"""Public contrastive losses, thin compositions of the fused pairwise log-sum-exp operator.

Notation: a in R^{M x D}, b in R^{N x D}; the logits are L_ij = s * sim(a_i, b_j) where
s = 1 / temperature or s = logit_scale (already exponentiated, as open_clip passes it), and

* ``"cosine"``:    sim(a, b) = <a / ||a||, b / ||b||>
* ``"dot"``:       sim(a, b) = <a, b>
* ``"euclidean"``: sim(a, b) = -||a - b||_2^2   (squared, as in the identifiability literature)
* ``"l1"``:        sim(a, b) = -||a - b||_1

Only the log-sum-exp terms touch all M x N pairs, and they are computed by the fused operator
without storing L; the positive-pair terms are O(M * D) PyTorch.

Where the positives sit where the operator can mask them (the diagonal), a cross-entropy term is
evaluated as

    -log softmax(L_i)_{p} = softplus(LSE_{j != p} L_ij - L_ip),

the log-sum-exp over the negatives only. It equals LSE_j L_ij - L_ip, but it never subtracts two
nearly equal numbers: a well-separated positive gives a tiny loss with full relative precision,
never a negative one, and the positive's gradient is -sigmoid(.) instead of p - 1.
"""
from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _ops
from .checks import value_checks

SIMILARITIES = ("cosine", "dot", "euclidean", "l1")
REDUCTIONS = ("mean", "sum", "none")


def _check_features(name: str, t, dim_from: Tensor | None = None) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"`{name}` must be 2-D (batch, dim), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got {t.dtype}")
    if t.shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch (shape {tuple(t.shape)})")
    if t.shape[1] == 0:
        raise ValueError(f"`{name}` has zero features (shape {tuple(t.shape)})")


def _check_pair(names: tuple[str, str], a, b) -> None:
    _check_features(names[0], a)
    _check_features(names[1], b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"`{names[0]}` and `{names[1]}` must have the same feature dimension, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise TypeError(f"`{names[0]}` and `{names[1]}` must have the same dtype, got {a.dtype} "
                        f"and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"`{names[0]}` and `{names[1]}` must be on the same device, got "
                         f"{a.device} and {b.device}")


def _check_options(similarity: str, reduction: str) -> None:
    if similarity not in SIMILARITIES:
        raise ValueError(f"`similarity` must be one of {SIMILARITIES}, got {similarity!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}")


def _scale(temperature, logit_scale, like: Tensor) -> Tensor:
    """The one-element scale tensor s fed to the operator (differentiable when logit_scale is)."""
    if (temperature is None) == (logit_scale is None):
        raise ValueError("give exactly one of `temperature` and `logit_scale`")
    dtype = _ops.lse_dtype(like.dtype)
    if temperature is not None:
        if isinstance(temperature, Tensor):
            if temperature.numel() != 1:
                raise ValueError(f"`temperature` must be a scalar, got shape {tuple(temperature.shape)}")
            return 1.0 / temperature.reshape(()).to(device=like.device, dtype=dtype)
        if not isinstance(temperature, Real) or not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"`temperature` must be a positive finite number, got {temperature!r}")
        return torch.full((), 1.0 / float(temperature), dtype=dtype, device=like.device)
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise ValueError("`logit_scale` must be a 0-dim or 1-element tensor, got shape "
                             f"{tuple(logit_scale.shape)}")
        if not logit_scale.is_floating_point():
            raise TypeError(f"`logit_scale` must be floating point, got {logit_scale.dtype}")
        return logit_scale.reshape(()).to(device=like.device, dtype=dtype)
    if not isinstance(logit_scale, Real) or not math.isfinite(logit_scale) or logit_scale <= 0:
        raise ValueError(f"`logit_scale` must be a positive finite number, got {logit_scale!r}")
    return torch.full((), float(logit_scale), dtype=dtype, device=like.device)


def _kernel_inputs(similarity: str, *xs: Tensor) -> tuple[str, list[Tensor]]:
    """Normalise for cosine; upcast half precision where no half-precision kernel exists."""
    out = []
    for x in xs:
        if x.dtype in (torch.float16, torch.bfloat16) and not _ops.native_half_precision(x.device):
            x = x.float()
        if similarity == "cosine":
            x = F.normalize(x, dim=1)
        out.append(x)
    return ("dot" if similarity == "cosine" else similarity), out


def _positive_similarity(a: Tensor, b: Tensor, kernel_similarity: str) -> Tensor:
    """sim(a_i, b_i) row by row, O(M * D), in the (float32 or float64) precision of the LSEs."""
    dtype = _ops.lse_dtype(a.dtype)
    a, b = a.to(dtype), b.to(dtype)
    if kernel_similarity == "dot":
        return (a * b).sum(1)
    if kernel_similarity == "euclidean":
        return -(a - b).square().sum(1)
    return -(a - b).abs().sum(1)


def _softplus(z: Tensor) -> Tensor:
    """log(1 + exp(z)) without approximation (F.softplus returns z itself above 20, an error of
    up to 2e-9 that float64 callers would see); its gradient is sigmoid(z), 0 at z = -inf."""
    return torch.logaddexp(z, torch.zeros_like(z))


def _finite(lse: Tensor) -> Tensor:
    """An LSE over an empty set of negatives (-inf) as the most negative finite value, so that
    sums like logaddexp stay finite and differentiable; softplus of it is 0 either way."""
    return lse.clamp_min(torch.finfo(lse.dtype).min)


def _reduce(per_item: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_item.mean()
    if reduction == "sum":
        return per_item.sum()
    return per_item


def symmetric_infonce(a: Tensor, b: Tensor, temperature: float | Tensor | None = None, *,
                      logit_scale: Tensor | float | None = None, similarity: str = "cosine",
                      reduction: str = "mean") -> Tensor:
    r"""Symmetric InfoNCE (the CLIP loss) between paired batches ``a`` and ``b`` (both B x D).

    With L_ij = s * sim(a_i, b_j) (see the module docstring for s and sim):

        loss_i = 1/2 [ -L_ii + log sum_j exp(L_ij) ] + 1/2 [ -L_ii + log sum_j exp(L_ji) ]

    i.e. ``1/2 CE(L, arange(B)) + 1/2 CE(L^T, arange(B))`` for ``reduction="mean"`` (the default);
    ``"sum"`` sums loss_i and ``"none"`` returns the vector loss_i. Exactly one of ``temperature``
    (s = 1 / temperature) and ``logit_scale`` (s = logit_scale, e.g. ``model.logit_scale.exp()``,
    which receives a gradient when it requires one) must be given. Memory is O(B * D): the B x B
    logits are never stored. Half-precision inputs on CPU are computed in float32 and the loss is
    returned in float32.
    """
    _check_pair(("a", "b"), a, b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"`a` and `b` must hold the same number of pairs, got {a.shape[0]} and "
                         f"{b.shape[0]} (use infonce for rectangular problems)")
    _check_options(similarity, reduction)
    s = _scale(temperature, logit_scale, a)
    ksim, (ka, kb) = _kernel_inputs(similarity, a, b)
    # Negatives only: the positives L_ii sit on the masked diagonal.
    row_neg, col_neg = _ops.pairwise_lse(ka, kb, s, ksim, True, True)
    pos = s * _positive_similarity(ka, kb, ksim)
    return _reduce(0.5 * (_softplus(row_neg - pos) + _softplus(col_neg - pos)), reduction)


def infonce(query: Tensor, keys: Tensor, labels: Tensor | None = None,
            temperature: float | Tensor | None = None, *, logit_scale: Tensor | float | None = None,
            similarity: str = "cosine", reduction: str = "mean") -> Tensor:
    r"""One-directional InfoNCE: each query row against all keys (M x N logits, N may exceed M).

        loss_i = -L_{i, y_i} + log sum_{j<N} exp(L_ij),   L_ij = s * sim(query_i, keys_j)

    i.e. ``CE(L, labels)``. ``labels`` (int64, shape [M], values in [0, N)) defaults to
    ``arange(M)``, which needs N >= M; keys beyond the labelled ones act as extra negatives
    (e.g. a memory queue). Reductions and the scale as in :func:`symmetric_infonce`.
    """
    _check_pair(("query", "keys"), query, keys)
    _check_options(similarity, reduction)
    m, n = query.shape[0], keys.shape[0]
    if labels is None:
        if n < m:
            raise ValueError(f"`keys` has {n} rows but `query` has {m}: without `labels` the "
                             "positives are keys[:M], so N >= M is required")
    else:
        if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != m:
            raise ValueError(f"`labels` must be a 1-D tensor with one entry per query ({m})")
        if labels.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"`labels` must be an integer tensor, got {labels.dtype}")
        if labels.device != query.device:
            raise ValueError(f"`labels` is on {labels.device} but `query` on {query.device}")
        if (value_checks(labels.device) and not torch.compiler.is_compiling()
                and bool(((labels < 0) | (labels >= n)).any())):
            raise ValueError(f"`labels` must lie in [0, {n})")
    s = _scale(temperature, logit_scale, query)
    ksim, (kq, kk) = _kernel_inputs(similarity, query, keys)
    if labels is None:  # positives on the diagonal: mask them and use the softplus form
        row_neg, _ = _ops.pairwise_lse(kq, kk, s, ksim, True, False)
        pos = s * _positive_similarity(kq, kk[:m], ksim)
        return _reduce(_softplus(row_neg - pos), reduction)
    row_lse, _ = _ops.pairwise_lse(kq, kk, s, ksim, False, False)
    pos = s * _positive_similarity(kq, kk[labels.long()], ksim)
    return _reduce(row_lse - pos, reduction)


def nt_xent(a: Tensor, b: Tensor, temperature: float | Tensor | None = None, *,
            logit_scale: Tensor | float | None = None, similarity: str = "cosine",
            reduction: str = "mean") -> Tensor:
    r"""NT-Xent (SimCLR): the 2N x 2N objective over z = cat(a, b) with intra-view negatives.

        loss_k = -L_{k, p(k)} + log sum_{j != k} exp(L_kj),   L_kj = s * sim(z_k, z_j),

    where p(k) = k + N for k < N and k - N otherwise; self-similarity is excluded from every
    denominator. ``reduction="mean"`` averages over the 2N anchors, ``"none"`` returns the 2N
    vector loss_k. Scale as in :func:`symmetric_infonce`.
    """
    _check_pair(("a", "b"), a, b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"`a` and `b` must hold the same number of pairs, got {a.shape[0]} and "
                         f"{b.shape[0]}")
    _check_options(similarity, reduction)
    s = _scale(temperature, logit_scale, a)
    ksim, (ka, kb) = _kernel_inputs(similarity, a, b)
    # The 2N x 2N logits in three N x N blocks, each with its diagonal masked: for anchor a_k the
    # negatives are a_j (j != k) and b_j (j != k); for b_k, b_j and a_j (j != k). The a-b block
    # gives both directions in one pass (its columns are the b anchors' rows of the b-a block).
    # 3 N^2 logits instead of 4 N^2, and the positives stay out of every LSE.
    ab_rows, ab_cols = _ops.pairwise_lse(ka, kb, s, ksim, True, True)
    aa_rows, _ = _ops.pairwise_lse(ka, ka, s, ksim, True, False)
    bb_rows, _ = _ops.pairwise_lse(kb, kb, s, ksim, True, False)
    neg_a = torch.logaddexp(_finite(aa_rows), _finite(ab_rows))
    neg_b = torch.logaddexp(_finite(bb_rows), _finite(ab_cols))
    pos = s * _positive_similarity(ka, kb, ksim)
    return _reduce(_softplus(torch.cat([neg_a, neg_b]) - torch.cat([pos, pos])), reduction)


def lpsimclr(anchor: Tensor, positive: Tensor, negatives: Tensor, temperature: float | Tensor = 1.0, *,
             alpha: float = 0.5, include_positive: bool = True, log_mean: bool = True,
             reduction: str = "mean") -> Tensor:
    r"""The Lp-SimCLR estimator (p = 2, squared norm) of the identifiability simulations, one direction.

    Negatives come from their own batch (e.g. a second, independent batch through the anchor's
    encoder), not from the other positives. With tau = ``temperature``,

        pos_i   = ||anchor_i - positive_i||^2,      neg_ij = ||anchor_i - negatives_j||^2
        denom_i = log mean( {exp(-neg_ij / tau)}_j  ∪  {exp(-pos_i / tau)} )
        loss_i  = 2 [ alpha pos_i / tau + (1 - alpha) denom_i ]

    The mean runs over the K negatives and the positive (K + 1 terms); ``include_positive=False``
    leaves the positive out (K terms), ``log_mean=False`` takes the log-sum instead (the loss moves
    by log(K + 1), the gradients do not). With the default alpha = 0.5, loss_i = pos_i / tau +
    denom_i. The K negatives' LSE comes from the fused operator (never an M x K matrix); the
    positive joins it through a log-add-exp. Half-precision inputs are computed in float32.
    """
    _check_pair(("anchor", "positive"), anchor, positive)
    _check_pair(("anchor", "negatives"), anchor, negatives)
    if anchor.shape[0] != positive.shape[0]:
        raise ValueError(f"`anchor` and `positive` must hold the same number of pairs, got "
                         f"{anchor.shape[0]} and {positive.shape[0]}")
    _check_options("euclidean", reduction)
    if not isinstance(alpha, Real) or not math.isfinite(alpha):
        raise ValueError(f"`alpha` must be a finite number, got {alpha!r}")
    if temperature is None:
        raise ValueError("`temperature` must be given (the paper uses 1.0)")
    s = _scale(temperature, None, anchor)
    _, (ka, kp, kn) = _kernel_inputs("euclidean", anchor, positive, negatives)
    row, _ = _ops.pairwise_lse(ka, kn, s, "euclidean", False, False)  # log sum_j exp(-neg_ij / tau)
    pos = -_positive_similarity(ka, kp, "euclidean")
    denom = torch.logaddexp(row, -s * pos) if include_positive else row
    if log_mean:
        denom = denom - math.log(negatives.shape[0] + (1 if include_positive else 0))
    return _reduce(2.0 * (alpha * s * pos + (1.0 - alpha) * denom), reduction)


def symmetric_lpsimclr(z1: Tensor, z2: Tensor, z1_negatives: Tensor, z2_negatives: Tensor,
                       temperature: float | Tensor = 1.0, **options) -> Tensor:
    r"""Both directions of :func:`lpsimclr`, averaged, as the simulations train it:

        1/2 [ lpsimclr(z1, z2, z1_negatives) + lpsimclr(z2, z1, z2_negatives) ]

    where ``z1_negatives`` / ``z2_negatives`` encode an independent batch with the same encoder
    as ``z1`` / ``z2``. ``options`` are :func:`lpsimclr`'s keyword arguments.
    """
    return 0.5 * (lpsimclr(z1, z2, z1_negatives, temperature, **options)
                  + lpsimclr(z2, z1, z2_negatives, temperature, **options))
