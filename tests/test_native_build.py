"""The CMake build: the dispatcher-level C++ test of the installed extension's ops, the emulated
CUDA kernels with their sanitizer and mutation tests, the nvcc compile check, and the launcher's
compile check against CUDA torch headers."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmcl_fast import backend_info

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "native"))
import torch_cuda_headers  # noqa: E402

EMULATED_CTESTS = ("emulated_kernels_tsan", "emulated_kernels_asan",
                   "emulated_tsan_sees_missing_syncthreads", "emulated_tsan_sees_missing_syncwarp",
                   "emulated_tsan_sees_missing_syncthreads_tc", "emulated_asan_sees_overrun",
                   "emulated_fibers_see_missing_syncthreads", "emulated_fibers_see_missing_syncthreads_tc",
                   "emulated_fibers_stop_a_deadlock",
                   "emulated_wmma", "emulated_wmma_refuses_misaligned", "emulated_wmma_refuses_divergent",
                   "emulated_wmma_layout_is_opaque")


def _run(*cmd):
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)


def _configure(build: Path, *options: str):
    """cmake's configure step with the interpreter running these tests (not the first python3 on
    PATH, which may lack torch when the venv is not activated)."""
    return _run("cmake", "-S", ".", "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}", *options)


@pytest.fixture(scope="module")
def cmake_tree(tmp_path_factory):
    """One configured CMake tree for both tests (configuring finds torch and probes nvcc: ~10 s).
    With a CUDA torch wheel and the CUDA toolkit headers on this machine, the tree also holds the
    launcher compile check (target mmcl_fast_launcher_check, built only when asked for)."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    root = tmp_path_factory.mktemp("cmake")
    wheel, toolkit = torch_cuda_headers.find_cuda_wheel(), torch_cuda_headers.cuda_toolkit_include()
    launcher = []
    if wheel is not None and toolkit is not None:
        dirs = torch_cuda_headers.pinned_headers(root / "headers", wheel, toolkit)
        launcher = [f"-DMMCL_FAST_TORCH_CUDA_INCLUDE={';'.join(dirs)}"]
    build = root / "build"
    # the native test loads the installed extension: the op sources are compiled once per test run
    extension = backend_info()["extension"]
    ops = [f"-DMMCL_FAST_OPS_LIBRARY={extension}"] if extension else []
    cfg = _configure(build, "-DCMAKE_BUILD_TYPE=Release", *ops, *launcher)
    return build, cfg, (wheel, toolkit)


@pytest.mark.slow
def test_cmake_build_native_and_emulated_tests(cmake_tree):
    build, cfg, _ = cmake_tree
    assert cfg.returncode == 0, cfg.stdout[-3000:] + cfg.stderr[-3000:]
    assert (build / "compile_commands.json").exists()
    assert "the native test loads" in cfg.stdout or backend_info()["extension"] is None
    if shutil.which("nvcc") and list((REPO / "csrc" / "cuda").glob("*.cu")):
        assert "compile-checking" in cfg.stdout
    bld = _run("cmake", "--build", str(build), "-j2")
    assert bld.returncode == 0, bld.stdout[-5000:] + bld.stderr[-3000:]
    test = _run("ctest", "--test-dir", str(build), "--output-on-failure", "-j2")
    assert test.returncode == 0, test.stdout[-3000:]
    for name in ("native_ops", *EMULATED_CTESTS):  # each one ran and passed
        assert any(f" {name} " in line and "Passed" in line for line in test.stdout.splitlines()), \
            (name, test.stdout[-3000:])


@pytest.mark.slow
def test_cuda_launcher_compiles_against_cuda_torch_headers(cmake_tree):
    """csrc/cuda_launch.cpp and ops.cpp's CUDA registration, compiled -Wall -Wextra -Werror against
    the pinned torch's c10/cuda and ATen headers (plus the one header a CUDA build generates)."""
    build, cfg, (wheel, toolkit) = cmake_tree
    if wheel is None or toolkit is None:
        pytest.skip(f"needs a CUDA torch wheel ({wheel}) and the CUDA toolkit headers ({toolkit})")
    assert cfg.returncode == 0 and "compile-checking the CUDA launcher" in cfg.stdout, cfg.stdout[-3000:]
    bld = _run("cmake", "--build", str(build), "--target", "mmcl_fast_launcher_check", "-j2")
    assert bld.returncode == 0, bld.stdout[-5000:] + bld.stderr[-3000:]
