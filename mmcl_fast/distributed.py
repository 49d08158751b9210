"""Multi-process contrastive losses over ``torch.distributed`` (gloo on CPU, nccl on GPU).

Each of W ranks holds B paired local rows a_r, b_r (B_g = W * B rows in all). The sharded
symmetric loss evaluates, on rank r, only the B x B_g block L_r = s * sim(a_r, b_all):

* the row log-sum-exp of a_r's rows is complete within the block;
* the block's column log-sum-exps are partials over a_r's rows; one all-gather of the W x B_g
  partials and a log-sum-exp over ranks gives every column's exact statistic
  ``col_j = log sum_r exp(part_rj)`` (no fixed maximum, so nothing underflows at scale 100);
* the loss's gradient reaches b_all through the block; a reduce-scatter returns to each rank the
  sum over blocks of the rows it owns, so every feature receives its exact global gradient.

Communication per step: forward all-gather of b (B_g x D) and of the partials (W x B_g floats),
one scalar all-reduce of the loss; backward reduce-scatter of dB (B_g x D), reduce-scatter of the
partials' gradient (W x B_g) and one scalar all-reduce for d/ds. One B x B_g tile pass per rank
(forward and backward): open_clip's ``local_loss`` evaluates two such blocks, its default one
B_g x B_g matrix per rank.

Local batches must have equal sizes on every rank (checked; a clear error otherwise).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from . import _ops, losses
from .labels import check_ids, finite, multi_positive_terms
from .operands import kernel_inputs, positive_similarity
from .options import KernelOptions, resolve, value_checks
from .ring_lse import RingLSE
from .validation import check_options, check_pair, loss_scale

# torch >= 2.10 names the single-tensor collectives *_single; older releases *_tensor.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def world(group=None) -> tuple[int, int]:
    """(world_size, rank) of ``group``; (1, 0) when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def all_gather_rows(x: Tensor, group=None) -> Tensor:
    """Concatenation over ranks (in rank order) of equal-shaped tensors, without gradient."""
    w, _ = world(group)
    out = x.new_empty((w * x.shape[0],) + tuple(x.shape[1:]))
    with torch.no_grad():
        _all_gather_single(out, x.detach().contiguous(), group=group)
    return out


class _GatherRows(torch.autograd.Function):
    """y_all = cat_r(y_r). Backward: d y_r = sum over ranks of their gradient of slice r."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        return all_gather_rows(x, group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        w, _ = world(ctx.group)
        out = grad.new_empty((grad.shape[0] // w,) + tuple(grad.shape[1:]))
        with torch.no_grad():
            _reduce_scatter_single(out, grad.detach().contiguous(), group=ctx.group)
        return out, None


class _SumGradOverRanks(torch.autograd.Function):
    """Identity whose backward all-reduces (sums) the gradient over ranks."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _ScaleGrad(torch.autograd.Function):
    """Identity whose backward multiplies the gradient by a constant."""

    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.factor, None


def gather_rows_with_grad(x: Tensor, group=None) -> Tensor:
    """All-gather whose backward reduce-scatters (sums) the gradients to the owning ranks."""
    return _GatherRows.apply(x, group)


def check_equal_batches(n: int, device: torch.device, group=None) -> None:
    """Raise the same ValueError on every rank unless all local batches have ``n`` rows."""
    sizes = all_gather_rows(torch.tensor([n], device=device), group).tolist()
    if len(set(sizes)) != 1:
        raise ValueError(f"local batch sizes differ across ranks ({sizes}); the distributed "
                         "losses need equal local batches (drop the last incomplete batch, "
                         "e.g. DataLoader(drop_last=True))")


def sharded_symmetric_lse_loss(a: Tensor, b: Tensor, s: Tensor, kernel_similarity: str,
                               group=None, kernel_options: KernelOptions | None = None) -> Tensor:
    """This rank's share of the global symmetric InfoNCE (mean reduction).

    Inputs are kernel inputs (normalised for cosine). Returns
    ``p_r = (sum_{i in r} row_i + sum_{j in r} col_j - 2 sum_{i in r} s * sim(a_i, b_i)) / (2 B_g)``
    so that ``sum_r p_r`` is the global loss; its autograd graph (with the collectives above)
    gives every rank the exact gradient of that sum for its own a_r, b_r and for s.
    """
    w, r = world(group)
    n = a.shape[0]
    s = _SumGradOverRanks.apply(s, group)
    b_all = _GatherRows.apply(b, group)
    row, col_part = _ops.pairwise_lse(a, b_all, s, kernel_similarity, False, True,
                                      kernel_options=kernel_options)
    col = _merged_columns(col_part, group, r, n)
    pos = s * positive_similarity(a, b, kernel_similarity)
    return (row.sum() + col.sum() - 2 * pos.sum()) / (2 * w * n)


