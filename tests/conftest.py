import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# An empty JIT cache for this session and every subprocess it starts: a hidden compile of the
# extension, or a lock left by an earlier build, cannot be masked by a warm ~/.cache.
os.environ["TORCH_EXTENSIONS_DIR"] = tempfile.mkdtemp(prefix="mmcl_fast_test_jit_")
# Likewise a fresh torch.compile cache: a cached backward graph could call the ops with the
# schema of an earlier build.
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="mmcl_fast_test_inductor_")

# The interpreter's scripts directory first on PATH: where pip put ninja (torch's JIT builds run
# `ninja`) and the mmcl-fast command, so that `<venv>/bin/python -m pytest` works without
# activating the venv. (cmake gets the interpreter explicitly: tests/test_native_build.py.)
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

# One in-process compile thread: inductor's worker pool would otherwise compete with the
# subprocess tests for the CI machine's two cores.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import pytest  # noqa: E402  (after the environment above)
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

settings.register_profile(
    "default", deadline=None, max_examples=int(os.environ.get("MMCL_FAST_EXAMPLES", "40")),
    # function-scoped fixtures that set a process state (cpu_isa below) hold for every example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
settings.load_profile("default")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
device_params = pytest.mark.parametrize(
    "device", [pytest.param(d, marks=pytest.mark.cuda) if d == "cuda" else d for d in DEVICES])


def _runnable_cpu_isas():
    import mmcl_fast as mf
    return mf.backend_info()["cpu_isas_runnable"] or [None]  # None: the Python backend, no copies


# Every ISA copy of the CPU kernels that this machine can run (tests/test_cpu_isa.py).
CPU_ISAS = _runnable_cpu_isas()
cpu_isa_params = pytest.mark.parametrize("cpu_isa", CPU_ISAS, indirect=True)


@pytest.fixture
def cpu_isa(request):
    """Runs the test on the CPU kernels' copy for request.param, then returns to the automatic choice."""
    import mmcl_fast as mf
    mf.force_cpu_isa(request.param)
    if request.param is not None:
        assert mf.backend_info()["cpu_isa"] == request.param
    yield request.param
    mf.force_cpu_isa(None)


class OpRecorder(TorchDispatchMode):
    """Records (op, args) of every operator called from Python inside ``with OpRecorder() as rec``
    (calls nested inside a C++ kernel are not seen)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, args))
        return func(*args, **(kwargs or {}))


def rel_err(out, ref, floor=1e-6):
    """Norm-wise relative error ||out - ref|| / max(||ref||, floor), computed in float64."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    return ((out - ref).norm() / max(ref.norm().item(), floor)).item()

def without_editable_finder(code: str) -> str:
    """``code`` run without the import hook of an editable install of this repository.

    For subprocesses that import a *copy* of the package: setuptools' ``__editable__`` finder would
    hand the copy this checkout's ``mmcl_fast._C``; without it, the copy sees what it would see
    next to a regular install.
    """
    return ("import sys; sys.meta_path = [f for f in sys.meta_path if '__editable__' not in str(f)]\n"
            + textwrap.dedent(code))


def run_python(code: str, env: dict | None = None, cwd=None, timeout=600) -> dict:
    """Run ``code`` in a fresh interpreter (from the repository root by default); it prints one
    JSON line last, which is returned parsed."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=timeout, env={**os.environ, **(env or {})},
                         cwd=REPO if cwd is None else cwd)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cuda_ready():
    from mmcl_fast import _ops
    return torch.cuda.is_available() and _ops.has_cuda_kernels()


@pytest.fixture(params=["emulated", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    """The device whose tensors reach the CUDA kernels (test_cuda*.py): "cpu" under the host
    emulator (two thread blocks at a time), or "cuda" on a GPU with the compiled kernels."""
    if request.param == "cuda":
        if not _cuda_ready():
            pytest.skip("needs a CUDA device and the compiled CUDA kernels")
        yield "cuda"
    else:
        import emulated_cuda
        with emulated_cuda.cpu_ops_run_emulated_cuda(concurrent_blocks=2):
            yield "cpu"
