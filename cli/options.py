"""Command-line flags derived from the declarations of the options (never written by hand).

Every ``TrainConfig`` field (``learner/config.py``: type, default, doc, rule) becomes one flag
``--field-name`` on ``train``, ``compare`` and ``study``, with its doc, default and allowed
values as help; a field added there is a flag here with no other code. A flag left out keeps
the value of ``--config`` (or the field's default): every derived flag defaults to ``None``.
Values are checked by ``TrainConfig.validate`` (one line naming the field, exit 2); a value of
the wrong shape (``--devices five``) is refused by argparse naming the flag, also exit 2.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

# Old flag names, still accepted with one deprecation line naming the new one.
OLD_FLAGS: dict[str, tuple[str, ...]] = {"battery_j": ("--battery",)}


class DeprecatedAlias(argparse.Action):
    """An old flag that still works: it stores into the new one and says so on stderr."""

    def __init__(self, option_strings: list[str], dest: str, new: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new or "--" + dest.replace("_", "-")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"dmmlkd: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def flag_name(field: str) -> str:
    """The flag of a field: ``local_iters`` -> ``--local-iters``."""
    return "--" + field.replace("_", "-")


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")]


def _boolean(text: str) -> bool:
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(
        text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false (got {text!r})")
    return value


def _converter(hint: Any) -> tuple[Callable[[str], Any], str] | None:
    """How a flag's text becomes a field value of this type, and its metavar (None: a type no
    flag can write; add_config_flags refuses it, so a new field never silently lacks a flag)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] \
        if typing.get_origin(hint) in (typing.Union, types.UnionType) else [hint]
    if str in args:  # "auto", "none" or a number: the field's own check reads the text
        return str, "TEXT" if len(args) > 1 else "NAME"
    if len(args) != 1:
        return None
    (kind,) = args
    origin = typing.get_origin(kind)
    if kind is bool:
        return _boolean, "true|false"
    if kind in (int, float):
        return kind, "N" if kind is int else "X"
    if origin is list:
        (item,) = typing.get_args(kind)
        if typing.get_origin(item) is list:  # view sets: a,b;c
            inner = typing.get_args(item)[0]
            return (lambda text: [[inner(v) for v in _split(group)] for group in text.split(";")],
                    "A,B;C")
        return (lambda text: [item(v) for v in _split(text)]), "A,B,..."
    if origin is dict:  # view=kind pairs
        def table(text: str) -> dict[str, str]:
            pairs = [p.split("=", 1) for p in _split(text)]
            if any(len(p) != 2 for p in pairs):
                raise argparse.ArgumentTypeError(f"expected NAME=VALUE pairs (got {text!r})")
            return {k.strip(): v.strip() for k, v in pairs}

        return table, "NAME=VALUE,..."
    return None


def add_config_flags(parser: argparse.ArgumentParser, skip: Iterable[str] = (),
                     title: str = "run configuration") -> list[str]:
    """Add one flag per TrainConfig field (except ``skip``); returns the fields added."""
    from dmmlkd.learner.config import TrainConfig, field_docs

    hints = typing.get_type_hints(TrainConfig)
    rules = field_docs()
    defaults = TrainConfig()
    group = parser.add_argument_group(
        title, "one flag per field of the run configuration (docs/safety.md); a flag overrides "
        "--config, an absent flag keeps it")
    added = []
    for f in fields(TrainConfig):
        if f.name in skip:
            continue
        converter = _converter(hints[f.name])
        if converter is None:  # a programming error: teach _converter the new type
            raise TypeError(f"TrainConfig.{f.name}: no command-line form for {hints[f.name]}")
        kind, metavar = converter
        rule = rules[f.name]
        allowed = rule.describe()
        default = getattr(defaults, f.name)
        notes = ([] if default is None else [f"default {_shown(default)}"]) \
            + ([] if allowed == "valid" else [allowed])
        text = rule.doc + (f" ({'; '.join(notes)})" if notes else "")
        text = text.replace("%", "%%")  # argparse formats help with %
        group.add_argument(flag_name(f.name), dest=f.name, type=kind, default=None,
                           metavar=metavar, help=text)
        for old in OLD_FLAGS.get(f.name, ()):
            group.add_argument(old, dest=f.name, type=kind, action=DeprecatedAlias,
                               help=argparse.SUPPRESS)
        added.append(f.name)
    parser.set_defaults(_config_flags=added)
    return added


def _shown(value: Any) -> str:
    """A default as a user would type it on the command line."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The fields a user gave as flags (absent flags are left out)."""
    names: list[str] = getattr(args, "_config_flags", [])
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}
