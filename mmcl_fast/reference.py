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


def lpsimclr(anchor, positive, negatives, temperature=1.0, *, alpha=0.5, include_positive=True,
             log_mean=True, reduction="mean"):
    """The estimator written out over the full M x K matrix of squared distances, in the order
    of the simulations' original formulation: concatenate the positive's column, then logmeanexp."""
    neg = (anchor[:, None, :] - negatives[None, :, :]).pow(2).sum(-1)
    pos = (anchor - positive).pow(2).sum(-1)
    terms = torch.cat([neg, pos[:, None]], dim=1) if include_positive else neg
    denom = torch.logsumexp(-terms / temperature, dim=1)
    if log_mean:
        denom = denom - torch.log(torch.tensor(float(terms.shape[1]), dtype=terms.dtype))
    return _reduce(2 * (alpha * pos / temperature + (1 - alpha) * denom), reduction)


def symmetric_lpsimclr(z1, z2, z1_negatives, z2_negatives, temperature=1.0, **options):
    return 0.5 * (lpsimclr(z1, z2, z1_negatives, temperature, **options)
                  + lpsimclr(z2, z1, z2_negatives, temperature, **options))


def nt_xent(a, b, temperature=None, *, logit_scale=None, similarity="cosine", reduction="mean"):
    n = a.shape[0]
    z = torch.cat([a, b])
    logits = _scale(temperature, logit_scale) * similarity_matrix(z, z, similarity)
    eye = torch.eye(2 * n, dtype=torch.bool, device=a.device)
    logits = logits.masked_fill(eye, float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(a.device)
    return _reduce(F.cross_entropy(logits, labels, reduction="none"), reduction)



def _multi_positive(logits: Tensor, positive: Tensor, excluded: Tensor | None = None) -> Tensor:
    """-log sum_{j positive} softmax(logits_i)_j per row, over the columns not ``excluded``; NaN-free
    0 for a row without a positive. The mask is a full M x N boolean matrix here."""
    if excluded is not None:
        logits = logits.masked_fill(excluded, float("-inf"))
        positive = positive & ~excluded
    lse_all = torch.logsumexp(logits, 1)
    lse_pos = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), 1)
    has = positive.any(1)
    return torch.where(has, lse_all - torch.where(has, lse_pos, 0), 0)


def _mean_with_positives(per: Tensor, has: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per.sum() / has.sum().clamp_min(1)
    return _reduce(per, reduction)


def multi_positive_symmetric_infonce(a, b, ids, temperature=None, *, logit_scale=None, similarity="cosine",
                                     reduction="mean"):
    """CLIP with label-aware positives (ids[i] == ids[j]) and the sum inside the log."""
    logits = _scale(temperature, logit_scale) * similarity_matrix(a, b, similarity)
    positive = ids[:, None] == ids[None, :]
    per = 0.5 * (_multi_positive(logits, positive) + _multi_positive(logits.T, positive.T))
    return _reduce(per, reduction)


def multi_positive_infonce(query, keys, query_ids, key_ids, temperature=None, *, logit_scale=None,
                           similarity="cosine", reduction="mean"):
    logits = _scale(temperature, logit_scale) * similarity_matrix(query, keys, similarity)
    positive = query_ids[:, None] == key_ids[None, :]
    return _mean_with_positives(_multi_positive(logits, positive), positive.any(1), reduction)


def multi_positive_nt_xent(a, b, ids, temperature=None, *, logit_scale=None, similarity="cosine",
                           reduction="mean"):
    z, zid = torch.cat([a, b]), torch.cat([ids, ids])
    logits = _scale(temperature, logit_scale) * similarity_matrix(z, z, similarity)
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=a.device)
    return _reduce(_multi_positive(logits, zid[:, None] == zid[None, :], eye), reduction)


def supcon_loss(features, labels=None, temperature=0.1, *, variant="out", similarity="cosine",
                reduction="mean"):
    """SupCon written out as in its paper, over the full matrix: [N, V, D] features, view-major
    anchors, self left out of every denominator, anchors without a positive left out of the mean."""
    if features.dim() == 3:
        n, v, _ = features.shape
        z = torch.cat(features.unbind(1))
        ids = (torch.arange(n, device=features.device) if labels is None else labels).repeat(v)
        shape = (v, n)
    else:
        z, ids, shape = features, labels, (features.shape[0],)
    logits = similarity_matrix(z, z, similarity) / temperature
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    positive = (ids[:, None] == ids[None, :]) & ~eye
    count = positive.sum(1)
    has = count > 0
    log_prob = logits - torch.logsumexp(logits.masked_fill(eye, float("-inf")), 1, keepdim=True)
    if variant == "out":
        per = -(log_prob * positive).sum(1) / count.clamp_min(1)
    else:
        per = (-torch.logsumexp(log_prob.masked_fill(~positive, float("-inf")), 1)
               + torch.log(count.clamp_min(1).to(logits.dtype)))
    per = torch.where(has, per, 0)
    out = _mean_with_positives(per, has, reduction)
    return out.reshape(shape) if reduction == "none" else out

