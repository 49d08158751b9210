"""The CMake build: native library + dispatcher-level C++ test, the emulated CUDA kernels with
their sanitizer and mutation tests, the nvcc compile check, and the launcher's compile check
against CUDA torch headers."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "native"))
import background  # noqa: E402
import torch_cuda_headers  # noqa: E402

EMULATED_CTESTS = ("emulated_kernels", "emulated_kernels_tsan", "emulated_kernels_asan",
                   "emulated_tsan_sees_missing_syncthreads", "emulated_tsan_sees_missing_syncwarp",
                   "emulated_asan_sees_overrun", "emulated_tsan_sees_missing_syncthreads_tc", "emulated_wmma",
                   "emulated_wmma_refuses_misaligned", "emulated_wmma_refuses_divergent",
                   "emulated_wmma_layout_is_opaque")


def _run(*cmd):
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)


def _configure(build: Path, *options: str):
    """cmake's configure step with the interpreter running these tests (not the first python3 on
    PATH, which may lack torch when the venv is not activated)."""
    return _run("cmake", "-S", ".", "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}", *options)


@background.job
def cmake_build(scratch: Path) -> dict | None:
    """Configure (finding torch and probing nvcc), build with -j2, run ctest, and build the launcher
    compile check when a CUDA torch wheel and the CUDA toolkit headers are on this machine.
    None without cmake; otherwise each step's CompletedProcess (missing after a failed step)."""
    if shutil.which("cmake") is None:
        return None
    wheel, toolkit = torch_cuda_headers.find_cuda_wheel(), torch_cuda_headers.cuda_toolkit_include()
    launcher = []
    if wheel is not None and toolkit is not None:
        dirs = torch_cuda_headers.pinned_headers(scratch / "headers", wheel, toolkit)
        launcher = [f"-DMMCL_FAST_TORCH_CUDA_INCLUDE={';'.join(dirs)}"]
    build = scratch / "build"
    out = {"dir": build, "toolchain": (wheel, toolkit),
           "cfg": _configure(build, "-DCMAKE_BUILD_TYPE=Release", *launcher)}
    if out["cfg"].returncode != 0:
        return out
    out["build"] = _run("cmake", "--build", str(build), "-j2")
    if out["build"].returncode == 0:
        out["ctest"] = _run("ctest", "--test-dir", str(build), "--output-on-failure", "-j2")
    if launcher:
        out["launcher"] = _run("cmake", "--build", str(build), "--target", "mmcl_fast_launcher_check", "-j2")
    return out


def _cmake_results() -> dict:
    res = background.result("cmake_build")
    if res is None:
        pytest.skip("cmake not installed")
    assert res["cfg"].returncode == 0, res["cfg"].stdout[-3000:] + res["cfg"].stderr[-3000:]
    return res


@pytest.mark.slow
@pytest.mark.background("cmake_build")
def test_cmake_build_native_and_emulated_tests():
    res = _cmake_results()
    assert (res["dir"] / "compile_commands.json").exists()
    if shutil.which("nvcc") and list((REPO / "csrc" / "cuda").glob("*.cu")):
        assert "compile-checking" in res["cfg"].stdout
    bld = res["build"]
    assert bld.returncode == 0, bld.stdout[-5000:] + bld.stderr[-3000:]
    test = res["ctest"]
    assert test.returncode == 0, test.stdout[-3000:]
    for name in ("native_ops", *EMULATED_CTESTS):  # each one ran and passed
        assert any(f" {name} " in line and "Passed" in line for line in test.stdout.splitlines()), \
            (name, test.stdout[-3000:])


@pytest.mark.slow
@pytest.mark.background("cmake_build")
def test_cuda_launcher_compiles_against_cuda_torch_headers():
    """csrc/cuda_launch.cpp and ops.cpp's CUDA registration, compiled -Wall -Wextra -Werror against
    the pinned torch's c10/cuda and ATen headers (plus the one header a CUDA build generates)."""
    res = _cmake_results()
    wheel, toolkit = res["toolchain"]
    if wheel is None or toolkit is None:
        pytest.skip(f"needs a CUDA torch wheel ({wheel}) and the CUDA toolkit headers ({toolkit})")
    assert "compile-checking the CUDA launcher" in res["cfg"].stdout, res["cfg"].stdout[-3000:]
    bld = res["launcher"]
    assert bld.returncode == 0, bld.stdout[-5000:] + bld.stderr[-3000:]
