"""How the extension is built: the one list of C++ sources and the source hash.

Read by setup.py, by the on-demand JIT build in ``mmcl_fast/_ops.py`` and by CMakeLists.txt (which
loads this file by path), so the three builds cannot drift apart. Standard library only: setup.py
and CMake load it without importing the ``mmcl_fast`` package.
"""
import hashlib
from pathlib import Path

# Paths relative to the repository root.
OP_SOURCES = ("csrc/ops.cpp", "csrc/op_checks.cpp",  # the TORCH_LIBRARY ops
              "csrc/cpu/pairwise_lse_cpu.cpp", "csrc/cpu/pairwise_softplus_cpu.cpp",
              "csrc/cpu/operands_cpu.cpp", "csrc/cpu/runtime/worker_pool.cpp",
              # the CPU engine once per ISA level, and the run-time choice between the copies
              "csrc/cpu/isa/kernels_default.cpp", "csrc/cpu/isa/kernels_avx2.cpp",
              "csrc/cpu/isa/kernels_avx512.cpp", "csrc/cpu/isa/cpu_isa.cpp")
PYTHON_MODULE_SOURCES = ("csrc/python_module.cpp",)                      # the importable _C module
CUDA_SOURCES = ("csrc/cuda/pairwise_lse.cu", "csrc/cuda_launch.cpp")     # built when torch has CUDA
# The CUDA sources run on the CPU by the host emulator (csrc/cuda/emulation), as the test backend
# mmcl_fast_emu (tests/emulated_cuda.py): the kernels included as C++, the launcher, the checks.
EMULATED_CUDA_SOURCES = ("csrc/cuda/emulation/pairwise_lse_emulated.cpp", "csrc/cuda/emulation/cuda_emulation.cpp",
                         "csrc/cuda_launch.cpp", "csrc/op_checks.cpp", "csrc/cuda/emulation/emulated_ops.cpp")
EMULATED_CUDA_FLAGS = ("-DMMCL_FAST_CUDA_EMULATION", "-std=c++20", "-O2", "-Wall", "-Wextra")
EMULATED_CUDA_INCLUDES = ("csrc", "csrc/cuda/emulation/include")
_HASHED_SUFFIXES = (".cpp", ".h", ".cu", ".cuh")


def source_hash(root) -> str:
    """First 16 hex digits of the SHA-256 over every C++/CUDA file under ``root/csrc``.

    Compiled into ``_C`` (``_C.source_hash``), so the loader can tell a build from other sources.
    """
    digest = hashlib.sha256()
    csrc = Path(root) / "csrc"
    for path in sorted(p for p in csrc.rglob("*") if p.suffix in _HASHED_SUFFIXES):
        digest.update(path.relative_to(csrc).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def source_hash_define(root) -> str:
    """The compiler flag that bakes :func:`source_hash` into the extension."""
    return f"-DMMCL_FAST_SOURCE_HASH={source_hash(root)}"
