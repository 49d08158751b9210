"""Command-line flags for the fields of a config dataclass (shared by the trainers' CLIs)."""
from __future__ import annotations

import argparse
import dataclasses


def parse_bool(s: str) -> bool:
    """'1'/'true'/'yes' -> True, '0'/'false'/'no' -> False (any case); anything else is an error."""
    if s.lower() in ("1", "true", "yes"):
        return True
    if s.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def add_config_flags(p: argparse.ArgumentParser, cls, special: dict[str, dict] | None = None) -> None:
    """One ``--field-name`` per dataclass field, default None (= keep the config's default).

    Booleans take a value (``--causal true``); ``special`` maps a field name to add_argument
    keywords (choices, nargs, ...) for fields the generic rule does not cover.
    """
    special = special or {}
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.name in special:
            p.add_argument(flag, default=None, **special[f.name])
        elif str(f.type) in ("bool", "<class 'bool'>"):
            p.add_argument(flag, type=parse_bool, default=None, metavar="BOOL")
        else:
            typ = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            p.add_argument(flag, type=typ, default=None)


def config_overrides(args: argparse.Namespace, cls) -> dict:
    """The fields of ``cls`` given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}
