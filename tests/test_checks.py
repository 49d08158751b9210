"""Data-dependent checks: where they run (mmcl_fast/checks.py) and that the CPU loss path's Python
layer never reads tensor data back (no aten::_local_scalar_dense)."""
import os

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import mmcl_fast as mf
from mmcl_fast.checks import value_checks


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def test_loss_call_reads_no_tensor_data_from_python():
    a = torch.randn(40, 8, requires_grad=True)
    b = torch.randn(40, 8, requires_grad=True)
    scale = torch.tensor(10.0, requires_grad=True)
    for loss_fn in (mf.symmetric_infonce, mf.nt_xent):
        with _OpRecorder() as rec:
            loss_fn(a, b, logit_scale=scale).backward()
        assert rec.names, "the recorder saw no ops"
        assert not [n for n in rec.names if "_local_scalar_dense" in n or n.startswith("aten.item")], rec.names


def test_value_checks_always_on_cpu_and_opt_in_elsewhere(monkeypatch):
    monkeypatch.delenv("MMCL_FAST_CHECKS", raising=False)
    assert value_checks(torch.device("cpu")) and not value_checks(torch.device("cuda"))
    mf.set_checks(True)
    try:
        assert os.environ["MMCL_FAST_CHECKS"] == "1" and value_checks(torch.device("cuda"))
    finally:
        mf.set_checks(False)
    assert not value_checks(torch.device("cuda")) and value_checks(torch.device("cpu"))
