"""How the backend is found: the installed extension wins, nothing compiles unasked, no lock hangs.

Every subprocess here (and in the rest of the suite) inherits the empty TORCH_EXTENSIONS_DIR that
conftest.py sets, so a warm JIT cache cannot hide a hidden compile.
"""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmcl_fast import _build_config, _ops

from conftest import REPO, run_python, without_editable_finder


def test_import_chooses_no_backend_until_the_first_op_call():
    res = run_python("""
        import json, sys, torch
        import mmcl_fast as mf
        from mmcl_fast import _ops
        before = [_ops._state["backend"], "mmcl_fast._C" in sys.modules]
        mf.symmetric_infonce(torch.randn(4, 3), torch.randn(4, 3), temperature=0.5)
        print(json.dumps({"before": before, "after": _ops._state["backend"]}))
    """)
    assert res == {"before": [None, False], "after": "compiled"}


@pytest.mark.slow
@pytest.mark.parametrize("where", ["repository root", "elsewhere"])
def test_compiled_backend_wherever_python_starts(where, tmp_path):
    jit_root = tmp_path / "torch_extensions"
    jit_root.mkdir()
    res = run_python("""
        import json, mmcl_fast as mf
        info = mf.backend_info()
        print(json.dumps({"backend": info["backend"], "extension": info["extension"]}))
    """, cwd=REPO if where == "repository root" else tmp_path,
        env={"TORCH_EXTENSIONS_DIR": str(jit_root)})
    assert res["backend"] == "compiled", res
    assert list(jit_root.iterdir()) == [], "a JIT build was started"


def _compiled_extension() -> Path:
    return Path(_ops.backend_info()["extension"])


