"""Per-call kernel options: the data-dependent checks, deterministic CUDA kernels, the CUDA math path.

Every loss, module and ``ClipLoss`` takes ``kernel_options=KernelOptions(...)``; ``None`` (the
default) means the process defaults, :func:`defaults`. The options travel to the operator as
arguments (``lse_fwd(..., checks, deterministic, math_path)``); the C++ side reads no environment.

The environment variables ``MMCL_FAST_CHECKS=1``, ``MMCL_FAST_DETERMINISTIC=1`` and
``MMCL_FAST_CUDA_PATH=simt|tc|auto`` set the process defaults once, when this module is imported;
:func:`set_defaults` (and :func:`set_checks`) change them later without touching ``os.environ``.
"""
from __future__ import annotations

import dataclasses
import os

import torch

MATH_PATHS = ("auto", "simt", "tc")


@dataclasses.dataclass(frozen=True)
class KernelOptions:
    """How the operator runs (none of these change the value of a loss beyond rounding).

    * ``checks``: run the data-dependent checks on CUDA tensors too: NaN/Inf inputs, a tensor
      scale that is not positive and finite, ``infonce`` labels outside [0, N), uneven local
      batches across ranks. They read tensor data, which on a GPU waits for the device; on CPU
      they always run, whatever this says.
    * ``deterministic``: CUDA column LSEs by a second pass instead of an atomic merge (bitwise
      repeatable). ``torch.use_deterministic_algorithms(True)`` turns it on too. The CPU kernel is
      deterministic for a fixed thread count either way.
    * ``cuda_math_path``: ``"auto"`` (tensor cores for float16/bfloat16, and for float32 as TF32
      only when ``torch.backends.cuda.matmul.allow_tf32`` is set), ``"simt"`` (CUDA cores) or
      ``"tc"`` (tensor cores, TF32 for float32). l1 always runs on the CUDA cores.
    """

    checks: bool = False
    deterministic: bool = False
    cuda_math_path: str = "auto"

    def __post_init__(self):
        for name in ("checks", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be a bool, got {getattr(self, name)!r}")
        if self.cuda_math_path not in MATH_PATHS:
            raise ValueError(f"`cuda_math_path` must be one of {MATH_PATHS}, got {self.cuda_math_path!r}")

    def op_arguments(self) -> tuple[bool, bool, str]:
        """(checks, deterministic, math_path): the operator's last three arguments."""
        return self.checks, self.deterministic, self.cuda_math_path


def _flag(name: str) -> bool:
    value = os.environ.get(name, "0")
    if value not in ("0", "1", ""):
        raise ValueError(f"{name} must be 0 or 1, got {value!r}")
    return value == "1"


def _from_environment() -> KernelOptions:
    path = os.environ.get("MMCL_FAST_CUDA_PATH") or "auto"
    if path not in MATH_PATHS:
        raise ValueError(f"MMCL_FAST_CUDA_PATH must be one of {MATH_PATHS}, got {path!r}")
    return KernelOptions(checks=_flag("MMCL_FAST_CHECKS"), deterministic=_flag("MMCL_FAST_DETERMINISTIC"),
                         cuda_math_path=path)


_defaults = _from_environment()


def defaults() -> KernelOptions:
    """The options a call without ``kernel_options`` uses."""
    return _defaults


def set_defaults(**changes) -> KernelOptions:
    """Change the process defaults (fields of :class:`KernelOptions`); returns the previous ones."""
    global _defaults
    previous = _defaults
    unknown = set(changes) - {f.name for f in dataclasses.fields(KernelOptions)}
    if unknown:
        raise TypeError(f"unknown kernel options {sorted(unknown)}")
    _defaults = dataclasses.replace(_defaults, **changes)
    return previous


def set_checks(enabled: bool) -> None:
    """Turn the data-dependent checks on or off for CUDA tensors by default (CPU always checks)."""
    set_defaults(checks=bool(enabled))


def checked(kernel_options: KernelOptions | None) -> KernelOptions | None:
    """``kernel_options`` as given (None stays None: the defaults of each call), after checking its
    type; for modules that store the options of every call."""
    if kernel_options is not None and not isinstance(kernel_options, KernelOptions):
        raise TypeError(f"`kernel_options` must be a mmcl_fast.KernelOptions or None, got "
                        f"{type(kernel_options).__name__}")
    return kernel_options


def resolve(kernel_options: KernelOptions | None) -> KernelOptions:
    """``kernel_options``, or the process defaults when it is None."""
    return _defaults if checked(kernel_options) is None else kernel_options


def value_checks(device: torch.device, kernel_options: KernelOptions | None = None) -> bool:
    """Whether the data-dependent checks run for tensors on ``device``."""
    return device.type == "cpu" or resolve(kernel_options).checks
