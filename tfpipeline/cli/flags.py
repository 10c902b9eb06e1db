"""Config dataclass -> argparse flags (in the manner of Hugging Face's ``HfArgumentParser``).

Each field declared with ``tfpipeline.config.opt`` becomes one ``--kebab-name``
flag whose help is the field's one-line ``help`` plus its default, and whose
allowed values are the field's ``choices``. Generating the flags from the
dataclasses means ``--help``, config files and the Python API cannot drift apart.

Flag defaults stay None: a value the user did not type must not override one
from a ``--config`` file, and the dataclass supplies the real default.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable, Dict, List, Optional, Sequence

from tfpipeline.config.options import AUTO


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def flag_fields(cls, skip: Sequence[str] = ()) -> List[dataclasses.Field]:
    """The fields of ``cls`` that get a flag: all but ``skip`` and those declared with ``flag=False``."""
    return [f for f in dataclasses.fields(cls)
            if f.name not in skip and f.metadata.get("flag", True) is not False]


def add_options(parser, cls, skip: Sequence[str] = ()) -> None:
    """Add one flag per field of dataclass ``cls`` to ``parser`` (a parser or an argument group)."""
    hints = typing.get_type_hints(cls)
    for f in flag_fields(cls, skip):
        parser.add_argument(flag_name(f.name), dest=f.name, default=None, **_flag_kwargs(cls, f, hints[f.name]))


def values_from(args: argparse.Namespace, cls, skip: Sequence[str] = ()) -> Dict[str, Any]:
    """The fields of ``cls`` the user gave on the command line (flags left out are absent, not None)."""
    return {f.name: getattr(args, f.name) for f in flag_fields(cls, skip) if getattr(args, f.name, None) is not None}


def _flag_kwargs(cls, f: dataclasses.Field, hint) -> Dict[str, Any]:
    hint = _without_none(hint)
    choices = f.metadata.get("choices")
    kwargs: Dict[str, Any] = {"help": _help(f)}
    if f.metadata.get("required"):
        kwargs["required"] = True
    if hint is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif hint in (int, float) and f.metadata.get("auto"):
        kwargs.update(type=_number_or_auto(hint), metavar=f"{{{hint.__name__.upper()},auto}}")
    elif hint in (int, float, str):
        kwargs.update(type=hint, choices=list(choices) if choices else None)
    elif typing.get_origin(hint) in (list, List) and typing.get_args(hint)[0] in (int, str):
        item = typing.get_args(hint)[0]
        kwargs["type"] = _comma_list(item, choices)
        kwargs["metavar"] = "{" + ",".join(map(str, choices)) + "},..." if choices else f"{item.__name__.upper()},..."
    else:
        raise TypeError(f"{cls.__name__}.{f.name}: no command-line form for type {hint!r} "
                        "(declare it with flag=False or use int, float, str, bool or a list of int/str)")
    return kwargs


def _without_none(hint):
    """``Optional[X]`` (or ``X | None``) -> ``X``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _help(f: dataclasses.Field) -> str:
    """The field's help plus its default; ``%`` is doubled because argparse formats help with ``%``."""
    text = f.metadata.get("help") or ""
    if f.metadata.get("required"):
        suffix = "(required)"
    else:
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        if shown is None and f.metadata.get("auto"):
            shown = AUTO
        suffix = "" if shown is None or shown == "" else f"(default: {shown})"
    return " ".join(p for p in (text, suffix) if p).replace("%", "%%")


def _number_or_auto(kind: type) -> Callable[[str], Any]:
    """A parser for an ``auto`` field: a number, or the word ``auto`` (kept; the config maps it to None)."""
    def parse(text: str) -> Any:
        return AUTO if text.strip().lower() == AUTO else kind(text)

    parse.__name__ = f"{kind.__name__} or auto"
    return parse


def _comma_list(item: type, choices: Optional[Sequence[Any]]) -> Callable[[str], List[Any]]:
    """A parser for ``a,b,c``; each item is converted to ``item`` and checked against ``choices``."""
    def parse(text: str) -> List[Any]:
        values = [item(part.strip()) for part in text.split(",") if part.strip()]
        bad = [v for v in values if choices and v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"invalid choice(s) {', '.join(map(repr, bad))} "
                                             f"(choose from {', '.join(map(str, choices))})")
        return values

    parse.__name__ = f"comma-separated {item.__name__} list"  # argparse names the type in its errors
    return parse
