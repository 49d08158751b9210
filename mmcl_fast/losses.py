"""Public contrastive losses, thin compositions of the fused pairwise log-sum-exp operator.

Notation: a in R^{M x D}, b in R^{N x D}; the logits are L_ij = s * sim(a_i, b_j) where
s = 1 / temperature or s = logit_scale (already exponentiated, as open_clip passes it), and

* ``"cosine"``:    sim(a, b) = <a / ||a||, b / ||b||>
* ``"dot"``:       sim(a, b) = <a, b>
* ``"euclidean"``: sim(a, b) = -||a - b||_2^2   (squared, as in the identifiability literature)
* ``"l1"``:        sim(a, b) = -||a - b||_1

Only the log-sum-exp terms touch all M x N pairs, and they are computed by the fused operator
without storing L; the positive-pair terms and the cosine normalisation are O((M + N) D)
(``operands.paired_operands``: one compiled op on CPU, PyTorch elsewhere).

Where the positives sit where the operator can mask them (the diagonal), a cross-entropy term is
evaluated as

    -log softmax(L_i)_{p} = softplus(LSE_{j != p} L_ij - L_ip),

the log-sum-exp over the negatives only. It equals LSE_j L_ij - L_ip, but it never subtracts two
nearly equal numbers: a well-separated positive gives a tiny loss with full relative precision,
never a negative one, and the positive's gradient is -sigmoid(.) instead of p - 1.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _ops
from .labels import check_ids, multi_positive_terms, reduce_anchors
from .labels import finite as _finite
from .operands import kernel_inputs, paired_operands, positive_similarity, tile_operands
from .options import KernelOptions
from .validation import check_finite_number, check_labels, check_options, check_pair, loss_scale


class _Softplus(torch.autograd.Function):
    """log(1 + exp(z)) without approximation (F.softplus returns z itself above 20, an error of
    up to 2e-9 that float64 callers would see); its gradient is sigmoid(z), 0 at z = -inf.

    The backward is grad * sigmoid(z) rather than logaddexp's, whose exp opens an OpenMP region
    for as few as ~6k elements: ATen's threads then spin for milliseconds, on the cores the fused
    operator's backward, which runs next, needs (8 of 36 ms at B = 6144, D = 5 on 2 cores)."""

    @staticmethod
    def forward(z: Tensor) -> Tensor:
        return torch.logaddexp(z, torch.zeros_like(z))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (z,) = ctx.saved_tensors
        return grad * torch.sigmoid(z)


def _softplus(z: Tensor) -> Tensor:
    return _Softplus.apply(z)


