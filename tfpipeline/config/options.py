"""Option dataclass plumbing shared by every config: field helper, config files, building from dicts.

Every option of every command is a dataclass field declared with ``opt``, which
stores its help text (and allowed values) in the field's metadata. The CLI
generates its flags from these fields (``tfpipeline.cli.flags``), so help text
and choices cannot drift from the code that uses them, and a YAML/JSON file
uses the same names as the flags.

This module must not import TensorFlow: ``tfpipeline --help`` and
``tfpipeline datasets`` only get this far.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import field
from typing import Any, Dict, Optional, Sequence

import yaml

from tfpipeline.errors import ConfigError


def opt(default: Any = dataclasses.MISSING, help: str = "", *, choices: Optional[Sequence[Any]] = None,
        factory: Any = None, flag: bool = True, required: bool = False, auto: bool = False):
    """A config field with its one-line help and, for enumerated options, the allowed values.

    ``factory`` builds mutable defaults (lists); ``flag=False`` keeps a field out of the CLI
    (still settable from a config file or Python); ``required`` makes the flag mandatory
    (the field still needs a default so dataclass inheritance works; ``validate`` checks it).
    ``auto`` fields default to None, meaning "decided from the checkpoint and the data"; the
    word ``auto`` is accepted for them on the command line and in config files.
    """
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "flag": flag,
                "required": required, "auto": auto}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


AUTO = "auto"


def is_auto_field(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("auto"))


def check_choice(value: Any, name: str, choices: Sequence[Any], *, optional: bool = False) -> None:
    """Raise ``ConfigError`` unless ``value`` is one of ``choices`` (or None when ``optional``)."""
    if optional and value is None:
        return
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, not {value!r}")


def check_required(config: Any) -> None:
    """Raise ``ConfigError`` for the first field declared ``required`` (in its ``opt``) that has no value."""
    for f in dataclasses.fields(config):
        if f.metadata.get("required") and not getattr(config, f.name):
            raise ConfigError(f"{f.name} is required")


def check_positive(config: Any, *names: str) -> None:
    """Raise ``ConfigError`` for the first of ``names`` that is set and below 1."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")


def field_choices(cls, name: str) -> Optional[tuple]:
    """The allowed values declared for field ``name`` of dataclass ``cls`` (None if free)."""
    return {f.name: f.metadata.get("choices") for f in dataclasses.fields(cls)}.get(name)


def load_config_file(path: str) -> Dict[str, Any]:
    """Read a YAML or JSON config file into a dict, naming the file (and line, from the parser) on errors."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:  # both carry line/column in their message
        raise ConfigError(f"{path}: cannot parse config ({e})") from None
    if data is None:
        raise ConfigError(f"{path}: config file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config must be a mapping of option: value")
    return data


def make_config(cls, values: Dict[str, Any], source: str = "config"):
    """Build dataclass ``cls`` from ``values``; unknown keys are an error naming ``source``.

    Configs with a ``validate`` method are validated, so a bad value fails here,
    before any data is read or model built.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown option(s) {', '.join(unknown)}")
    auto_fields = {f.name for f in dataclasses.fields(cls) if is_auto_field(f)}
    values = {k: (None if k in auto_fields and v == AUTO else v) for k, v in values.items()}
    try:
        config = cls(**values)
    except TypeError as e:   # a required field is missing
        raise ConfigError(f"{source}: {e}") from None
    return config.validate() if hasattr(config, "validate") else config


def with_overrides(config, **overrides):
    """A validated copy of dataclass ``config`` with ``overrides`` applied (unknown names are errors)."""
    return make_config(type(config), {**dataclasses.asdict(config), **overrides},
                       source=type(config).__name__)
