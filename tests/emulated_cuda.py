"""The host-emulated CUDA backend for the tests: csrc/cuda compiled as C++ against the emulator of
csrc/cuda/emulation and registered as ``torch.ops.mmcl_fast_emu`` for CPU tensors.

``load()`` builds it once into ``build/emulated-cuda-<source hash>/`` of the checkout (torch's JIT
extension build, ~20 s on 2 cores), so that the fast and the full test lanes share one build; a
change to csrc/ gives a new directory, and a lock left there by a killed build is removed.
``cpu_ops_run_emulated_cuda()`` routes ``mmcl_fast``'s operators on CPU tensors through it, so
the public losses, their autograd and the launcher's checks all run the CUDA source.
"""
import contextlib
import warnings
from pathlib import Path

import torch
from torch.utils.cpp_extension import load as load_extension

from mmcl_fast import _build_config as build_config
from mmcl_fast import _ops

REPO = Path(__file__).resolve().parent.parent

_module = None


def load():
    """The compiled emulated backend (a Python module with the emulator's controls)."""
    global _module
    if _module is None:
        directory = REPO / "build" / f"emulated-cuda-{build_config.source_hash(REPO)}"
        directory.mkdir(parents=True, exist_ok=True)
        _ops.wait_for_build_lock(directory)
        _module = load_extension(
            name="mmcl_fast_C_emu",
            sources=[str(REPO / s) for s in build_config.EMULATED_CUDA_SOURCES],
            extra_cflags=list(build_config.EMULATED_CUDA_FLAGS),
            extra_include_paths=[str(REPO / d) for d in build_config.EMULATED_CUDA_INCLUDES],
            build_directory=str(directory), verbose=False)
    return _module


@contextlib.contextmanager
def cpu_ops_run_emulated_cuda(concurrent_blocks: int = 1):
    """Within the block, ``torch.ops.mmcl_fast``'s lse, label and softplus pairs on CPU tensors run the emulated
    CUDA implementation (half-precision inputs included); ``concurrent_blocks`` blocks run at once."""
    module = load()
    _ops.load_backend()
    lib = torch.library.Library("mmcl_fast", "IMPL")
    previous_blocks = module.concurrent_blocks()
    module.set_concurrent_blocks(concurrent_blocks)
    native_half, in_tile = _ops.native_half_precision, _ops.positives_in_tile
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="(?s).*Overriding a previously registered kernel")
            lib.impl("lse_fwd", torch.ops.mmcl_fast_emu.lse_fwd.default, "CPU")
            lib.impl("lse_bwd", torch.ops.mmcl_fast_emu.lse_bwd.default, "CPU")
            lib.impl("label_lse_fwd", torch.ops.mmcl_fast_emu.label_lse_fwd.default, "CPU")
            lib.impl("label_lse_bwd", torch.ops.mmcl_fast_emu.label_lse_bwd.default, "CPU")
            lib.impl("softplus_fwd", torch.ops.mmcl_fast_emu.softplus_fwd.default, "CPU")
            lib.impl("softplus_bwd", torch.ops.mmcl_fast_emu.softplus_bwd.default, "CPU")
            lib.impl("softplus_total", torch.ops.mmcl_fast_emu.softplus_total.default, "CPU")
            lib.impl("label_softplus_fwd", torch.ops.mmcl_fast_emu.label_softplus_fwd.default, "CPU")
            lib.impl("label_softplus_bwd", torch.ops.mmcl_fast_emu.label_softplus_bwd.default, "CPU")
            lib.impl("label_softplus_total", torch.ops.mmcl_fast_emu.label_softplus_total.default, "CPU")
        _ops.native_half_precision = lambda device: device.type in ("cpu", "cuda")
        _ops.positives_in_tile = lambda device: False  # the losses call the lse pair, as on CUDA
        yield module
    finally:
        _ops.native_half_precision, _ops.positives_in_tile = native_half, in_tile
        module.set_concurrent_blocks(previous_blocks)
        lib._destroy()