def comm_loss(views1, views2, temperature=0.1, *, full_index=-1, weights=None):
    """CoMM's loss written out from the paper: for each embedding k, the 2N x 2N SimCLR
    cross-entropy of (z'_k, z''_F) and of (z''_k, z'_F), averaged; the mean of the weighted terms."""
    full = full_index % len(views1)
    terms = []
    for k in range(len(views1)):
        pair_losses = []
        for a, b in ((views1[k], views2[full]), (views2[k], views1[full])):
            a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
            z = torch.cat([a, b])
            logits = (z @ z.T) / temperature
            logits = logits.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
            n = a.shape[0]
            labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
            pair_losses.append(F.cross_entropy(logits, labels))
        terms.append((pair_losses[0] + pair_losses[1]) / 2)
    terms = torch.stack(terms)
    w = torch.ones_like(terms) if weights is None else torch.as_tensor(weights, dtype=terms.dtype)
    return (terms * w).mean()


# --------------------------------------------------------------------------------------------
# open_clip's ClipLoss, re-implemented from its published formulas (open_clip/loss.py):
# the ground truth that mmcl_fast.ClipLoss must reproduce, single- and multi-process.
# --------------------------------------------------------------------------------------------

def open_clip_gather_features(image_features: Tensor, text_features: Tensor, local_loss: bool,
                              gather_with_grad: bool, rank: int, world_size: int):
    """All ranks' features, concatenated in rank order, with open_clip's gradient semantics.

    ``gather_with_grad``: an autograd all-gather (its backward sums every rank's gradient of the
    gathered copy). Otherwise a plain all-gather whose copies carry no gradient, except that the
    rank's own slice is the live local tensor when ``local_loss`` is False.
    """
    import torch.distributed as dist
    if gather_with_grad:
        import warnings

        from torch.distributed.nn.functional import all_gather
        with warnings.catch_warnings():        # deprecated in torch 2.13 but what open_clip calls
            warnings.simplefilter("ignore", FutureWarning)
            return torch.cat(all_gather(image_features)), torch.cat(all_gather(text_features))
    images = [torch.zeros_like(image_features) for _ in range(world_size)]
    texts = [torch.zeros_like(text_features) for _ in range(world_size)]
    dist.all_gather(images, image_features)
    dist.all_gather(texts, text_features)
    if not local_loss:
        images[rank], texts[rank] = image_features, text_features
    return torch.cat(images), torch.cat(texts)


