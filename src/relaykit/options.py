"""Strategy options on the command line and in requests, derived from the config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from .errors import RelaykitError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_strategy_options(parser: argparse.ArgumentParser, strategies: dict[str, type]) -> None:
    """One flag per config field of any strategy; defaults stay None so unset flags are known."""
    group = parser.add_argument_group("strategy options (each applies to the strategies that have it)")
    seen: dict[str, list[str]] = {}
    fields: dict[str, dataclasses.Field] = {}
    hints_of: dict[str, type] = {}
    for name, cls in sorted(strategies.items()):
        hints = typing.get_type_hints(cls.Config)
        for field in dataclasses.fields(cls.Config):
            seen.setdefault(field.name, []).append(name)
            fields.setdefault(field.name, field)
            hints_of.setdefault(field.name, hints[field.name])
    for key, field in fields.items():
        kind = hints_of[key]
        users = ", ".join(seen[key])
        default = field.default if field.default is not dataclasses.MISSING else None
        help_text = f"{users} (default {default})"
        if kind is bool:
            group.add_argument(_flag(key), dest=f"opt_{key}", action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
            group.add_argument(_flag(key), dest=f"opt_{key}", type=base if base in (int, float) else str, default=None, metavar=key.upper(), help=help_text)


def config_from_args(cls: type, args: argparse.Namespace, strict: bool = True):
    """Build `cls.Config` from the flags; a flag the strategy does not have is an error if strict."""
    own = {f.name for f in dataclasses.fields(cls.Config)}
    given = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    if strict:
        foreign = sorted(set(given) - own)
        if foreign:
            flags = ", ".join(_flag(f) for f in foreign)
            raise RelaykitError(f"strategy {cls.name!r} has no option {flags}")
    return config_from_dict(cls, {k: v for k, v in given.items() if k in own})


def config_from_dict(cls: type, values: dict):
    """Build `cls.Config` from a mapping (CLI flags, a request body); unknown keys are errors."""
    own = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(values) - own)
    if unknown:
        raise RelaykitError(f"strategy {cls.name!r} has no option(s) {', '.join(unknown)}; it has: {', '.join(sorted(own)) or 'none'}")
    try:
        return cls.Config(**values)
    except TypeError as error:
        raise RelaykitError(f"bad options for strategy {cls.name!r}: {error}") from error


def options_from_text(cls: type, text: str) -> dict:
    """Typed options for `cls.Config` from "key=value key=value" (a strategy variant's options)."""
    hints = typing.get_type_hints(cls.Config)
    options = {}
    for item in text.split():
        key, _, value = item.partition("=")
        key = key.replace("-", "_")
        if key not in hints:
            raise RelaykitError(f"strategy {cls.name!r} has no option {key!r}; it has: {', '.join(sorted(hints)) or 'none'}")
        kind = next((t for t in typing.get_args(hints[key]) if t is not type(None)), hints[key])
        try:
            options[key] = value.lower() in ("1", "true", "yes", "on") if kind is bool else kind(value) if kind in (int, float) else value
        except ValueError:
            raise RelaykitError(f"{cls.name}: {key} takes {kind.__name__} values, got {value!r}") from None
    return options
