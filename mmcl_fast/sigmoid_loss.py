r"""The pairwise sigmoid loss of SigLIP (Zhai et al., ICCV 2023), fused: ``siglip_loss`` and
``SigLipLoss``, a drop-in for open_clip's ``SigLipLoss``.

With a, b in R^{B x D} paired row by row, L_ij = s * sim(a_i, b_j) + t (s = ``logit_scale``, already
exponentiated; t = ``logit_bias``; both may be learnable) and z_ij = +1 for the positive pairs
(i = j) and -1 otherwise:

    loss_i = sum_j softplus(-z_ij L_ij) = softplus(-L_ii) + sum_{j != i} softplus(L_ij)
    loss   = (1/B) sum_i loss_i                      (= -(1/B) sum_ij log sigmoid(z_ij L_ij))
    dloss/dL_ij = -z_ij sigmoid(-z_ij L_ij) / B

The normalisation is open_clip's (the sum over the B x B block divided by B, not by B^2). The
negatives' sum comes from the fused ``softplus`` operator with the diagonal masked (the B x B
logits are never stored); the positives' softplus(-L_ii) is O(B D) outside. With ``ids``, z_ij = +1
wherever ids_i == ids_j (duplicates are positives, not negatives), and the label-aware operator
takes each pair's term with its own sign in the tile. No term is ever subtracted from another, so
every per-anchor loss is positive, with full relative precision when it is tiny.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import _ops
from . import distributed as mdist
from .labels import check_ids
from .losses import _softplus  # exact at every z, gradient sigmoid(z) (1/2 at the kink z = 0)
from .operands import kernel_inputs, paired_operands, tile_operands
from .options import KernelOptions, checked, resolve, value_checks
from .ring import RingPass
from .validation import check_options, check_pair, loss_scale

DIST_IMPLS = ("bidir", "shift", "reduce", "gather")
# How SigLipLoss runs each of open_clip's dist_impls (every one has the same values and gradients):
# open_clip's neighbour exchanges ("bidir", "shift") as this project's ring, O(B D) per rank; its
# collectives ("reduce", "gather") as one all-gather, O(B_g D) per rank and one fused pass.
RING_IMPLS = ("bidir", "shift")


def loss_bias(logit_bias, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The 0-dim bias tensor t fed to the operator (0 for None; differentiable when a tensor is)."""
    if logit_bias is None:
        return torch.zeros((), dtype=dtype, device=device)
    if isinstance(logit_bias, Tensor):
        if logit_bias.numel() != 1:
            raise ValueError(f"`logit_bias` must be a 0-dim or 1-element tensor, got shape {tuple(logit_bias.shape)}")
        if not logit_bias.is_floating_point():
            raise TypeError(f"`logit_bias` must be floating point, got {logit_bias.dtype}")
        return logit_bias.reshape(()).to(device=device, dtype=dtype)
    if isinstance(logit_bias, bool) or not isinstance(logit_bias, (int, float)) or logit_bias != logit_bias \
            or abs(float(logit_bias)) == float("inf"):
        raise ValueError(f"`logit_bias` must be a finite number or a tensor, got {logit_bias!r}")
    return torch.full((), float(logit_bias), dtype=dtype, device=device)


