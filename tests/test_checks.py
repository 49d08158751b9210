"""Data-dependent checks: where they run (mmcl_fast/validation.py) and that the CPU loss path's Python
layer never reads tensor data back (no aten::_local_scalar_dense)."""
import os

import pytest
import torch

import mmcl_fast as mf
from mmcl_fast import KernelOptions, options
from mmcl_fast.options import value_checks

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


def test_value_checks_always_on_cpu_and_opt_in_elsewhere():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert value_checks(cpu) and not value_checks(cuda)
    assert value_checks(cuda, KernelOptions(checks=True)) and value_checks(cpu, KernelOptions(checks=False))
    environment = dict(os.environ)
    mf.set_checks(True)
    try:
        assert value_checks(cuda) and options.defaults().checks
        assert not value_checks(cuda, KernelOptions(checks=False))  # a call's options win over the defaults
        assert dict(os.environ) == environment  # the process defaults live in Python, not in the environment
    finally:
        mf.set_checks(False)
    assert not value_checks(cuda) and value_checks(cpu)


def test_environment_sets_the_defaults_once(monkeypatch):
    monkeypatch.setenv("MMCL_FAST_CHECKS", "1")
    monkeypatch.setenv("MMCL_FAST_DETERMINISTIC", "1")
    monkeypatch.setenv("MMCL_FAST_CUDA_PATH", "tc")
    assert options._from_environment() == KernelOptions(checks=True, deterministic=True, cuda_math_path="tc")
    monkeypatch.setenv("MMCL_FAST_CUDA_PATH", "fast")
    with pytest.raises(ValueError, match="MMCL_FAST_CUDA_PATH"):
        options._from_environment()
    monkeypatch.setenv("MMCL_FAST_CUDA_PATH", "simt")
    monkeypatch.setenv("MMCL_FAST_CHECKS", "yes")
    with pytest.raises(ValueError, match="MMCL_FAST_CHECKS must be 0 or 1"):
        options._from_environment()


def test_bad_kernel_options_name_the_argument():
    with pytest.raises(ValueError, match="`cuda_math_path` must be one of"):
        KernelOptions(cuda_math_path="fast")
    with pytest.raises(TypeError, match="`deterministic` must be a bool"):
        KernelOptions(deterministic=1)
    with pytest.raises(TypeError, match="unknown kernel options"):
        options.set_defaults(determinism=True)
    a = torch.randn(8, 4)
    with pytest.raises(TypeError, match="`kernel_options` must be a mmcl_fast.KernelOptions"):
        mf.symmetric_infonce(a, a, 0.1, kernel_options={"checks": True})
    with pytest.raises(TypeError, match="`kernel_options` must be a mmcl_fast.KernelOptions"):
        mf.ClipLoss(kernel_options="deterministic")


def test_kernel_options_reach_the_operator():
    """Every public entry point passes its kernel_options to lse_fwd (or label_lse_fwd) as the op's
    last arguments, and the backward receives the forward's."""
    opts = KernelOptions(checks=True, deterministic=True, cuda_math_path="tc")
    want = (True, True, "tc")
    a = torch.randn(12, 5, requires_grad=True)
    b = torch.randn(12, 5, requires_grad=True)
    s = torch.tensor(2.0, requires_grad=True)
    calls = {
        "symmetric_infonce": lambda: mf.symmetric_infonce(a, b, logit_scale=s, kernel_options=opts),
        "infonce": lambda: mf.infonce(a, b, logit_scale=s, kernel_options=opts),
        "infonce+labels": lambda: mf.infonce(a, b, torch.arange(12).flip(0), logit_scale=s, kernel_options=opts),
        "nt_xent": lambda: mf.nt_xent(a, b, logit_scale=s, kernel_options=opts),
        "lpsimclr": lambda: mf.lpsimclr(a, b, b.flip(0), kernel_options=opts),
        "comm_loss": lambda: mf.comm_loss([a, b], [b, a], kernel_options=opts),
        "ClipLoss": lambda: mf.ClipLoss(kernel_options=opts)(a, b, s),
        "SymmetricInfoNCE": lambda: mf.SymmetricInfoNCE(kernel_options=opts)(a, b),
        "NTXent": lambda: mf.NTXent(kernel_options=opts)(a, b),
        "distributed": lambda: mf.distributed.symmetric_infonce(a, b, logit_scale=s, kernel_options=opts),
    }
    for name, call in calls.items():
        with OpRecorder() as rec:
            call().backward()
        fwd = [args for func, args in rec.calls if "lse_fwd" in str(func)]
        bwd = [args for func, args in rec.calls if "lse_bwd" in str(func)]
        assert fwd and bwd, name
        # the kernel options are the last arguments of lse_fwd/label_lse_fwd and of their backwards
        assert all(tuple(args[-3:]) == want for args in fwd), (name, [args[-3:] for args in fwd])
        assert all(tuple(args[-2:]) == (True, "tc") for args in bwd), (name, [args[-2:] for args in bwd])
