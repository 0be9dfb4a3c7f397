"""Strategy options on the command line and in requests, derived from the config dataclasses."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing

from .errors import RelaykitError


def options_text(options: dict) -> str:
    """{"k": 8, "draft_confidence": 0.8} -> "k=8 draft_confidence=0.8", as a variant writes them."""
    return " ".join(f"{key}={value}" for key, value in options.items())


def variant_text(name: str, options: dict) -> str:
    """("speculative", {"k": 8}) -> "speculative[k=8]": the variant `strategy_variant` reads back."""
    return f"{name}[{options_text(options)}]"


def flag(name: str) -> str:
    """The command-line flag of option `name`: draft_confidence -> --draft-confidence."""
    return "--" + name.replace("_", "-")


def field_comments(config: type) -> dict[str, str]:
    """The `# comment` of each field of a dataclass (inherited fields too): on the field's line,
    else on the comment lines just above it. Fields whose source is not available have none."""
    found: dict[str, str] = {}
    for cls in reversed(config.__mro__):  # a subclass's comment replaces its base's
        if dataclasses.is_dataclass(cls):
            found.update(_own_field_comments(cls))
    return found


def _own_field_comments(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    found = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, line = [], node.lineno - 1
        while line in comments and lines[line - 1].lstrip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        text = comments.get(node.end_lineno) or " ".join(above)
        if text:
            found[node.target.id] = text
    return found


def add_strategy_options(parser: argparse.ArgumentParser, strategies: dict[str, type], note: str = "") -> None:
    """One flag per config field of any strategy, in an argument group per strategy; a field that
    several strategies have gets one flag in a group "options shared by ...". Help texts are the
    fields' comments; `note` ends the description. Defaults stay None so that unset flags are known."""
    owners: dict[str, list[str]] = {}
    fields: dict[str, tuple[dataclasses.Field, type, str | None]] = {}
    for name, cls in sorted(strategies.items()):
        hints, comments = typing.get_type_hints(cls.Config), field_comments(cls.Config)
        for field in dataclasses.fields(cls.Config):
            owners.setdefault(field.name, []).append(name)
            fields.setdefault(field.name, (field, hints[field.name], comments.get(field.name)))
    groups: dict[tuple[str, ...], list[str]] = {}
    for key, users in owners.items():
        groups.setdefault(tuple(users), []).append(key)
    parser.add_argument_group(
        "strategy options",
        "Each option below applies to the strategies that have it. To give one strategy its own options "
        "(several variants in one run), write NAME[option=value ...] in --strategy, e.g. "
        f"'relaygen[cues=none speculative=4]'. {note}".strip(),
    )
    for users, keys in sorted(groups.items(), key=lambda item: (len(item[0]) > 1, item[0])):
        title = f"{users[0]} options" if len(users) == 1 else f"options shared by {', '.join(users)}"
        taken = [key for key in keys if flag(key) in parser._option_string_actions]  # e.g. --stop
        group = parser.add_argument_group(
            title, f"set {', '.join(taken)} as NAME[{taken[0]}=...]: the flag is another option's" if taken else None)
        for key in keys:
            if key not in taken:
                _add_option(group, key, *fields[key])


def _add_option(group, key: str, field: dataclasses.Field, kind: type, comment: str | None) -> None:
    default = field.default if field.default is not dataclasses.MISSING else None
    help_text = (f"{comment} (default {default})" if comment else f"default {default}").replace("%", "%%")
    if kind is bool:
        group.add_argument(flag(key), dest=f"opt_{key}", action=argparse.BooleanOptionalAction, default=None, help=help_text)
    else:
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        group.add_argument(flag(key), dest=f"opt_{key}", type=base if base in (int, float) else str, default=None,
                           metavar=key.upper(), help=help_text)


def options_from_args(args: argparse.Namespace) -> dict:
    """The strategy options set on the command line: option name -> value."""
    return {key[4:]: value for key, value in vars(args).items() if key.startswith("opt_") and value is not None}


def config_from_dict(cls: type, values: dict):
    """Build `cls.Config` from a mapping (CLI flags, a request body); unknown keys and values of
    the wrong type are errors."""
    own = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(values) - own)
    if unknown:
        raise RelaykitError(f"strategy {cls.name!r} has no option(s) {', '.join(unknown)}; it has: {', '.join(sorted(own)) or 'none'}")
    hints = typing.get_type_hints(cls.Config)
    try:
        return cls.Config(**{key: _typed(cls, key, value, hints[key]) for key, value in values.items()})
    except (TypeError, ValueError) as error:
        raise RelaykitError(f"bad options for strategy {cls.name!r}: {error}") from error


def _typed(cls: type, key: str, value, hint):
    """`value` as the option's type: text is parsed (as in NAME[key=value]); a number, a flag or
    text of another type is an error."""
    kind = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
    if isinstance(value, str) and kind is not str:
        try:
            return value.lower() in ("1", "true", "yes", "on") if kind is bool else kind(value) if kind in (int, float) else value
        except ValueError:
            raise RelaykitError(f"{cls.name}: {key} takes {kind.__name__} values, got {value!r}") from None
    fits = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not fits and not isinstance(value, (list, tuple)):  # a list is a parsed value (cues)
        raise RelaykitError(f"{cls.name}: {key} takes {kind.__name__} values, got {value!r}")
    return value


def options_from_text(cls: type, text: str) -> dict:
    """Typed options for `cls.Config` from "key=value key=value" (a strategy variant's options)."""
    hints = typing.get_type_hints(cls.Config)
    options = {}
    for item in text.split():
        key, _, value = item.partition("=")
        key = key.replace("-", "_")
        if key not in hints:
            raise RelaykitError(f"strategy {cls.name!r} has no option {key!r}; it has: {', '.join(sorted(hints)) or 'none'}")
        options[key] = _typed(cls, key, value, hints[key])
    return options


def strategy_variant(text: str) -> tuple[type, dict]:
    """`relaygen[cues=none speculative=4]` -> (the relaygen class, {"cues": "none", "speculative": 4}):
    a strategy and its own options, as written in `--strategy` lists, requests and `best-of-n[inner=...]`."""
    import re

    from .strategies.base import get_strategy

    match = re.fullmatch(r"([\w-]+)(?:\[(.*)\])?", text.strip())
    if not match:
        raise RelaykitError(f"bad strategy {text!r}; write NAME or NAME[option=value option=value]")
    cls = get_strategy(match.group(1))
    return cls, options_from_text(cls, match.group(2)) if match.group(2) is not None else {}


def variant_config(text: str) -> tuple[type, object]:
    """`relaygen[speculative=4]` -> (the relaygen class, its config): what a composite strategy
    asks of the strategy it runs inside."""
    cls, options = strategy_variant(text)
    return cls, cls.Config(**options)