def _sigmoid_terms(a: Tensor, b: Tensor, logit_scale, logit_bias, similarity: str, total: bool,
                   kernel_options: KernelOptions | None, ids: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """For the rows of ``a`` against all rows of ``b``, whose first len(a) rows are a's positives
    (the rest are negatives only), or with ``ids`` = (ids of a, ids of b) the pairs of equal ids:
    the vector loss_i, or (``total``) its sum, whose gradients the kernels compute in the forward
    pass over the tiles."""
    dtype = _ops.lse_dtype(a.dtype)
    s = loss_scale(None, logit_scale, dtype, a.device)
    t = loss_bias(logit_bias, dtype, a.device)
    if ids is not None:
        ksim, ka, kb = tile_operands(similarity, a, b)
        if total:
            return _ops.pairwise_label_softplus_total(ka, kb, s, t, *ids, ksim, kernel_options=kernel_options)
        return _ops.pairwise_label_softplus(ka, kb, s, t, *ids, ksim, kernel_options=kernel_options)
    if total:
        # One op: the positives' terms on the diagonal too, so no positive-pair similarities are
        # needed and, but for cosine's normalisation, no copy of the operands.
        if similarity == "cosine":
            ksim, ka, kb, _ = paired_operands(similarity, a, b)
        else:
            ksim, (ka, kb) = kernel_inputs(similarity, a, b)
        return _ops.pairwise_softplus_total(ka, kb, s, t, ksim, "positive", kernel_options=kernel_options)
    ksim, ka, kb, pos_sim = paired_operands(similarity, a, b)
    positives = _softplus(-(s * pos_sim + t))
    return _ops.pairwise_softplus(ka, kb, s, t, ksim, True, kernel_options=kernel_options) + positives


def siglip_loss(a: Tensor, b: Tensor, logit_scale, logit_bias=None, *, similarity: str = "dot",
                reduction: str = "mean", ids: Tensor | None = None,
                kernel_options: KernelOptions | None = None) -> Tensor:
    r"""The sigmoid loss between paired batches ``a`` and ``b`` (B x D each, row i of one the
    positive of row i of the other), see the module docstring:

        loss_i = softplus(-L_ii) + sum_{j != i} softplus(L_ij),   L_ij = s * sim(a_i, b_j) + t

    ``reduction="mean"`` (the default) gives open_clip's SigLipLoss value (1/B) sum_i loss_i;
    ``"sum"`` sums and ``"none"`` returns the vector loss_i. ``logit_scale`` (s > 0: a number or a
    one-element tensor, e.g. ``model.logit_scale.exp()``) and ``logit_bias`` (t: None for 0, a
    number or a one-element tensor) receive their exact gradients when they require them.
    ``similarity``: "dot" (SigLIP's, on normalised features), "cosine", "euclidean" or "l1".
    Memory is O(B D): the B x B logits are never stored. Half-precision inputs on CPU are computed
    in float32. ``kernel_options``: :class:`mmcl_fast.KernelOptions`.

    ``ids`` (int64 [B], optional): a_i and b_j are a positive pair (z_ij = +1) whenever
    ``ids[i] == ids[j]`` (e.g. the same caption twice in a batch), instead of only i = j:
    ``loss_i = sum_{j: ids_j = ids_i} softplus(-L_ij) + sum_{j: ids_j != ids_i} softplus(L_ij)``.
    All-distinct ids give the loss above.
    """
    check_pair(("a", "b"), a, b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"`a` and `b` must hold the same number of pairs, got {a.shape[0]} and {b.shape[0]}")
    check_options(similarity, reduction)
    pair_ids = None
    if ids is not None:
        ids = check_ids("ids", ids, a.shape[0], a.device)
        pair_ids = (ids, ids)
    out = _sigmoid_terms(a, b, logit_scale, logit_bias, similarity, reduction != "none", kernel_options, pair_ids)
    return out / a.shape[0] if reduction == "mean" else out


class SigLipLoss(nn.Module):
    r"""open_clip's ``SigLipLoss`` with the same constructor, forward signature and numbers, fused.

    ``forward(image_features, text_features, logit_scale, logit_bias=None, output_dict=False)``
    returns ``(1/B) sum_ij softplus(-z_ij L_ij)`` with L = logit_scale * image @ text^T + logit_bias
    (features used as given: normalise them first, as SigLIP models do); ``output_dict=True``
    returns ``{"contrastive_loss": loss}``.

    Multi-process (``world_size > 1``, torch.distributed initialised with that many ranks): rank r
    returns open_clip's value for its B images against the text features of every rank (its own
    block with the positives on the diagonal, the others as negatives only), divided by the local
    B. Gradients are open_clip's: each rank's text features receive the sum over ranks of the
    gradients of their losses (its exchanges carry gradients back), the image features and
    ``logit_scale`` / ``logit_bias`` the gradient of the rank's own loss. Every ``dist_impl`` of
    open_clip ("bidir", its default, "shift", "reduce", "gather") has these same values and
    gradients. Here open_clip's neighbour exchanges ("bidir", "shift") run as a ring
    (:func:`ring_siglip_loss`: the text chunks travel rank to rank, each transfer overlapped with a
    fused B x B pass; a few B x D chunks per rank whatever W), and its collectives ("reduce",
    "gather") as one all-gather of the text features, one fused B x B_g pass and a reduce-scatter
    of the text gradient (:func:`distributed_siglip_loss`: O(B_g D) per rank). Never a B x B
    matrix.

    ``cache_labels`` is accepted for compatibility (no label matrix is built). ``kernel_options``
    (keyword only): :class:`mmcl_fast.KernelOptions` for every call.
    """

    def __init__(self, cache_labels: bool = False, rank: int = 0, world_size: int = 1,
                 dist_impl: str | None = None, *, kernel_options: KernelOptions | None = None):
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        dist_impl = dist_impl or "bidir"
        if dist_impl not in DIST_IMPLS:
            raise ValueError(f"`dist_impl` must be one of {DIST_IMPLS} (or None), got {dist_impl!r}")
        self.cache_labels, self.rank, self.world_size, self.dist_impl = cache_labels, rank, world_size, dist_impl
        self.kernel_options = checked(kernel_options)

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale, logit_bias=None,
                output_dict: bool = False, *, ids: Tensor | None = None):
        """``ids`` (int64 [B], this rank's pairs; keyword only): pairs with equal ids are positives,
        across ranks too (see :func:`siglip_loss`)."""
        check_pair(("image_features", "text_features"), image_features, text_features)
        if image_features.shape[0] != text_features.shape[0]:
            raise ValueError("image_features and text_features must hold the same number of pairs, got "
                             f"{image_features.shape[0]} and {text_features.shape[0]}")
        if self.world_size == 1:
            loss = siglip_loss(image_features, text_features, logit_scale, logit_bias, similarity="dot",
                               ids=ids, kernel_options=self.kernel_options)
        else:
            w, r = mdist.world()
            if (w, r) != (self.world_size, self.rank):
                raise RuntimeError(f"SigLipLoss was built for rank {self.rank} of {self.world_size} but "
                                   f"torch.distributed reports rank {r} of {w} (initialise the default "
                                   "process group first)")
            impl = ring_siglip_loss if self.dist_impl in RING_IMPLS else distributed_siglip_loss
            loss = impl(image_features, text_features, logit_scale, logit_bias, ids=ids,
                        kernel_options=self.kernel_options)
        return {"contrastive_loss": loss} if output_dict else loss


