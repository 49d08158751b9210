"""The loss library stands alone: torch is its only run-time dependency.

A fresh venv gets torch and the packages torch itself requires (symlinked from this interpreter's
site-packages) and nothing else; the checkout's ``mmcl_fast`` (with its built ``_C``) is put on
``PYTHONPATH``. The experiments' dependencies (numpy, scikit-learn, ...) are absent there.
"""
import importlib.metadata as metadata
import json
import os
import re
import subprocess
import venv

import pytest

from conftest import REPO


def _torch_and_its_requirements():
    todo, seen = ["torch"], {}
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:  # a requirement behind a marker that does not apply
            continue
        seen[key] = dist
        todo += [re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0] for req in dist.requires or []
                 if "extra ==" not in req]
    return list(seen.values())


@pytest.mark.slow
def test_import_and_loss_in_a_venv_holding_only_torch(tmp_path):
    venv.create(tmp_path / "venv", with_pip=False)
    site = next((tmp_path / "venv" / "lib").glob("python*/site-packages"))
    for dist in _torch_and_its_requirements():
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            target = dist.locate_file(top)
            if os.path.exists(target) and not (site / top).exists():
                (site / top).symlink_to(target)
    code = """
        import importlib.util, json, sys, torch
        import mmcl_fast
        a, b = torch.randn(16, 8, requires_grad=True), torch.randn(16, 8)
        loss = mmcl_fast.ClipLoss()(a, b, torch.tensor(10.0))
        loss.backward()
        extras = ["numpy", "sklearn", "scipy", "matplotlib", "tqdm"]
        print(json.dumps({"backend": mmcl_fast.backend_info()["backend"], "finite": bool(a.grad.isfinite().all()),
                          "importable": [m for m in extras if importlib.util.find_spec(m)],
                          "loaded": sorted({m.split(".")[0] for m in sys.modules} & set(extras))}))
    """
    python = tmp_path / "venv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run([str(python), "-W", "ignore", "-c", "\n".join(line[8:] for line in code.splitlines())],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**env, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"backend": "compiled", "finite": True, "importable": [], "loaded": []}, res