def _merged_columns(partial: Tensor, group, r: int, n: int) -> Tensor:
    """This rank's n columns of the log-sum-exp over ranks of every rank's column partials (an
    empty set's -inf kept finite, so that the merge has a gradient everywhere)."""
    parts = _GatherRows.apply(finite(partial).unsqueeze(0), group)
    return torch.logsumexp(parts, dim=0)[r * n:(r + 1) * n]


def sharded_label_loss(a: Tensor, b: Tensor, ids: Tensor, s: Tensor, kernel_similarity: str, group=None,
                       kernel_options: KernelOptions | None = None) -> Tensor:
    """This rank's share of the global label-aware symmetric InfoNCE (mean reduction): as
    :func:`sharded_symmetric_lse_loss`, with the LSEs over each row's and column's negatives and
    positives (ids gathered with the features) in place of the LSE and the paired similarity."""
    w, r = world(group)
    n = a.shape[0]
    s = _SumGradOverRanks.apply(s, group)
    b_all = _GatherRows.apply(b, group)
    ids_all = all_gather_rows(ids, group)
    rn, cn_part, rp, cp_part, _, _ = _ops.pairwise_label_lse(a, b_all, s, ids, ids_all, kernel_similarity, False,
                                                             True, kernel_options=kernel_options)
    cn, cp = _merged_columns(cn_part, group, r, n), _merged_columns(cp_part, group, r, n)
    terms = multi_positive_terms(rn, rp, losses._softplus) + multi_positive_terms(cn, cp, losses._softplus)
    return terms.sum() / (2 * w * n)


def _global_value(partial: Tensor, group) -> Tensor:
    """``partial`` in the graph, but valued at the sum of every rank's ``partial``."""
    total = partial.detach().clone()
    dist.all_reduce(total, group=group)
    return partial + (total - partial.detach())


MODES = ("gather", "ring")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")


def ring_symmetric_share(a: Tensor, b: Tensor, s: Tensor, kernel_similarity: str, group=None,
                         ids: Tensor | None = None, kernel_options: KernelOptions | None = None) -> Tensor:
    """:func:`sharded_symmetric_lse_loss` (``ids`` None) or :func:`sharded_label_loss`, with the
    statistics from the ring (:class:`mmcl_fast.ring_lse.RingLSE`) instead of the all-gather."""
    w, _ = world(group)
    n = a.shape[0]
    s = _SumGradOverRanks.apply(s, group)
    if ids is None:
        row, col = RingLSE.apply(a, b.contiguous(), s, kernel_similarity, group, resolve(kernel_options), True)
        pos = s * positive_similarity(a, b, kernel_similarity)
        return (row.sum() + col.sum() - 2 * pos.sum()) / (2 * w * n)
    rn, rp, cn, cp = RingLSE.apply(a, b.contiguous(), s, kernel_similarity, group, resolve(kernel_options), True,
                                   ids)
    terms = multi_positive_terms(rn, rp, losses._softplus) + multi_positive_terms(cn, cp, losses._softplus)
    return terms.sum() / (2 * w * n)


def symmetric_share(a: Tensor, b: Tensor, s: Tensor, kernel_similarity: str, group=None, ids: Tensor | None = None,
                    mode: str = "gather", kernel_options: KernelOptions | None = None) -> Tensor:
    """This rank's share p_r of the global symmetric InfoNCE (``sum_r p_r`` is the loss), in
    ``mode`` "gather" or "ring"; kernel inputs as :func:`sharded_symmetric_lse_loss`."""
    if mode == "ring":
        return ring_symmetric_share(a, b, s, kernel_similarity, group, ids, kernel_options)
    if ids is not None:
        return sharded_label_loss(a, b, ids, s, kernel_similarity, group, kernel_options)
    return sharded_symmetric_lse_loss(a, b, s, kernel_similarity, group, kernel_options)