def _checked_world(a: Tensor, b: Tensor, similarity: str, group, kernel_options) -> tuple[int, int]:
    """The distributed losses' argument checks; (world size, rank), with equal local batches
    checked across ranks when W > 1 (and the data-dependent checks are on)."""
    check_pair(("a", "b"), a, b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"`a` and `b` must hold the same number of pairs, got {a.shape[0]} and {b.shape[0]}")
    check_options(similarity, "mean")
    w, r = mdist.world(group)
    if w > 1 and value_checks(a.device, kernel_options):
        mdist.check_equal_batches(a.shape[0], a.device, group)
    return w, r


def distributed_siglip_loss(a: Tensor, b: Tensor, logit_scale, logit_bias=None, *, similarity: str = "dot",
                            group=None, ids: Tensor | None = None,
                            kernel_options: KernelOptions | None = None) -> Tensor:
    r"""Rank r's sigmoid loss over the text rows of every rank, with open_clip's semantics (see
    :class:`SigLipLoss`): ``(1/B) [sum_i softplus(-L_ii) + sum_{j != i, j in B_g} softplus(L_ij)]``
    for this rank's B rows of ``a`` against the W * B gathered rows of ``b``. ``b``'s gradient is
    summed over the ranks' losses (reduce-scatter); ``a``, ``logit_scale`` and ``logit_bias`` get
    this rank's. Without an initialised process group (or with W = 1) it is :func:`siglip_loss`.
    ``ids`` (int64 [B], this rank's pairs): label-aware positives, gathered with ``b``.
    """
    w, r = _checked_world(a, b, similarity, group, kernel_options)
    if w == 1:
        return siglip_loss(a, b, logit_scale, logit_bias, similarity=similarity, ids=ids,
                           kernel_options=kernel_options)
    n = a.shape[0]
    b_all = mdist.gather_rows_with_grad(b, group)
    if ids is not None:
        ids = check_ids("ids", ids, n, a.device)
        pair_ids = (ids, mdist.all_gather_rows(ids, group))
        return _sigmoid_terms(a, b_all, logit_scale, logit_bias, similarity, True, kernel_options, pair_ids) / n
    own_first = torch.cat([b_all[r * n:], b_all[:r * n]]) if r else b_all
    return _sigmoid_terms(a, own_first, logit_scale, logit_bias, similarity, True, kernel_options) / n


