"""The repository's own text: every file path named in the code, the comments and the docs exists."""
import re
import subprocess
from pathlib import Path

from conftest import REPO

# A repository path: a top-level folder of this project, then path segments, ending in a file
# suffix or a slash (a folder).
_TOP = r"(?:csrc|mmcl_fast|tests|benchmarks|docs|results|\.ci)"
_PATH = re.compile(_TOP + r"/[\w./+-]*(?:\.(?:py|cpp|h|cu|cuh|md|sh|json|png|txt|jsonl|toml)\b|/)")
_TEXT = (".py", ".cpp", ".h", ".cu", ".cuh", ".md", ".sh", ".txt", ".toml", "run")


def _tracked_text_files():
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    own = Path(__file__).resolve()  # its examples name missing files on purpose
    return [REPO / f for f in out.stdout.split()
            if f.endswith(_TEXT) and (REPO / f).is_file() and (REPO / f).resolve() != own]


def named_paths(text: str) -> set[str]:
    """Repository paths named in ``text``; patterns and placeholders (``<name>``, ``{a,b}``, ``*``)
    and paths inside other trees (``build/``, ``runs/``, a site-packages) are not names of files."""
    found = set()
    for m in _PATH.finditer(text):
        before = text[max(0, m.start() - 1):m.start()]
        after = text[m.end():m.end() + 1]
        if before in "/.\\_-" and before != "" or after in "{<*" and after != "":
            continue  # part of a longer path (e.g. torch/include/...) or a pattern
        found.add(m.group(0).rstrip("/.") if m.group(0).endswith("/") else m.group(0))
    return found


def test_named_paths_exist():
    missing = []
    for path in _tracked_text_files():
        for name in named_paths(path.read_text(errors="replace")):
            if not (REPO / name).exists():
                missing.append(f"{path.relative_to(REPO)}: {name}")
    assert not missing, "\n".join(missing)


def test_the_path_finder_sees_stale_names():
    text = ("see csrc/cpu/nowhere.cpp and benchmarks/results/gone.json, and docs/design.md;\n"
            "not torch/include/ATen/core/Tensor.h nor results/<name>.json nor build/tests/x.py")
    assert named_paths(text) == {"csrc/cpu/nowhere.cpp", "benchmarks/results/gone.json", "docs/design.md"}
