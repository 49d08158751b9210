"""``nn.Module`` wrappers that own the temperature: fixed, or a learnable clamped log-scale."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import distributed as mdist
from .losses import nt_xent, symmetric_infonce
from .options import KernelOptions, checked
from .validation import check_options


class _ScaledLoss(nn.Module):
    """Holds log s (s = 1 / temperature): a buffer, or a Parameter when ``learnable``.

    The scale used is ``s = exp(clamp(log_s, log(1 / max_temperature), log(max_scale)))``: the
    clamp bounds s to [1 / max_temperature, max_scale] (CLIP: max_scale 100); outside the bounds
    the log-scale receives no gradient. ``kernel_options`` (:class:`mmcl_fast.KernelOptions`)
    is passed to every call of the loss (None: the process defaults).
    """

    def __init__(self, temperature: float, learnable: bool, similarity: str, reduction: str,
                 max_scale: float, max_temperature: float, kernel_options: KernelOptions | None):
        super().__init__()
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
                and temperature > 0):
            raise ValueError(f"`temperature` must be a positive finite number, got {temperature!r}")
        if not 0 < 1 / max_temperature <= max_scale:
            raise ValueError("need 0 < 1 / max_temperature <= max_scale, got max_temperature="
                             f"{max_temperature}, max_scale={max_scale}")
        check_options(similarity, reduction)
        log_s = torch.tensor(-math.log(temperature), dtype=torch.float32)
        if learnable:
            self.log_scale = nn.Parameter(log_s)
        else:
            self.register_buffer("log_scale", log_s)
        self.similarity, self.reduction = similarity, reduction
        self.log_bounds = (-math.log(max_temperature), math.log(max_scale))
        self.kernel_options = checked(kernel_options)

    def scale(self) -> Tensor:
        """The clamped, exponentiated scale s = 1 / temperature (0-dim float32 tensor)."""
        return self.log_scale.clamp(*self.log_bounds).exp()

    @property
    def temperature(self) -> float:
        return 1.0 / float(self.scale().detach())

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature:.4g}, similarity={self.similarity!r}, "
                f"learnable={isinstance(self.log_scale, nn.Parameter)}")


class SymmetricInfoNCE(_ScaledLoss):
    r"""Module form of :func:`mmcl_fast.symmetric_infonce` (the CLIP loss) with its own scale.

        loss = mean_i 1/2 [ -L_ii + log sum_j exp(L_ij) ] + 1/2 [ -L_ii + log sum_j exp(L_ji) ],
        L_ij = s * sim(a_i, b_j),  s = 1 / temperature (learnable and clamped if asked).

    ``gather_distributed=True``: when torch.distributed runs with W > 1 ranks, the loss is the
    global one over all ranks' pairs (:func:`mmcl_fast.distributed.symmetric_infonce`, gradients
    scaled for DDP averaging; needs reduction "mean").
    """

    def __init__(self, temperature: float = 0.07, learnable: bool = False,
                 similarity: str = "cosine", reduction: str = "mean", max_scale: float = 100.0,
                 max_temperature: float = 100.0, gather_distributed: bool = False, *,
                 kernel_options: KernelOptions | None = None):
        super().__init__(temperature, learnable, similarity, reduction, max_scale,
                         max_temperature, kernel_options)
        if gather_distributed and reduction != "mean":
            raise ValueError("gather_distributed supports reduction='mean' only")
        self.gather_distributed = gather_distributed

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        s = self.scale()
        if self.gather_distributed and mdist.world()[0] > 1:
            return mdist.symmetric_infonce(a, b, logit_scale=s, similarity=self.similarity,
                                           kernel_options=self.kernel_options)
        return symmetric_infonce(a, b, logit_scale=s, similarity=self.similarity,
                                 reduction=self.reduction, kernel_options=self.kernel_options)


class NTXent(_ScaledLoss):
    r"""Module form of :func:`mmcl_fast.nt_xent` (SimCLR) with its own scale.

        loss_k = -L_{k, p(k)} + log sum_{j != k} exp(L_kj) over z = cat(a, b),
        L_kj = s * sim(z_k, z_j),  p(k) the other view of sample k.
    """

    def __init__(self, temperature: float = 0.1, learnable: bool = False,
                 similarity: str = "cosine", reduction: str = "mean", max_scale: float = 100.0,
                 max_temperature: float = 100.0, *, kernel_options: KernelOptions | None = None):
        super().__init__(temperature, learnable, similarity, reduction, max_scale,
                         max_temperature, kernel_options)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return nt_xent(a, b, logit_scale=self.scale(), similarity=self.similarity,
                       reduction=self.reduction, kernel_options=self.kernel_options)
