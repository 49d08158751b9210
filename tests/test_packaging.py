"""The source distribution builds a wheel that works outside this checkout, and the extension
refuses a torch other than the one it was compiled against."""
import json
import os
import subprocess
import sys
import tarfile

import pytest
import torch

from conftest import REPO, run_python, without_editable_finder


def _run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, **kw)
    assert out.returncode == 0, (cmd, out.stdout[-3000:], out.stderr[-3000:])
    return out


def _tracked(prefix):
    listing = _run(["git", "ls-files", prefix], cwd=REPO).stdout.split()
    return {p for p in listing if (REPO / p).exists()}


@pytest.mark.slow
def test_sdist_to_wheel_to_a_fresh_venv(tmp_path):
    """sdist (every tracked file under csrc/ inside) -> `pip wheel` from it, outside the checkout ->
    a new venv that sees only the system's torch -> a loss on the compiled backend, equal to the
    float64 reference."""
    if subprocess.run(["git", "-C", str(REPO), "rev-parse"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    sdist_dir, wheel_dir, work = tmp_path / "sdist", tmp_path / "wheel", tmp_path / "work"
    work.mkdir()
    _run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(sdist_dir)!r})"],
         cwd=REPO)
    (sdist,) = sdist_dir.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    missing = _tracked("csrc") - members
    assert not missing, f"the sdist lacks {sorted(missing)[:10]}"
    env = {**os.environ, "MAX_JOBS": "2"}
    _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(wheel_dir),
          str(sdist)], cwd=work, env=env)
    (wheel,) = wheel_dir.glob("*.whl")
    release = torch.__version__.split("+")[0]
    assert f"+torch{release}-" in wheel.name, wheel.name  # the name says which torch it is for
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], cwd=work)
    code = without_editable_finder("""
        import json, torch, mmcl_fast as mf
        from mmcl_fast import reference
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(70, 9, generator=g), torch.randn(70, 9, generator=g)
        got = mf.symmetric_infonce(a, b, temperature=0.3).item()
        want = reference.symmetric_infonce(a.double(), b.double(), temperature=0.3).item()
        info = mf.backend_info()
        print(json.dumps({"file": mf.__file__, "backend": info["backend"], "isa": info["cpu_isa"],
                          "rel_err": abs(got - want) / abs(want)}))
    """)
    out = _run([str(python), "-c", code], cwd=work, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["file"].startswith(str(venv)), res
    assert res["backend"] == "compiled", res
    assert res["rel_err"] < 1e-5, res


def test_a_different_torch_release_is_refused_with_a_clear_error():
    """The extension records the torch release it was compiled against; another one at load time
    raises instead of running on a mismatched C++ ABI (simulated by changing torch.__version__
    before the first op call)."""
    res = run_python("""
        import json, torch
        import mmcl_fast as mf
        torch.__version__ = "9.9.0+cpu"
        try:
            mf.backend_info()
            print(json.dumps({"raised": None}))
        except mf.TorchMismatchError as exc:
            print(json.dumps({"raised": str(exc)}))
    """)
    assert res["raised"] is not None, "a torch 9.9.0 process used the extension"
    assert "built against torch 2." in res["raised"] and "runs torch 9.9.0" in res["raised"], res
