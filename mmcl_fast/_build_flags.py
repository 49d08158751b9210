"""Compiler flags for the CPU kernels, shared by setup.py and the on-first-use JIT build."""
import os


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
