"""Header trees for compile-checking csrc/cuda_launch.cpp against a CUDA build of torch on a
machine without one (the CMake target mmcl_fast_launcher_check).

Two sets, each a list of include directories for MMCL_FAST_TORCH_CUDA_INCLUDE:

* ``pinned``: the installed torch's own headers (the pinned 2.13 CPU wheel ships c10/cuda and
  ATen/cuda) plus the one header that only a CUDA build generates,
  ``c10/cuda/impl/cuda_cmake_macros.h``, taken from the CUDA wheel;
* ``wheel``: every header of the CUDA wheel.

Both add the CUDA toolkit's include directory (next to nvcc). The CUDA wheel is found through
MMCL_FAST_TORCH_CUDA_WHEEL or in the local wheel stores of this kind of machine.

    python tests/native/torch_cuda_headers.py DEST   # prints both sets
"""
import glob
import os
import shutil
import sys
import zipfile
from pathlib import Path

WHEEL_STORES = ("/opt/pypi-more/files", "/opt/pypi/files", "/opt/wheels")
GENERATED = "torch/include/c10/cuda/impl/cuda_cmake_macros.h"


def cuda_toolkit_include() -> Path | None:
    nvcc = shutil.which("nvcc")
    candidates = [Path(os.environ["CUDA_HOME"]) / "include"] if os.environ.get("CUDA_HOME") else []
    if nvcc:
        candidates.append(Path(os.path.realpath(nvcc)).parent.parent / "include")
    candidates.append(Path("/usr/local/cuda/include"))
    return next((c for c in candidates if (c / "cuda_runtime_api.h").exists()), None)


def find_cuda_wheel() -> Path | None:
    """A torch wheel built with CUDA (it holds the generated CUDA header), or None."""
    given = os.environ.get("MMCL_FAST_TORCH_CUDA_WHEEL")
    paths = [given] if given else sorted(p for s in WHEEL_STORES for p in glob.glob(f"{s}/torch-*.whl"))
    for path in paths:
        try:
            with zipfile.ZipFile(path) as wheel:
                if GENERATED in wheel.namelist():
                    return Path(path)
        except (OSError, zipfile.BadZipFile):
            continue
    return None


def pinned_headers(dest: Path, wheel: Path, toolkit: Path) -> list[str]:
    """The installed torch's headers + the generated CUDA header from ``wheel`` + the toolkit's."""
    import torch
    installed = Path(torch.__file__).parent / "include"
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(GENERATED, Path(dest) / "generated")
    return [str(installed), str(installed / "torch/csrc/api/include"),
            str(Path(dest) / "generated" / "torch" / "include"), str(toolkit)]


def wheel_headers(dest: Path, wheel: Path, toolkit: Path) -> list[str]:
    """Every header of the CUDA wheel + the toolkit's."""
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith("torch/include/") and not name.endswith("/"):
                archive.extract(name, Path(dest) / "wheel")
    include = Path(dest) / "wheel" / "torch" / "include"
    return [str(include), str(include / "torch/csrc/api/include"), str(toolkit)]


if __name__ == "__main__":
    wheel, toolkit = find_cuda_wheel(), cuda_toolkit_include()
    if wheel is None or toolkit is None:
        sys.exit(f"no CUDA torch wheel ({wheel}) or CUDA toolkit headers ({toolkit}) found")
    print("pinned", ";".join(pinned_headers(Path(sys.argv[1]), wheel, toolkit)))
    print("wheel", ";".join(wheel_headers(Path(sys.argv[1]), wheel, toolkit)))
