"""Builds mmcl_fast._C: the CPU operator always, the CUDA kernels when torch has CUDA and nvcc exists.

Install with `pip install --no-build-isolation -e .` (the README's commands) so the extension
compiles against the torch that is already installed and lands next to the sources; a plain
`pip install --no-build-isolation .` works too. Sources and flags: mmcl_fast/_build_config.py.
"""
import importlib.util
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
# Loaded by path: importing the mmcl_fast package here would look for the extension being built.
_spec = importlib.util.spec_from_file_location(
    "_build_config", os.path.join(ROOT, "mmcl_fast", "_build_config.py"))
build_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_config)


def _torch_release() -> str:
    """The torch release this build compiles against (its C++ ABI is not stable across releases)."""
    return torch.__version__.split("+")[0]


def _version() -> str:
    """mmcl_fast.__version__ with the torch release as a local label, e.g. 0.1.0+torch2.13.0: the
    wheel's name says which torch it was built for (and its requirement pins that release)."""
    init = open(os.path.join(ROOT, "mmcl_fast", "__init__.py")).read()
    base = next(line.split('"')[1] for line in init.splitlines() if line.startswith("__version__"))
    return f"{base}+torch{_torch_release()}"


def _extension():
    sources = [*build_config.OP_SOURCES, *build_config.PYTHON_MODULE_SOURCES]
    cxx = ["-O3", build_config.source_hash_define(ROOT), f"-DMMCL_FAST_TORCH_BUILT={_torch_release()}"]
    include_dirs = [os.path.join(ROOT, "csrc")]
    want_cuda = os.environ.get("MMCL_FAST_NO_CUDA", "0") != "1"
    if want_cuda and torch.version.cuda and CUDA_HOME is not None:
        # TORCH_CUDA_ARCH_LIST (torch's variable) picks the architectures; unset, the default is
        # sm_80 and sm_90 code plus sm_90 PTX for newer GPUs.
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
        nvcc = ["-O3", "--use_fast_math", "-lineinfo", "-DMMCL_FAST_WITH_CUDA"]
        return CUDAExtension("mmcl_fast._C", sources + list(build_config.CUDA_SOURCES),
                             include_dirs=include_dirs,
                             extra_compile_args={"cxx": cxx + ["-DMMCL_FAST_WITH_CUDA"], "nvcc": nvcc})
    return CppExtension("mmcl_fast._C", sources, include_dirs=include_dirs,
                        extra_compile_args={"cxx": cxx})


setup(
    version=_version(),
    install_requires=[f"torch=={_torch_release()}"],
    packages=find_packages(include=["mmcl_fast", "mmcl_fast.*"]),
    package_data={"mmcl_fast.experiments.identifiability": ["data/*.json"]},
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