class _SoftplusRing(torch.autograd.Function):
    """row_i = sum over every rank's rows j of ``b`` of softplus(s sim(a_i, b_j) + t), the own
    diagonal left out, with ``b``'s chunks passed around the ring (:class:`mmcl_fast.ring.RingPass`):
    forward, W tile passes of B x B with the next chunk in flight; backward, the chunks travel
    again with their dY accumulators, each rank adding its block's share, and one more step
    takes every accumulator home: d b_r = sum over ranks' losses, as open_clip's exchanges give.
    Extra memory per rank: a few B x D chunks, whatever W."""

    @staticmethod
    def _terms(a, chunk, chunk_ids, s, t, similarity, ids, step, opts):
        """This rank's rows against one travelling chunk: the negatives' terms with the own
        diagonal left out, or with ids every pair's term under its label."""
        if ids is None:
            return torch.ops.mmcl_fast.softplus_fwd(a, chunk, s, t, similarity, step == 0, opts.checks,
                                                    opts.cuda_math_path)
        return torch.ops.mmcl_fast.label_softplus_fwd(a, chunk, s, t, ids, chunk_ids, similarity, opts.checks,
                                                      opts.cuda_math_path)

    @staticmethod
    def forward(ctx, a, b, s, t, similarity, group, opts, ids=None):
        world = _world_size(group)
        ctx.save_for_backward(a, b, s, t, ids)
        ctx.similarity, ctx.group, ctx.opts = similarity, group, opts
        ring = RingPass(group)
        row = None
        chunk, chunk_ids = b, ids
        for step in range(world):
            if step + 1 < world:
                ring.start([chunk] if ids is None else [chunk, chunk_ids])
            part = _SoftplusRing._terms(a, chunk, chunk_ids, s, t, similarity, ids, step, opts)
            row = part if row is None else row + part
            if step + 1 < world:
                received = ring.finish()
                chunk, chunk_ids = received[0], (received[1] if ids is not None else None)
        return row

    @staticmethod
    def backward(ctx, grad_row):
        a, b, s, t, ids = ctx.saved_tensors
        need_a, need_b, need_s, need_t = ctx.needs_input_grad[:4]
        world = _world_size(ctx.group)
        ring = RingPass(ctx.group)
        grad_row = grad_row.contiguous()
        mask = [need_a, need_b, need_s, need_t]
        da = torch.zeros_like(a) if need_a else None
        ds = torch.zeros_like(s) if need_s else None
        dt = torch.zeros_like(t) if need_t else None
        # Step k: this rank holds the chunk of rank r - k. In flight while its block is computed: that
        # chunk on to the right, the next one in from the left, the finished accumulator of the
        # previous step's chunk on to the right, and the accumulator of this step's chunk (every
        # earlier holder's share) in from the left.
        chunk, chunk_ids, done = b, ids, None
        travelling = (lambda: [chunk]) if ids is None else (lambda: [chunk, chunk_ids])
        for step in range(world):
            sends = (travelling() if step + 1 < world else []) + ([done] if need_b and step > 0 else [])
            if sends:
                ring.start(sends)
            if ids is None:
                dxp, dyp, dsp, dtp = torch.ops.mmcl_fast.softplus_bwd(
                    grad_row, a, chunk, s, t, ctx.similarity, step == 0, mask, ctx.opts.checks,
                    ctx.opts.cuda_math_path)
            else:
                dxp, dyp, dsp, dtp = torch.ops.mmcl_fast.label_softplus_bwd(
                    grad_row, a, chunk, s, t, ids, chunk_ids, ctx.similarity, mask, ctx.opts.checks,
                    ctx.opts.cuda_math_path)
            if need_a:
                da += dxp
            if need_s:
                ds += dsp
            if need_t:
                dt += dtp
            received = ring.finish() if sends else []
            if step + 1 < world:
                chunk = received.pop(0)
                if ids is not None:
                    chunk_ids = received.pop(0)
            if need_b:
                done = dyp if step == 0 else received.pop(0) + dyp
            dxp = dyp = None  # not alive during the next step's pass: the same few chunks at every step
        db = None
        if need_b:  # the last accumulator belongs to the right neighbour; this rank's comes from the left
            ring.start([done])
            (db,) = ring.finish()
        return da, db, ds, dt, None, None, None, None


def _world_size(group) -> int:
    return mdist.world(group)[0]


def ring_siglip_loss(a: Tensor, b: Tensor, logit_scale, logit_bias=None, *, similarity: str = "dot",
                     group=None, ids: Tensor | None = None, kernel_options: KernelOptions | None = None) -> Tensor:
    r""":func:`distributed_siglip_loss`'s value and gradients, computed on a ring: the text rows
    travel rank to rank (W - 1 steps forward, W backward, each transfer overlapped with a B x B tile
    pass), so each rank holds a few B x D chunks instead of the W B x D gathered features. ``ids``
    (this rank's): label-aware positives; each chunk travels with its ids."""
    w, _ = _checked_world(a, b, similarity, group, kernel_options)
    if w == 1:
        return siglip_loss(a, b, logit_scale, logit_bias, similarity=similarity, ids=ids,
                           kernel_options=kernel_options)
    _ops.load_backend()
    dtype = _ops.lse_dtype(a.dtype)
    s = loss_scale(None, logit_scale, dtype, a.device)
    t = loss_bias(logit_bias, dtype, a.device)
    if ids is not None:
        ids = check_ids("ids", ids, a.shape[0], a.device)
        ksim, ka, kb = tile_operands(similarity, a, b)
        terms = _SoftplusRing.apply(ka, kb.contiguous(), s, t, ksim, group, resolve(kernel_options), ids)
        return terms.sum() / a.shape[0]
    ksim, ka, kb, pos_sim = paired_operands(similarity, a, b)
    negatives = _SoftplusRing.apply(ka, kb.contiguous(), s, t, ksim, group, resolve(kernel_options))
    return (negatives + _softplus(-(s * pos_sim + t))).sum() / a.shape[0]
