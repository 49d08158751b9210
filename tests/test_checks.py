"""Data-dependent checks: where they run (mmcl_fast/validation.py) and that the CPU loss path's Python
layer never reads tensor data back (no aten::_local_scalar_dense)."""
import os

import torch

import mmcl_fast as mf
from mmcl_fast.validation import value_checks

from conftest import OpRecorder


def test_loss_call_reads_no_tensor_data_from_python():
    a = torch.randn(40, 8, requires_grad=True)
    b = torch.randn(40, 8, requires_grad=True)
    scale = torch.tensor(10.0, requires_grad=True)
    for loss_fn in (mf.symmetric_infonce, mf.nt_xent):
        with OpRecorder() as rec:
            loss_fn(a, b, logit_scale=scale).backward()
        names = [str(func) for func, _ in rec.calls]
        assert names, "the recorder saw no ops"
        assert not [n for n in names if "_local_scalar_dense" in n or n.startswith("aten.item")], names


def test_value_checks_always_on_cpu_and_opt_in_elsewhere(monkeypatch):
    monkeypatch.delenv("MMCL_FAST_CHECKS", raising=False)
    assert value_checks(torch.device("cpu")) and not value_checks(torch.device("cuda"))
    mf.set_checks(True)
    try:
        assert os.environ["MMCL_FAST_CHECKS"] == "1" and value_checks(torch.device("cuda"))
    finally:
        mf.set_checks(False)
    assert not value_checks(torch.device("cuda")) and value_checks(torch.device("cpu"))