class OpenClipLoss(torch.nn.Module):
    """open_clip's ClipLoss: materialises the logits, ``(CE(L, y) + CE(L^T-side, y)) / 2``.

    ``L = logit_scale * img @ txt^T (+ logit_bias)``; with ``world_size > 1`` the features of all
    ranks are gathered first; ``local_loss`` keeps only this rank's rows (labels offset by
    ``rank * B_local``), otherwise every rank evaluates the full global matrix.
    """

    def __init__(self, local_loss=False, gather_with_grad=False, cache_labels=False, rank=0,
                 world_size=1):
        super().__init__()
        self.local_loss, self.gather_with_grad = local_loss, gather_with_grad
        self.rank, self.world_size = rank, world_size

    def get_logits(self, image_features, text_features, logit_scale, logit_bias=None):
        if self.world_size > 1:
            all_img, all_txt = open_clip_gather_features(
                image_features, text_features, self.local_loss, self.gather_with_grad,
                self.rank, self.world_size)
            if self.local_loss:
                per_image = logit_scale * image_features @ all_txt.T
                per_text = logit_scale * text_features @ all_img.T
            else:
                per_image = logit_scale * all_img @ all_txt.T
                per_text = per_image.T
        else:
            per_image = logit_scale * image_features @ text_features.T
            per_text = logit_scale * text_features @ image_features.T
        if logit_bias is not None:
            per_image, per_text = per_image + logit_bias, per_text + logit_bias
        return per_image, per_text

    def forward(self, image_features, text_features, logit_scale, logit_bias=None,
                output_dict=False):
        per_image, per_text = self.get_logits(image_features, text_features, logit_scale,
                                              logit_bias)
        labels = torch.arange(per_image.shape[0], device=per_image.device)
        if self.world_size > 1 and self.local_loss:
            labels = labels + per_image.shape[0] * self.rank
        loss = (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2
        return {"contrastive_loss": loss} if output_dict else loss


# --------------------------------------------------------------------------------------------
# The sigmoid (SigLIP) loss and open_clip's SigLipLoss, re-implemented from their documented
# behaviour: the ground truth that mmcl_fast.siglip_loss / SigLipLoss must reproduce.
# --------------------------------------------------------------------------------------------

def siglip_loss(a, b, logit_scale, logit_bias=None, *, similarity="dot", reduction="mean", negative_only=False,
                ids=None):
    """(1/B) sum_ij -log sigmoid(z_ij L_ij), L = s sim(a, b) + t, z = +1 on the diagonal (unless
    ``negative_only``; with ``ids``, wherever ids_i == ids_j) and -1 elsewhere, on the full logits
    matrix."""
    logits = logit_scale * similarity_matrix(a, b, similarity)
    if logit_bias is not None:
        logits = logits + logit_bias
    z = -torch.ones_like(logits)
    if ids is not None:
        z = z + 2 * (ids[:, None] == ids[None, :]).to(logits.dtype)
    elif not negative_only:
        z = z + 2 * torch.eye(a.shape[0], b.shape[0], dtype=logits.dtype, device=logits.device)
    per = -F.logsigmoid(z * logits).sum(1)
    return per.sum() / a.shape[0] if reduction == "mean" else _reduce(per, reduction)


class _ExchangeWithGrad(torch.autograd.Function):
    """Send ``to_send[k]`` to ``peers[k]`` and receive from ``sources[k]`` (one batch of P2P ops);
    the backward sends each received tensor's gradient back the way it came."""

    @staticmethod
    def forward(ctx, peers, sources, group, *to_send):
        import torch.distributed as dist
        ctx.peers, ctx.sources, ctx.group = peers, sources, group
        received = [torch.empty_like(t) for t in to_send]
        ops = [dist.P2POp(dist.isend, t.contiguous(), p, group=group) for t, p in zip(to_send, peers)]
        ops += [dist.P2POp(dist.irecv, r, s, group=group) for r, s in zip(received, sources)]
        for req in dist.batch_isend_irecv(ops):
            req.wait()
        return tuple(received)

    @staticmethod
    def backward(ctx, *grads):
        back = _ExchangeWithGrad.apply(ctx.sources, ctx.peers, ctx.group, *[g.contiguous() for g in grads])
        return (None, None, None, *back)


class OpenClipSigLipLoss(torch.nn.Module):
    """open_clip's SigLipLoss: this rank's images against its own texts (positives on the
    diagonal), then against every other rank's texts as negatives only, each block a materialised
    B x B matrix, all divided by the local B. The other ranks' texts arrive as ``dist_impl`` says,
    every transfer carrying gradients back:

    * ``"shift"``: W - 1 steps, each passing the texts one rank to the right;
    * ``"bidir"``: texts travel both ways at once, (W - 1) // 2 steps, plus one rightward step when
      W - 1 is odd;
    * ``"reduce"``: W all-reduces, the k-th summing rank k's texts with zeros from the others;
    * ``"gather"``: one autograd all-gather.
    """

    def __init__(self, rank=0, world_size=1, dist_impl="bidir"):
        super().__init__()
        self.rank, self.world_size, self.dist_impl = rank, world_size, dist_impl

    def forward(self, image_features, text_features, logit_scale, logit_bias=None):
        loss = siglip_loss(image_features, text_features, logit_scale, logit_bias)
        if self.world_size == 1:
            return loss
        import warnings
        with warnings.catch_warnings():    # torch.distributed.nn: deprecated in torch 2.13, what open_clip calls
            warnings.simplefilter("ignore", FutureWarning)
            return self._other_ranks(image_features, text_features, logit_scale, logit_bias, loss)

    def _other_ranks(self, image_features, text_features, logit_scale, logit_bias, loss):
        w, r = self.world_size, self.rank
        right, left = (r + 1) % w, (r - 1) % w
        others = []
        if self.dist_impl == "shift":
            travelling = text_features
            for _ in range(w - 1):
                (travelling,) = _ExchangeWithGrad.apply([right], [left], None, travelling)
                others.append(travelling)
        elif self.dist_impl == "bidir":
            to_left = to_right = text_features
            for _ in range((w - 1) // 2):
                from_right, from_left = _ExchangeWithGrad.apply([left, right], [right, left], None, to_left, to_right)
                others += [from_right, from_left]
                to_left, to_right = from_right, from_left
            if (w - 1) % 2:
                (from_left,) = _ExchangeWithGrad.apply([right], [left], None, to_right)
                others.append(from_left)
        elif self.dist_impl == "reduce":
            from torch.distributed.nn.functional import all_reduce
            for k in range(w):
                # every rank uses every reduced copy (its own with weight 0), so that the backward
                # all-reduces run on every rank in the same order
                received = all_reduce(text_features * float(k == r))
                weight = float(k != r)
                loss = loss + weight * siglip_loss(image_features, received, logit_scale, logit_bias,
                                                   negative_only=True)
        elif self.dist_impl == "gather":
            from torch.distributed.nn.functional import all_gather
            gathered = all_gather(text_features)
            others = [t for k, t in enumerate(gathered) if k != r]
        else:
            raise ValueError(self.dist_impl)
        for t in others:
            loss = loss + siglip_loss(image_features, t, logit_scale, logit_bias, negative_only=True)
        return loss
