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


def option(default=dataclasses.MISSING, help: str = "", *, default_factory=dataclasses.MISSING):
    """A config dataclass field with its command-line help text (the one place it is written)."""
    if not help:
        raise ValueError("every config option needs a help text")
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help})


def add_config_flags(p: argparse.ArgumentParser, cls, special: dict[str, dict] | None = None) -> None:
    """One ``--field-name`` per dataclass field, default None (= keep the config's default).

    The help text is the field's ``option(help=...)`` plus its default. Booleans take a value
    (``--causal true``); ``special`` maps a field name to add_argument keywords (choices, nargs,
    ...) for fields the generic rule does not cover. A field without a help text is an error.
    """
    special = special or {}
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if "help" not in f.metadata:
            raise ValueError(f"{cls.__name__}.{f.name} has no help text: declare it with option(..., help=...)")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{f.metadata['help']} (default: {default!r})"
        if f.name in special:
            p.add_argument(flag, default=None, help=help_text, **special[f.name])
        elif str(f.type) in ("bool", "<class 'bool'>"):
            p.add_argument(flag, type=parse_bool, default=None, metavar="BOOL", help=help_text)
        else:
            typ = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            p.add_argument(flag, type=typ, default=None, help=help_text)


def config_overrides(args: argparse.Namespace, cls) -> dict:
    """The fields of ``cls`` given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}
