"""The CMake build: native library + dispatcher-level C++ test, and the nvcc compile check."""
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_cmake_build_and_native_test(tmp_path):
    build = tmp_path / "build"
    def run(*cmd):
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)

    cfg = run("cmake", "-S", ".", "-B", str(build), "-DCMAKE_BUILD_TYPE=Release")
    assert cfg.returncode == 0, cfg.stdout[-3000:] + cfg.stderr[-3000:]
    assert (build / "compile_commands.json").exists()
    if shutil.which("nvcc") and list((REPO / "csrc" / "cuda").glob("*.cu")):
        assert "compile-checking" in cfg.stdout
    bld = run("cmake", "--build", str(build), "-j2")
    assert bld.returncode == 0, bld.stdout[-5000:] + bld.stderr[-3000:]
    test = run("ctest", "--test-dir", str(build), "--output-on-failure")
    assert test.returncode == 0, test.stdout[-3000:]
