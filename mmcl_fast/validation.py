"""Argument validation shared by the losses, the modules, ClipLoss and the distributed loss.

Every check raises ``TypeError`` / ``ValueError`` naming the offending argument.

Shape, dtype and option checks always run: they read no tensor data. The data-dependent checks
read it, and on a GPU reading it means waiting for the device (a host synchronisation per call):

* the inputs hold no NaN or Inf (otherwise the loss is NaN);
* a tensor-valued scale (``logit_scale`` / ``temperature``) is positive and finite;
* ``infonce``'s labels lie in [0, N);
* every rank of a distributed loss has the same local batch size.

On CPU they always run: there they cost no synchronisation. On CUDA they run only when asked for,
with ``kernel_options=KernelOptions(checks=True)`` or the process default
(``mmcl_fast.set_checks(True)``, ``MMCL_FAST_CHECKS=1``; see :mod:`mmcl_fast.options`). Otherwise a
CUDA call queues its kernels and returns without waiting, and CUDA-graph capture is possible. As
in PyTorch itself, a NaN input then propagates to the loss.
"""
from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

from .options import KernelOptions, value_checks

SIMILARITIES = ("cosine", "dot", "euclidean", "l1")
REDUCTIONS = ("mean", "sum", "none")


def check_features(name: str, t) -> None:
    """``t`` is a non-empty 2-D floating-point (batch, dim) tensor."""
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


def check_pair(names: tuple[str, str], a, b) -> None:
    """Two feature batches with the same feature dimension, dtype and device."""
    check_features(names[0], a)
    check_features(names[1], b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"`{names[0]}` and `{names[1]}` must have the same feature dimension, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise TypeError(f"`{names[0]}` and `{names[1]}` must have the same dtype, got {a.dtype} "
                        f"and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"`{names[0]}` and `{names[1]}` must be on the same device, got "
                         f"{a.device} and {b.device}")


def check_options(similarity: str, reduction: str) -> None:
    if similarity not in SIMILARITIES:
        raise ValueError(f"`similarity` must be one of {SIMILARITIES}, got {similarity!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}")


def loss_scale(temperature, logit_scale, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The 0-dim scale tensor s = 1 / temperature or s = logit_scale fed to the operator, in
    ``dtype`` on ``device`` (differentiable when a tensor argument is). A Python number is checked
    here (positive, finite); a tensor's value is checked by the operator, without a host sync on
    CUDA unless the data-dependent checks are on."""
    if (temperature is None) == (logit_scale is None):
        raise ValueError("give exactly one of `temperature` and `logit_scale`")
    if temperature is not None:
        if isinstance(temperature, Tensor):
            if temperature.numel() != 1:
                raise ValueError(f"`temperature` must be a scalar, got shape {tuple(temperature.shape)}")
            return 1.0 / temperature.reshape(()).to(device=device, dtype=dtype)
        if not isinstance(temperature, Real) or not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"`temperature` must be a positive finite number, got {temperature!r}")
        return torch.full((), 1.0 / float(temperature), dtype=dtype, device=device)
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise ValueError("`logit_scale` must be a 0-dim or 1-element tensor, got shape "
                             f"{tuple(logit_scale.shape)}")
        if not logit_scale.is_floating_point():
            raise TypeError(f"`logit_scale` must be floating point, got {logit_scale.dtype}")
        return logit_scale.reshape(()).to(device=device, dtype=dtype)
    if not isinstance(logit_scale, Real) or not math.isfinite(logit_scale) or logit_scale <= 0:
        raise ValueError(f"`logit_scale` must be a positive finite number, got {logit_scale!r}")
    return torch.full((), float(logit_scale), dtype=dtype, device=device)


def check_labels(labels, m: int, n: int, device: torch.device,
                 kernel_options: KernelOptions | None = None) -> None:
    """``infonce``'s labels: int32/int64, shape [m], on ``device``, values in [0, n) (the last
    one read from the data, so data-dependent)."""
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != m:
        raise ValueError(f"`labels` must be a 1-D tensor with one entry per query ({m})")
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"`labels` must be an integer tensor, got {labels.dtype}")
    if labels.device != device:
        raise ValueError(f"`labels` is on {labels.device} but `query` on {device}")
    if (value_checks(labels.device, kernel_options) and not torch.compiler.is_compiling()
            and bool(((labels < 0) | (labels >= n)).any())):
        raise ValueError(f"`labels` must lie in [0, {n})")


def check_finite_number(name: str, v) -> None:
    if not isinstance(v, Real) or not math.isfinite(v):
        raise ValueError(f"`{name}` must be a finite number, got {v!r}")
