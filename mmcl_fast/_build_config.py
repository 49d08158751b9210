"""How the extension is built: the one list of C++ sources, the CPU flags and the source hash.

Read by setup.py, by the on-demand JIT build in ``mmcl_fast/_ops.py`` and by CMakeLists.txt (which
loads this file by path), so the three builds cannot drift apart. Standard library only: setup.py
and CMake load it without importing the ``mmcl_fast`` package.
"""
import hashlib
import os
from pathlib import Path

# Paths relative to the repository root.
OP_SOURCES = ("csrc/ops.cpp", "csrc/op_checks.cpp", "csrc/cpu/pairwise_lse_cpu.cpp",  # the TORCH_LIBRARY ops
              "csrc/cpu/operands_cpu.cpp", "csrc/cpu/runtime/worker_pool.cpp")
PYTHON_MODULE_SOURCES = ("csrc/python_module.cpp",)                      # the importable _C module
CUDA_SOURCES = ("csrc/cuda/pairwise_lse.cu", "csrc/cuda_launch.cpp")     # built when torch has CUDA
# The CUDA sources run on the CPU by the host emulator (csrc/cuda/emulation), as the test backend
# mmcl_fast_emu (tests/emulated_cuda.py): the kernels included as C++, the launcher, the checks.
EMULATED_CUDA_SOURCES = ("csrc/cuda/emulation/pairwise_lse_emulated.cpp", "csrc/cuda/emulation/cuda_emulation.cpp",
                         "csrc/cuda_launch.cpp", "csrc/op_checks.cpp", "csrc/cuda/emulation/emulated_ops.cpp")
EMULATED_CUDA_FLAGS = ("-DMMCL_FAST_CUDA_EMULATION", "-std=c++20", "-O2", "-Wall", "-Wextra")
EMULATED_CUDA_INCLUDES = ("csrc", "csrc/cuda/emulation/include")
_HASHED_SUFFIXES = (".cpp", ".h", ".cu", ".cuh")


def _cpu_has(*features: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return all(feat in have for feat in features)
    except OSError:
        pass
    return False


def cpu_compile_flags() -> list[str]:
    """AVX2+FMA code paths of ATen's at::vec when the build machine has them.

    The extension is compiled on the machine that runs it (pip builds from source), so targeting
    the build host is safe; set MMCL_FAST_GENERIC_CPU=1 for a portable build.
    """
    if os.environ.get("MMCL_FAST_GENERIC_CPU", "0") == "1":
        return []
    if _cpu_has("avx2", "fma"):
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    return []


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
