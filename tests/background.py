"""Build jobs that start when collection ends and run beside the other tests.

The slow lane compiles the extension several times (CMake, the wheel, the JIT build) and the
emulated CUDA backend once. Each compile is a subprocess that keeps the cores busy only part of
the time, and most tests keep them busy only part of the time too. So a test that needs a build
is marked ``@pytest.mark.background("name")``. The job ``name``, a function registered here with
``@job``, starts in a thread as soon as collection ends (only when such a test is selected). The
test calls :func:`result` and makes its assertions on what the job returned. Tests whose
assertions depend on the machine being otherwise idle are marked ``@pytest.mark.quiet``;
conftest.py runs them last, after every job has finished.

A job takes the session's scratch directory and returns a value (typically the subprocess
results). An exception in a job is raised again in each test that asks for its result.
"""
from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Callable

_REGISTERED: dict[str, Callable[[Path], object]] = {}
_STARTED: dict[str, tuple[threading.Thread, dict]] = {}
_ROOT: list[Path] = []


def job(fn: Callable[[Path], object]) -> Callable[[Path], object]:
    """Register ``fn(scratch_dir) -> value`` under its name."""
    _REGISTERED[fn.__name__] = fn
    return fn


def _root() -> Path:
    if not _ROOT:
        _ROOT.append(Path(tempfile.mkdtemp(prefix="mmcl_fast_background_")))
    return _ROOT[0]


def start(name: str) -> None:
    """Start job ``name`` (once) in a daemon thread."""
    if name in _STARTED:
        return
    if name not in _REGISTERED:
        raise KeyError(f"no background job named {name!r} (registered: {sorted(_REGISTERED)})")
    box: dict = {}
    scratch = _root() / name
    scratch.mkdir()

    def run():
        try:
            box["value"] = _REGISTERED[name](scratch)
        except BaseException as exc:     # raised again by result()
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"background-{name}", daemon=True)
    _STARTED[name] = (thread, box)
    thread.start()


def result(name: str):
    """What job ``name`` returned (started now if it was not), after waiting for it."""
    start(name)
    thread, box = _STARTED[name]
    thread.join()
    if "error" in box:
        raise RuntimeError(f"background job {name!r} failed") from box["error"]
    return box["value"]


def result_if_started(name: str):
    """:func:`result` when job ``name`` was started, else None (the caller does the work itself)."""
    return result(name) if name in _STARTED else None


def wait_for_all() -> None:
    for thread, _ in list(_STARTED.values()):
        thread.join()
