"""``ClipLoss``: a drop-in replacement for open_clip's ClipLoss that never stores the logits."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import distributed as mdist
from .labels import check_ids
from .losses import infonce, symmetric_infonce
from .options import KernelOptions, checked, value_checks
from .validation import check_pair


class ClipLoss(nn.Module):
    r"""open_clip's ``ClipLoss`` with the same constructor, forward signature and numbers.

    With ``L = logit_scale * image_features @ text_features^T`` (features are used as given:
    normalise them first, as CLIP models do)::

        loss = ( CE(L, arange(B)) + CE(L^T, arange(B)) ) / 2

    ``logit_scale`` is the exponentiated scale (a float, a 0-dim or a one-element tensor; it gets
    its gradient), ``logit_bias`` shifts every logit and cancels in the cross-entropy (it receives a
    zero gradient, as in open_clip). ``output_dict=True`` returns ``{"contrastive_loss": loss}``.

    Multi-process (``world_size > 1``, torch.distributed initialised with that many ranks), with
    open_clip's semantics for each rank's value and gradients:

    * ``local_loss=False`` (default): every rank returns the global loss over all W * B pairs.
      Computed as one B x B_g block per rank whose column statistics are merged across ranks
      (:mod:`mmcl_fast.distributed`), instead of open_clip's full B_g x B_g matrix on every rank.
      Feature gradients are ``dL/d(local features)``, times W with ``gather_with_grad=True``
      (open_clip's all-gather backward sums the W identical losses); ``logit_scale`` gets ``dL/ds``.
    * ``local_loss=True``: each rank returns the loss of its own rows against all gathered
      columns, in both directions (two B x B_g row passes, as open_clip). Without
      ``gather_with_grad`` the gathered copies carry no gradient.

    ``ids`` (keyword of ``forward``, int64 [B], optional): label-aware positives, e.g. a caption id,
    so that the same caption twice in the batch (or across ranks) is not a false negative; each
    direction's term becomes ``-log sum_{j: ids_j = ids_i} softmax(L_i)_j``
    (:func:`mmcl_fast.symmetric_infonce`). All-distinct ids give open_clip's loss.

    ``mode`` (keyword only): how the ranks exchange features. ``"gather"`` (default) all-gathers
    them (open_clip's exchange); ``"ring"`` passes each rank's rows around a ring of ranks with the
    statistics and gradient accumulators (:mod:`mmcl_fast.ring_lse`), so that the extra memory per
    rank is O(B * D) whatever the world size. The ring gives the same values and the same
    gradients, except with ``local_loss=True``: there the ring needs ``gather_with_grad=True``
    (refused otherwise) and gives the feature gradients of that mode, but ``logit_scale``
    receives ``dL/ds`` of the global loss on every rank instead of the gradient of the rank's own
    local loss; DDP's averaging makes the two the same update (the mean of the local losses is the
    global loss).

    ``cache_labels`` is accepted for compatibility (no label tensor is needed here); horovod is
    not supported. ``kernel_options`` (:class:`mmcl_fast.KernelOptions`, keyword only) sets the
    operator's options for every call (None: the process defaults).
    """

    def __init__(self, local_loss: bool = False, gather_with_grad: bool = False,
                 cache_labels: bool = False, rank: int = 0, world_size: int = 1,
                 use_horovod: bool = False, *, mode: str = "gather", kernel_options: KernelOptions | None = None):
        super().__init__()
        if use_horovod:
            raise NotImplementedError("mmcl_fast.ClipLoss supports torch.distributed only, "
                                      "not horovod")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, "
                             f"world_size={world_size}")
        self.local_loss, self.gather_with_grad = bool(local_loss), bool(gather_with_grad)
        self.cache_labels, self.rank, self.world_size = cache_labels, rank, world_size
        if mode not in mdist.MODES:
            raise ValueError(f"`mode` must be one of {mdist.MODES}, got {mode!r}")
        if mode == "ring" and local_loss and not gather_with_grad:
            raise ValueError("mode='ring' with local_loss=True needs gather_with_grad=True: without it each "
                             "rank's loss reaches only its own features, which the ring does not compute")
        self.mode = mode
        self.kernel_options = checked(kernel_options)

    def _check_world(self) -> None:
        w, r = mdist.world()
        if (w, r) != (self.world_size, self.rank):
            raise RuntimeError(f"ClipLoss was built for rank {self.rank} of {self.world_size} but "
                               f"torch.distributed reports rank {r} of {w} (initialise the "
                               "default process group first)")

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale,
                logit_bias: Tensor | float | None = None, output_dict: bool = False, *,
                ids: Tensor | None = None):
        check_pair(("image_features", "text_features"), image_features, text_features)
        if image_features.shape[0] != text_features.shape[0]:
            raise ValueError("image_features and text_features must hold the same number of "
                             f"pairs, got {image_features.shape[0]} and {text_features.shape[0]}")
        if self.world_size == 1:
            loss = symmetric_infonce(image_features, text_features, logit_scale=logit_scale,
                                     similarity="dot", ids=ids, kernel_options=self.kernel_options)
        else:
            loss = self._distributed(image_features, text_features, logit_scale, ids)
        if isinstance(logit_bias, Tensor) and logit_bias.requires_grad:
            loss = loss + (logit_bias * 0).sum()       # cancels; keeps a (zero) gradient path
        return {"contrastive_loss": loss} if output_dict else loss

    def _distributed(self, img: Tensor, txt: Tensor, logit_scale, ids: Tensor | None) -> Tensor:
        self._check_world()
        if not self.local_loss:
            return mdist.symmetric_infonce(img, txt, logit_scale=logit_scale, similarity="dot",
                                           ddp_scaling=self.gather_with_grad, ids=ids, mode=self.mode,
                                           kernel_options=self.kernel_options)
        if self.mode == "ring":
            return mdist.local_symmetric_infonce(img, txt, logit_scale=logit_scale, similarity="dot", ids=ids,
                                                 mode="ring", kernel_options=self.kernel_options)
        if value_checks(img.device, self.kernel_options):
            mdist.check_equal_batches(img.shape[0], img.device)
        if self.gather_with_grad:
            all_img, all_txt = mdist.gather_rows_with_grad(img), mdist.gather_rows_with_grad(txt)
        else:
            all_img, all_txt = mdist.all_gather_rows(img), mdist.all_gather_rows(txt)
        options = {"logit_scale": logit_scale, "similarity": "dot", "kernel_options": self.kernel_options}
        if ids is not None:
            ids = check_ids("ids", ids, img.shape[0], img.device)
            pair = (ids, mdist.all_gather_rows(ids))
            return (infonce(img, all_txt, ids=pair, **options) + infonce(txt, all_img, ids=pair, **options)) / 2
        n = img.shape[0]
        labels = torch.arange(n * self.rank, n * (self.rank + 1), device=img.device)
        per_image = infonce(img, all_txt, labels, **options)
        per_text = infonce(txt, all_img, labels, **options)
        return (per_image + per_text) / 2