def _checked_pairs(a: Tensor, b: Tensor, similarity: str, mode: str, group, ids, kernel_options):
    """The distributed InfoNCE losses' argument checks; (world size, ids as int64 or None)."""
    check_pair(("a", "b"), a, b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"`a` and `b` must hold the same number of pairs, got {a.shape[0]} and "
                         f"{b.shape[0]}")
    check_options(similarity, "mean")
    _check_mode(mode)
    w, _ = world(group)
    if w > 1:
        if ids is not None:
            ids = check_ids("ids", ids, a.shape[0], a.device)
        if value_checks(a.device, kernel_options):
            check_equal_batches(a.shape[0], a.device, group)
    return w, ids


def symmetric_infonce(a: Tensor, b: Tensor, temperature: float | Tensor | None = None, *,
                      logit_scale: Tensor | float | None = None, similarity: str = "cosine",
                      group=None, ddp_scaling: bool = True, ids: Tensor | None = None, mode: str = "gather",
                      kernel_options: KernelOptions | None = None) -> Tensor:
    r"""Global symmetric InfoNCE over the paired rows of all ranks (mean over B_g = W * B pairs).

    Same loss as :func:`mmcl_fast.symmetric_infonce` on the concatenated batch
    ``cat_r(a_r), cat_r(b_r)``, identical on every rank, computed with one B x B_g tile pass per
    rank. ``mode``:

    * ``"gather"`` (default): ``b`` is all-gathered (B_g x D per rank, and a B_g x D float32
      gradient buffer for the reduce-scatter); see the module docstring;
    * ``"ring"``: ``b``'s rows travel rank to rank with the column statistics and, in the
      backward, the gradient accumulators (:mod:`mmcl_fast.ring_lse`): W B x B tile passes per
      rank each overlapped with a transfer, and O(B * D) extra memory per rank whatever W.

    Both give the same value and gradients (to rounding). Gradients:

    * features: ``W * dL/da_r`` when ``ddp_scaling`` (the default), so that DistributedDataParallel's
      gradient averaging yields exactly the full-batch gradient of the parameters; ``dL/da_r``
      otherwise;
    * ``logit_scale`` / a tensor ``temperature``: ``dL/ds`` on every rank (DDP's average of equal
      values leaves it unchanged).

    Without an initialised process group (or with W = 1) this is the single-process loss.
    ``ids`` (int64 [B], this rank's rows): label-aware positives as in
    :func:`mmcl_fast.symmetric_infonce`, across ranks (gathered with ``b``, or travelling with
    its chunks). ``kernel_options``: see :class:`mmcl_fast.KernelOptions`.
    """
    return _symmetric_loss(a, b, temperature, logit_scale, similarity, group, ids, mode, ddp_scaling, False,
                           kernel_options)


def local_symmetric_infonce(a: Tensor, b: Tensor, temperature: float | Tensor | None = None, *,
                            logit_scale: Tensor | float | None = None, similarity: str = "cosine", group=None,
                            ids: Tensor | None = None, mode: str = "ring",
                            kernel_options: KernelOptions | None = None) -> Tensor:
    r"""This rank's local symmetric loss, open_clip's ``local_loss``: its B rows of ``a`` against
    the B_g rows of ``b`` and its rows of ``b`` against those of ``a``, averaged over its B rows in
    each direction; the mean over ranks is the global loss. Gradients: those of the global loss
    with DDP scaling (:func:`symmetric_infonce` with ``ddp_scaling=True``): for the features that
    is the sum over ranks of every local loss's gradient (open_clip's ``gather_with_grad``), for the
    scale ``dL/ds`` on every rank, whose DDP average equals that of the local losses' gradients.
    """
    return _symmetric_loss(a, b, temperature, logit_scale, similarity, group, ids, mode, True, True, kernel_options)