def test_checkout_without_a_build_loads_the_installed_extension(tmp_path):
    """`pip install .` (not editable) + a script started from the checkout's root: the checkout's
    package has no _C, so the one of the installed distribution is loaded, without compiling."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "mmcl_fast", checkout / "mmcl_fast",
                    ignore=shutil.ignore_patterns("_C*", "__pycache__"))
    shutil.copytree(REPO / "csrc", checkout / "csrc")
    site = tmp_path / "site"                          # a minimal installed distribution
    (site / "mmcl_fast").mkdir(parents=True)
    so = shutil.copy(_compiled_extension(), site / "mmcl_fast")
    info = site / "mmcl_fast-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mmcl-fast\nVersion: 0.1.0\n")
    (info / "RECORD").write_text(f"mmcl_fast/{Path(so).name},,\n")
    jit_root = tmp_path / "torch_extensions"
    res = run_python(without_editable_finder("""
        import json, warnings, mmcl_fast as mf
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            info = mf.backend_info()
        print(json.dumps({"package": mf.__file__, "backend": info["backend"],
                          "extension": info["extension"], "warnings": [str(x.message) for x in w]}))
    """), cwd=checkout, env={"PYTHONPATH": str(site), "TORCH_EXTENSIONS_DIR": str(jit_root)})
    assert res["package"].startswith(str(checkout)), res
    assert res["backend"] == "compiled" and res["extension"] == str(Path(so).resolve()), res
    assert res["warnings"] == [] and not jit_root.exists()


def test_a_build_from_other_sources_is_used_with_a_warning(tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "mmcl_fast", checkout / "mmcl_fast",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "csrc", checkout / "csrc")
    with open(checkout / "csrc" / "ops.cpp", "a") as f:
        f.write("// edited after the build\n")
    res = run_python("""
        import json, warnings, mmcl_fast as mf
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            backend = mf.backend_info()["backend"]
        print(json.dumps({"backend": backend, "warnings": [str(x.message) for x in w]}))
    """, cwd=checkout)
    assert res["backend"] == "compiled"
    assert len(res["warnings"]) == 1 and "built from other sources" in res["warnings"][0], res
    assert "pip install --no-build-isolation -e ." in res["warnings"][0]


def test_the_installed_build_matches_these_sources():
    assert _ops.backend_info()["source_hash"] == _build_config.source_hash(REPO)


@pytest.mark.slow
def test_an_unknown_or_unavailable_backend_request_raises(tmp_path):
    pkg = tmp_path / "mmcl_fast"                     # the package alone: no _C, no sources
    shutil.copytree(REPO / "mmcl_fast", pkg, ignore=shutil.ignore_patterns("_C*", "__pycache__"))
    for backend, message in (("compiled", "MMCL_FAST_BACKEND=compiled could not be loaded"),
                             ("jit", "no C++ sources"), ("gpu", "must be one of")):
        code = without_editable_finder("import mmcl_fast as mf; mf.backend_info()")
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "MMCL_FAST_BACKEND": backend,
                                  "PYTHONPATH": str(tmp_path)})
        assert out.returncode != 0 and message in out.stderr, (backend, out.stderr[-2000:])


def _plant_lock(directory: Path, age_s: float) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / "lock"
    lock.touch()
    os.utime(lock, (time.time() - age_s, time.time() - age_s))
    return lock


def test_a_stale_build_lock_is_removed_with_a_warning(tmp_path):
    lock = _plant_lock(tmp_path / "build", age_s=3600)
    start = time.monotonic()
    with pytest.warns(RuntimeWarning, match="removing the stale build lock"):
        _ops.wait_for_build_lock(tmp_path / "build", timeout=60)
    assert not lock.exists() and time.monotonic() - start < 5


def test_a_lock_held_by_a_live_build_is_waited_for_with_a_bound(tmp_path):
    directory = tmp_path / "build"
    lock = _plant_lock(directory, age_s=3600)
    worker = subprocess.Popen(["sleep", "60"], cwd=directory)     # a "compiler" working there
    try:
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=f"rm {lock}"):
            _ops.wait_for_build_lock(directory, timeout=1.5, poll=0.1)
        assert 1.5 <= time.monotonic() - start < 10 and lock.exists()
    finally:
        worker.kill()
        worker.wait()


def test_a_young_lock_is_not_taken_for_stale(tmp_path):
    lock = _plant_lock(tmp_path / "build", age_s=0)
    with pytest.raises(RuntimeError, match="waited 1 s for the build lock"):
        _ops.wait_for_build_lock(tmp_path / "build", timeout=1, poll=0.1)
    assert lock.exists()


@pytest.mark.slow
def test_a_jit_request_does_not_hang_on_a_held_lock(tmp_path):
    """End to end: MMCL_FAST_BACKEND=jit from the checkout with a lock in the build directory
    fails within seconds with the lock's path in the message instead of waiting forever."""
    lock = _plant_lock(tmp_path / f"py{sys.version_info.major}{sys.version_info.minor}_cpu"
                       / _ops.JIT_NAME, age_s=0)
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", "import mmcl_fast as mf; mf.backend_info()"],
                         cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "MMCL_FAST_BACKEND": "jit",
                              "TORCH_EXTENSIONS_DIR": str(tmp_path),
                              "MMCL_FAST_JIT_LOCK_TIMEOUT": "2"})
    assert out.returncode != 0 and str(lock) in out.stderr, out.stderr[-2000:]
    assert "compiling the C++ extension" in out.stderr
    assert time.monotonic() - start < 60


@pytest.mark.slow
def test_jit_build_on_request_after_a_killed_build(tmp_path):
    """MMCL_FAST_BACKEND=jit compiles the checkout's sources, past the lock a killed build left."""
    lock = _plant_lock(tmp_path / f"py{sys.version_info.major}{sys.version_info.minor}_cpu"
                       / _ops.JIT_NAME, age_s=3600)
    out = subprocess.run([sys.executable, "-c", """if True:
        import json, torch, mmcl_fast as mf
        from mmcl_fast import reference as ref
        a = torch.randn(20, 5, dtype=torch.float64); b = torch.randn(20, 5, dtype=torch.float64)
        err = abs(mf.symmetric_infonce(a, b, temperature=0.2).item()
                  - ref.symmetric_infonce(a, b, temperature=0.2).item())
        print(json.dumps({"backend": mf.backend_info()["backend"], "err": err}))
    """], cwd=REPO, capture_output=True, text=True, timeout=900,
        env={**os.environ, "MMCL_FAST_BACKEND": "jit", "TORCH_EXTENSIONS_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-4000:]
    assert '"backend": "jit"' in out.stdout and not lock.exists()
    assert "removing the stale build lock" in out.stderr and "compiling the C++ extension" in out.stderr