def _reduce(per_item: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_item.mean()
    if reduction == "sum":
        return per_item.sum()
    return per_item


def symmetric_infonce(a: Tensor, b: Tensor, temperature: float | Tensor | None = None, *,
                      logit_scale: Tensor | float | None = None, similarity: str = "cosine",
                      reduction: str = "mean", ids: Tensor | None = None,
                      kernel_options: KernelOptions | None = None) -> Tensor:
    r"""Symmetric InfoNCE (the CLIP loss) between paired batches ``a`` and ``b`` (both B x D).

    With L_ij = s * sim(a_i, b_j) (see the module docstring for s and sim):

        loss_i = 1/2 [ -L_ii + log sum_j exp(L_ij) ] + 1/2 [ -L_ii + log sum_j exp(L_ji) ]

    i.e. ``1/2 CE(L, arange(B)) + 1/2 CE(L^T, arange(B))`` for ``reduction="mean"`` (the default);
    ``"sum"`` sums loss_i and ``"none"`` returns the vector loss_i. Exactly one of ``temperature``
    (s = 1 / temperature) and ``logit_scale`` (s = logit_scale, e.g. ``model.logit_scale.exp()``,
    which receives a gradient when it requires one) must be given. Memory is O(B * D): the B x B
    logits are never stored. Half-precision inputs on CPU are computed in float32 and the loss is
    returned in float32. ``kernel_options`` (:class:`mmcl_fast.KernelOptions`: data-dependent
    checks on CUDA, deterministic CUDA kernels, the CUDA math path) defaults to the process
    defaults; every loss of this module takes it.

    ``ids`` (int64 [B], optional) makes the positives label-aware: a_i and b_j are a positive pair
    whenever ``ids[i] == ids[j]`` (e.g. the same caption twice in a batch), and each direction's
    term is the multi-positive form ``-log sum_{j: ids_j = ids_i} softmax(L_i)_j`` (mmcl_fast.labels),
    computed by the label-aware operator without a B x B mask. All-distinct ids give the loss above.
    """
    check_pair(("a", "b"), a, b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"`a` and `b` must hold the same number of pairs, got {a.shape[0]} and "
                         f"{b.shape[0]} (use infonce for rectangular problems)")
    check_options(similarity, reduction)
    s = loss_scale(temperature, logit_scale, _ops.lse_dtype(a.dtype), a.device)
    if ids is not None:
        ids = check_ids("ids", ids, a.shape[0], a.device)
        ksim, ka, kb = tile_operands(similarity, a, b)
        rn, cn, rp, cp, _, _ = _ops.pairwise_label_lse(ka, kb, s, ids, ids, ksim, False, True,
                                                       kernel_options=kernel_options)
        terms = 0.5 * (multi_positive_terms(rn, rp, _softplus) + multi_positive_terms(cn, cp, _softplus))
        return _reduce(terms, reduction)  # every anchor is its own pair's positive
    if _ops.positives_in_tile(a.device):  # L_ii from the tiles: no operand copies except cosine's
        ksim, ka, kb = tile_operands(similarity, a, b)
        rn, cn, rp, cp, _, _ = _ops.pairwise_label_lse(ka, kb, s, None, None, ksim, False, True,
                                                       kernel_options=kernel_options)
        return _reduce(0.5 * (_softplus(rn - rp) + _softplus(cn - cp)), reduction)
    ksim, ka, kb, pos_sim = paired_operands(similarity, a, b)
    # Negatives only: the positives L_ii sit on the masked diagonal.
    row_neg, col_neg = _ops.pairwise_lse(ka, kb, s, ksim, True, True, kernel_options=kernel_options)
    pos = s * pos_sim
    return _reduce(0.5 * (_softplus(row_neg - pos) + _softplus(col_neg - pos)), reduction)


def infonce(query: Tensor, keys: Tensor, labels: Tensor | None = None,
            temperature: float | Tensor | None = None, *, logit_scale: Tensor | float | None = None,
            similarity: str = "cosine", reduction: str = "mean",
            ids: Tensor | tuple[Tensor, Tensor] | None = None,
            kernel_options: KernelOptions | None = None) -> Tensor:
    r"""One-directional InfoNCE: each query row against all keys (M x N logits, N may exceed M).

        loss_i = -L_{i, y_i} + log sum_{j<N} exp(L_ij),   L_ij = s * sim(query_i, keys_j)

    i.e. ``CE(L, labels)``. ``labels`` (int64, shape [M], values in [0, N)) defaults to
    ``arange(M)``, which needs N >= M; keys beyond the labelled ones act as extra negatives
    (e.g. a memory queue). Reductions and the scale as in :func:`symmetric_infonce`.

    ``ids`` (instead of ``labels``) makes the positives label-aware: ``(query_ids, key_ids)``, int64
    of shapes [M] and [N] (e.g. a labelled memory queue as extra keys), or one [M] tensor when
    N == M and both sides share the ids. query_i and keys_j are positives when their ids are equal;
    loss_i = ``-log sum_{j positive} softmax(L_i)_j``. A query without a positive key has no loss:
    0 in ``"none"``/``"sum"``, left out of the ``"mean"``.
    """
    check_pair(("query", "keys"), query, keys)
    check_options(similarity, reduction)
    m, n = query.shape[0], keys.shape[0]
    if ids is not None:
        if labels is not None:
            raise ValueError("give `labels` or `ids`, not both")
        if isinstance(ids, (tuple, list)):
            if len(ids) != 2:
                raise ValueError(f"`ids` must be one tensor or a pair (query_ids, key_ids), got {len(ids)} items")
            qids, kids = check_ids("ids[0]", ids[0], m, query.device), check_ids("ids[1]", ids[1], n, query.device)
        else:
            if n != m:
                raise ValueError(f"one `ids` tensor needs as many keys as queries (got {m} and {n}); "
                                 "pass (query_ids, key_ids)")
            qids = kids = check_ids("ids", ids, m, query.device)
        s = loss_scale(temperature, logit_scale, _ops.lse_dtype(query.dtype), query.device)
        ksim, kq, kk = tile_operands(similarity, query, keys)
        rn, _, rp, _, _, _ = _ops.pairwise_label_lse(kq, kk, s, qids, kids, ksim, False, False,
                                                     kernel_options=kernel_options)
        return reduce_anchors(multi_positive_terms(rn, rp, _softplus), rp > -torch.inf, reduction)
    if labels is None:
        if n < m:
            raise ValueError(f"`keys` has {n} rows but `query` has {m}: without `labels` the "
                             "positives are keys[:M], so N >= M is required")
    else:
        check_labels(labels, m, n, query.device, kernel_options)
    s = loss_scale(temperature, logit_scale, _ops.lse_dtype(query.dtype), query.device)
    if labels is None and _ops.positives_in_tile(query.device):  # L_ii from the tiles
        ksim, kq, kk = tile_operands(similarity, query, keys)
        rn, _, rp, _, _, _ = _ops.pairwise_label_lse(kq, kk, s, None, None, ksim, False, False,
                                                     kernel_options=kernel_options)
        return _reduce(_softplus(rn - rp), reduction)
    if labels is None:  # positives on the diagonal: mask them and use the softplus form
        ksim, kq, kk, pos_sim = paired_operands(similarity, query, keys)
        row_neg, _ = _ops.pairwise_lse(kq, kk, s, ksim, True, False, kernel_options=kernel_options)
        return _reduce(_softplus(row_neg - s * pos_sim), reduction)
    ksim, (kq, kk) = kernel_inputs(similarity, query, keys)
    row_lse, _ = _ops.pairwise_lse(kq, kk, s, ksim, False, False, kernel_options=kernel_options)
    pos = s * positive_similarity(kq, kk[labels.long()], ksim)
    return _reduce(row_lse - pos, reduction)


def nt_xent(a: Tensor, b: Tensor, temperature: float | Tensor | None = None, *,
            logit_scale: Tensor | float | None = None, similarity: str = "cosine",
            reduction: str = "mean", ids: Tensor | None = None,
            kernel_options: KernelOptions | None = None) -> Tensor:
    r"""NT-Xent (SimCLR): the 2N x 2N objective over z = cat(a, b) with intra-view negatives.

        loss_k = -L_{k, p(k)} + log sum_{j != k} exp(L_kj),   L_kj = s * sim(z_k, z_j),

    where p(k) = k + N for k < N and k - N otherwise; self-similarity is excluded from every
    denominator. ``reduction="mean"`` averages over the 2N anchors, ``"none"`` returns the 2N
    vector loss_k. Scale as in :func:`symmetric_infonce`.

    ``ids`` (int64 [N], optional): the samples' ids; every view of a sample with the same id is then
    a positive of z_k (the multi-positive form -log sum_{j positive} softmax_{j != k}(L_k)_j, the
    SupCon L_in loss without its log |P| constant). All-distinct ids give the loss above.
    """
    check_pair(("a", "b"), a, b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"`a` and `b` must hold the same number of pairs, got {a.shape[0]} and "
                         f"{b.shape[0]}")
    check_options(similarity, reduction)
    s = loss_scale(temperature, logit_scale, _ops.lse_dtype(a.dtype), a.device)
    if ids is not None:
        ids = check_ids("ids", ids, a.shape[0], a.device)
        ksim, ka, kb = tile_operands(similarity, a, b)
        # The three N x N blocks as below, each label-aware: (a, a) and (b, b) leave out (k, k).
        ab = _ops.pairwise_label_lse(ka, kb, s, ids, ids, ksim, False, True, kernel_options=kernel_options)
        aa = _ops.pairwise_label_lse(ka, ka, s, ids, ids, ksim, True, False, kernel_options=kernel_options)
        bb = _ops.pairwise_label_lse(kb, kb, s, ids, ids, ksim, True, False, kernel_options=kernel_options)
        neg = torch.cat([torch.logaddexp(_finite(aa[0]), _finite(ab[0])),
                         torch.logaddexp(_finite(bb[0]), _finite(ab[1]))])
        pos = torch.cat([torch.logaddexp(aa[2], ab[2]), torch.logaddexp(bb[2], ab[3])])
        return _reduce(multi_positive_terms(neg, pos, _softplus), reduction)
    if _ops.positives_in_tile(a.device):  # as below, the a-b block's positives from its tiles
        ksim, ka, kb = tile_operands(similarity, a, b)
        ab_rn, ab_cn, ab_rp, ab_cp, _, _ = _ops.pairwise_label_lse(ka, kb, s, None, None, ksim, False, True,
                                                                   kernel_options=kernel_options)
        aa_rows, _ = _ops.pairwise_lse(ka, ka, s, ksim, True, False, kernel_options=kernel_options)
        bb_rows, _ = _ops.pairwise_lse(kb, kb, s, ksim, True, False, kernel_options=kernel_options)
        neg = torch.cat([torch.logaddexp(_finite(aa_rows), _finite(ab_rn)),
                         torch.logaddexp(_finite(bb_rows), _finite(ab_cn))])
        return _reduce(_softplus(neg - torch.cat([ab_rp, ab_cp])), reduction)
    ksim, ka, kb, pos_sim = paired_operands(similarity, a, b)
    # The 2N x 2N logits in three N x N blocks, each with its diagonal masked: for anchor a_k the
    # negatives are a_j (j != k) and b_j (j != k); for b_k, b_j and a_j (j != k). The a-b block
    # gives both directions in one pass (its columns are the b anchors' rows of the b-a block).
    # 3 N^2 logits instead of 4 N^2, and the positives stay out of every LSE.
    ab_rows, ab_cols = _ops.pairwise_lse(ka, kb, s, ksim, True, True, kernel_options=kernel_options)
    aa_rows, _ = _ops.pairwise_lse(ka, ka, s, ksim, True, False, kernel_options=kernel_options)
    bb_rows, _ = _ops.pairwise_lse(kb, kb, s, ksim, True, False, kernel_options=kernel_options)
    neg_a = torch.logaddexp(_finite(aa_rows), _finite(ab_rows))
    neg_b = torch.logaddexp(_finite(bb_rows), _finite(ab_cols))
    pos = s * pos_sim
    return _reduce(_softplus(torch.cat([neg_a, neg_b]) - torch.cat([pos, pos])), reduction)


def lpsimclr(anchor: Tensor, positive: Tensor, negatives: Tensor, temperature: float | Tensor = 1.0, *,
             alpha: float = 0.5, include_positive: bool = True, log_mean: bool = True,
             reduction: str = "mean", kernel_options: KernelOptions | None = None) -> Tensor:
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
    check_pair(("anchor", "positive"), anchor, positive)
    check_pair(("anchor", "negatives"), anchor, negatives)
    if anchor.shape[0] != positive.shape[0]:
        raise ValueError(f"`anchor` and `positive` must hold the same number of pairs, got "
                         f"{anchor.shape[0]} and {positive.shape[0]}")
    check_options("euclidean", reduction)
    check_finite_number("alpha", alpha)
    if temperature is None:
        raise ValueError("`temperature` must be given (the paper uses 1.0)")
    s = loss_scale(temperature, None, _ops.lse_dtype(anchor.dtype), anchor.device)
    _, (ka, kp, kn) = kernel_inputs("euclidean", anchor, positive, negatives)
    # log sum_j exp(-neg_ij / tau)
    row, _ = _ops.pairwise_lse(ka, kn, s, "euclidean", False, False, kernel_options=kernel_options)
    pos = -positive_similarity(ka, kp, "euclidean")
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