def _symmetric_loss(a, b, temperature, logit_scale, similarity, group, ids, mode, ddp_scaling: bool, local: bool,
                    kernel_options) -> Tensor:
    """The global symmetric InfoNCE on every rank (``local``: valued at this rank's local loss,
    W times its share since every anchor has a positive, with the global loss's gradients)."""
    w, ids = _checked_pairs(a, b, similarity, mode, group, ids, kernel_options)
    if w == 1:
        return losses.symmetric_infonce(a, b, temperature, logit_scale=logit_scale,
                                        similarity=similarity, ids=ids, kernel_options=kernel_options)
    s = loss_scale(temperature, logit_scale, _ops.lse_dtype(a.dtype), a.device)
    ksim, (ka, kb) = kernel_inputs(similarity, a, b)
    if ddp_scaling:
        ka, kb = _ScaleGrad.apply(ka, float(w)), _ScaleGrad.apply(kb, float(w))
    share = symmetric_share(ka, kb, s, ksim, group, ids, mode, kernel_options)
    global_loss = _global_value(share, group)
    return global_loss + (w * share - global_loss).detach() if local else global_loss


def infonce(query: Tensor, keys: Tensor, temperature: float | Tensor | None = None, *,
            logit_scale: Tensor | float | None = None, similarity: str = "cosine", group=None,
            ddp_scaling: bool = True, ids: Tensor | None = None, mode: str = "gather",
            kernel_options: KernelOptions | None = None) -> Tensor:
    r"""Global one-directional InfoNCE: every rank's query rows against the key rows of all ranks,
    ``mean_i [-L_ii + log sum_j exp(L_ij)]`` over the B_g = W * B queries (query i's positive is
    its paired key, wherever it lives), identical on every rank: :func:`mmcl_fast.infonce` on
    the concatenated batch. ``mode`` ("gather" or "ring"), ``ddp_scaling``, ``ids`` (the
    multi-positive form, a query without a positive left out of the mean) and the gradients'
    semantics as :func:`symmetric_infonce`.
    """
    w, ids = _checked_pairs(query, keys, similarity, mode, group, ids, kernel_options)
    if w == 1:
        return losses.infonce(query, keys, temperature=temperature, logit_scale=logit_scale, similarity=similarity,
                              ids=ids, kernel_options=kernel_options)
    s = loss_scale(temperature, logit_scale, _ops.lse_dtype(query.dtype), query.device)
    ksim, (kq, kk) = kernel_inputs(similarity, query, keys)
    if ddp_scaling:
        kq, kk = _ScaleGrad.apply(kq, float(w)), _ScaleGrad.apply(kk, float(w))
    s = _SumGradOverRanks.apply(s, group)
    opts = resolve(kernel_options)
    if mode == "ring":
        stats = RingLSE.apply(kq, kk.contiguous(), s, ksim, group, opts, False, ids)
    else:
        kk_all = _GatherRows.apply(kk, group)
        if ids is None:
            stats = _ops.pairwise_lse(kq, kk_all, s, ksim, False, False, kernel_options=opts)
        else:
            rn, _, rp, _, _, _ = _ops.pairwise_label_lse(kq, kk_all, s, ids, all_gather_rows(ids, group), ksim,
                                                         False, False, kernel_options=opts)
            stats = (rn, rp)
    if ids is None:
        share = (stats[0].sum() - (s * positive_similarity(kq, kk, ksim)).sum()) / (w * query.shape[0])
        return _global_value(share, group)
    rn, rp = stats[0], stats[1]
    has_pos = rp > -torch.inf
    count = has_pos.sum().to(rn.dtype)
    count = _global_value(count, group).detach().clamp_min(1)      # anchors with a positive, all ranks
    return _global_value(multi_positive_terms(rn, rp, losses._softplus).sum() / count, group)


def siglip_loss(a: Tensor, b: Tensor, logit_scale, logit_bias=None, *, similarity: str = "dot", group=None,
                ids: Tensor | None = None, kernel_options: KernelOptions | None = None) -> Tensor:
    """This rank's sigmoid (SigLIP) loss against the text rows of every rank, with open_clip's
    value and gradients: :func:`mmcl_fast.sigmoid_loss.distributed_siglip_loss`."""
    from .sigmoid_loss import distributed_siglip_loss  # the loss module imports this one

    return distributed_siglip_loss(a, b, logit_scale, logit_bias, similarity=similarity, group=group, ids=ids,
                                   kernel_options=kernel_options)
