"""Builds mmcl_fast._C: the CPU operator always, the CUDA kernels when torch has CUDA and nvcc exists.

Install with `pip install --no-build-isolation .` so the extension compiles against the torch that
is already installed (an isolated build would fetch a different torch).
"""
import glob
import importlib.util
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
import torch

ROOT = os.path.dirname(os.path.abspath(__file__))
# Loaded by path: importing the mmcl_fast package here would try to load the extension being built.
_spec = importlib.util.spec_from_file_location("_build_flags", os.path.join(ROOT, "mmcl_fast", "_build_flags.py"))
_build_flags = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build_flags)
cpu_compile_flags = _build_flags.cpu_compile_flags


def _extension():
    flags = cpu_compile_flags()
    sources = ["csrc/ops.cpp", "csrc/python_module.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O3"] + flags
    want_cuda = os.environ.get("MMCL_FAST_NO_CUDA", "0") != "1"
    if want_cuda and torch.version.cuda and CUDA_HOME is not None:
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda_launch*.cpp"))
        nvcc = ["-O3", "--use_fast_math", "-lineinfo", "-DMMCL_FAST_WITH_CUDA",
                "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"]
        return CUDAExtension("mmcl_fast._C", sources, include_dirs=[os.path.join(ROOT, "csrc")],
                             extra_compile_args={"cxx": cxx + ["-DMMCL_FAST_WITH_CUDA"], "nvcc": nvcc})
    return CppExtension("mmcl_fast._C", sources, include_dirs=[os.path.join(ROOT, "csrc")],
                        extra_compile_args={"cxx": cxx})


setup(
    packages=find_packages(include=["mmcl_fast", "mmcl_fast.*"]),
    package_data={"mmcl_fast": ["data/*.json"]},
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
