"""Data-dependent checks and when they run.

Shape, dtype and option checks always run: they read no tensor data. The checks below read it,
and on a GPU reading it means waiting for the device (a host synchronisation per call):

* the inputs hold no NaN or Inf (otherwise the loss is NaN);
* a tensor-valued scale (``logit_scale`` / ``temperature``) is positive and finite;
* ``infonce``'s labels lie in [0, N);
* every rank of a distributed loss has the same local batch size.

On CPU they always run: there they cost no synchronisation. On CUDA they run only when asked for,
with ``MMCL_FAST_CHECKS=1`` or ``mmcl_fast.set_checks(True)``. Otherwise a CUDA call queues its
kernels and returns without waiting, and CUDA-graph capture is possible. As in PyTorch itself, a
NaN input then propagates to the loss.
"""
from __future__ import annotations

import os

import torch

ENV = "MMCL_FAST_CHECKS"


def set_checks(enabled: bool) -> None:
    """Turn the data-dependent checks on or off for CUDA tensors (CPU always checks).

    Sets ``MMCL_FAST_CHECKS``, which the compiled CUDA launcher reads at every call too.
    """
    os.environ[ENV] = "1" if enabled else "0"


def value_checks(device: torch.device) -> bool:
    """Whether the data-dependent checks run for tensors on ``device``."""
    return device.type == "cpu" or os.environ.get(ENV, "0") == "1"
