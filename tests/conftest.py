import os

# One in-process compile thread: inductor's worker pool would otherwise compete with the
# subprocess tests for the CI machine's two cores.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, max_examples=int(os.environ.get("MMCL_FAST_EXAMPLES", "40")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("default")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
device_params = pytest.mark.parametrize(
    "device", [pytest.param(d, marks=pytest.mark.cuda) if d == "cuda" else d for d in DEVICES])


def rel_err(out, ref, floor=1e-6):
    """Norm-wise relative error ||out - ref|| / max(||ref||, floor), computed in float64."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    return ((out - ref).norm() / max(ref.norm().item(), floor)).item()
