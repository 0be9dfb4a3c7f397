"""Strategy options on the command line and in requests, derived from the config dataclasses."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import types
import typing

from .errors import OptionError, RelaykitError


def options_text(options: dict) -> str:
    """{"k": 8, "draft_confidence": 0.8} -> "k=8 draft_confidence=0.8", as a variant writes them."""
    return " ".join(f"{key}={value}" for key, value in options.items())


def variant_text(name: str, options: dict) -> str:
    """("speculative", {"k": 8}) -> "speculative[k=8]": the variant `split_variant` reads back."""
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


def _add_option(group, key: str, field: dataclasses.Field, kind, comment: str | None) -> None:
    default = field.default if field.default is not dataclasses.MISSING else None
    help_text = (f"{comment} (default {default})" if comment else f"default {default}").replace("%", "%%")
    group.add_argument(flag(key), dest=f"opt_{key}", default=None, help=help_text, **_reading(key, kind))


def _reading(key: str, kind) -> dict:
    """How argparse reads an option's flag: a switch, a choice or a typed value."""
    base = _kind(kind)
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(base) is typing.Literal:
        return {"choices": typing.get_args(base)}
    return {"type": base if base in (int, float) else str, "metavar": key.upper()}


def add_config_options(group, configs: dict[str, type], prefix: str) -> None:
    """One flag `--PREFIX-FIELD` per field of any of `configs` (name -> dataclass; a field several
    have gets one flag), its help each owner's comment and default; dest `PREFIX_FIELD`."""
    fields: dict[str, list[tuple[str, dataclasses.Field, object, str | None]]] = {}
    for name, config in configs.items():
        hints, comments = typing.get_type_hints(config), field_comments(config)
        for field in dataclasses.fields(config):
            fields.setdefault(field.name, []).append((name, field, hints[field.name], comments.get(field.name)))
    for key, owners in fields.items():
        _, field, kind, _ = owners[0]
        about = "; ".join(f"{name}: {comment or key} (default {field.default})" for name, field, _, comment in owners)
        group.add_argument(flag(f"{prefix}_{key}"), dest=f"{prefix}_{key}", default=None,
                           help=about.replace("%", "%%"), **_reading(key, kind))


def options_from_args(args: argparse.Namespace, dest: str = "opt_") -> dict:
    """The options set on the command line (flags whose dest starts with `dest`): name -> value."""
    return {key[len(dest):]: value for key, value in vars(args).items() if key.startswith(dest) and value is not None}


def config_from_dict(cls: type, values: dict):
    """Build a strategy's `cls.Config` from a mapping (CLI flags, a request body); unknown keys and
    values of the wrong type are errors."""
    return make_config(f"strategy {cls.name!r}", cls.Config, values)


def make_config(owner: str, config: type, values: dict):
    """`config` (a dataclass: a strategy's options, a KV policy) from a mapping; `owner` names it
    in errors."""
    own = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(values) - own)
    if unknown:
        raise OptionError(f"{owner} has no option(s) {', '.join(unknown)}; it has: {', '.join(sorted(own)) or 'none'}")
    hints = typing.get_type_hints(config)
    try:
        return config(**{key: _typed(owner, key, value, hints[key]) for key, value in values.items()})
    except (TypeError, ValueError) as error:
        raise OptionError(f"bad options for {owner}: {error}") from error
    except RelaykitError as error:  # the config's own check of its values
        raise OptionError(str(error)) from error


def _kind(hint):
    """The type an option's value is read as: the first of a union's types but None."""
    return next((t for t in typing.get_args(hint) if t is not type(None)), hint) if _is_union(hint) else hint


def _is_union(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _typed(owner: str, key: str, value, hint):
    """`value` as the option's type: text is parsed (as in NAME[key=value]); a number, a flag or
    text of another type is an error, and so is a value outside a `Literal`'s choices."""
    kind = _kind(hint)
    if typing.get_origin(kind) is typing.Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise OptionError(f"{owner}: {key} is one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if isinstance(value, str) and kind is not str:
        try:
            if kind is bool:
                return value.lower() in ("1", "true", "yes", "on")
            return kind(value) if kind in (int, float) else value
        except ValueError:
            raise OptionError(f"{owner}: {key} takes {kind.__name__} values, got {value!r}") from None
    fits = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not fits and not isinstance(value, (list, tuple)):  # a list is a parsed value (cues)
        raise OptionError(f"{owner}: {key} takes {kind.__name__} values, got {value!r}")
    return value


def options_from_text(cls: type, text: str) -> dict:
    """Typed options for `cls.Config` from "key=value key=value" (a strategy variant's options)."""
    return parse_options(f"strategy {cls.name!r}", cls.Config, text)


def parse_options(owner: str, config: type, text: str) -> dict:
    """Typed options for the dataclass `config` from "key=value key=value"."""
    hints, own = typing.get_type_hints(config), {f.name for f in dataclasses.fields(config)}
    options = {}
    for item in text.split():
        key, _, value = item.partition("=")
        key = key.replace("-", "_")
        if key not in own:
            raise OptionError(f"{owner} has no option {key!r}; it has: {', '.join(sorted(own)) or 'none'}")
        options[key] = _typed(owner, key, value, hints[key])
    return options


def split_variant(text: str) -> tuple[str, str | None]:
    """`relaygen[cues=none speculative=4]` -> ("relaygen", "cues=none speculative=4"); no
    brackets: (name, None)."""
    match = re.fullmatch(r"([\w-]+)(?:\[(.*)\])?", text.strip())
    if not match:
        raise RelaykitError(f"bad strategy {text!r}; write NAME or NAME[option=value option=value]")
    return match.group(1), match.group(2)


_SWEEP = re.compile(r"(?<=[\[ ])\w+=(?P<first>\d+)\.\.(?P<last>\d+)(?=[\] ])")


def split_variants(text: str) -> list[str]:
    """"small,relaygen[cues=Wait,|So]" -> ["small", "relaygen[cues=Wait,|So]"]: only commas outside
    brackets separate variants. A sweep `n=1..64` in a variant's options gives one variant per
    power of two from 1 to 64 (a curve of that strategy in the report)."""
    names, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            names.append(text[start:i])
            start = i + 1
    names.append(text[start:])
    return [swept for name in names if name.strip() for swept in _sweep(name.strip())]


def _sweep(name: str) -> list[str]:
    """"best-of-n[n=1..8]" -> ["best-of-n[n=1]", "best-of-n[n=2]", "best-of-n[n=4]", "best-of-n[n=8]"]."""
    found = _SWEEP.search(name) if "[" in name else None
    if found is None:
        return [name]
    first, last = int(found["first"]), int(found["last"])
    if not 1 <= first <= last:
        raise RelaykitError(f"{name}: a sweep needs 1 <= first <= last, got {found[0]}")
    values = [first * 2**i for i in range((last // first).bit_length()) if first * 2**i <= last]
    return [name[: found.start("first")] + str(v) + name[found.end("last") :] for v in values]


def add_dataclass_options(group, config: type, skip: tuple[str, ...] = ()) -> None:
    """One flag per scalar field of the dataclass `config` (a trainer's), help from the field's
    comment; nested dataclasses are flattened (`sft.steps` -> --sft-steps), but the fields of one
    named `train` keep their own names (--steps). Read back with `config_from_args`."""
    for path, kind, default, comment in _scalar_fields(config, config()):
        key = "_".join(part for part in path if part != "train")
        if key in skip:
            continue
        help_text = (f"{comment} (default {default})" if comment else f"default {default}").replace("%", "%%")
        group.add_argument(flag(key), dest="cfg_" + "__".join(path), default=None, help=help_text,
                           **_reading(key, kind))


def config_from_args(config: type, args: argparse.Namespace, **given):
    """`config(**given)` with the fields its flags (`add_dataclass_options`) set; a negative count
    or rate is an error."""
    value = config(**given)
    for dest, setting in options_from_args(args, "cfg_").items():
        path = dest.split("__")
        if isinstance(setting, (int, float)) and not isinstance(setting, bool) and setting < 0:
            raise OptionError(f"{flag('_'.join(p for p in path if p != 'train'))} must be >= 0, got {setting}")
        value = _replaced(value, path, setting)
    return value


def _replaced(value, path: list[str], setting):
    if len(path) == 1:
        return dataclasses.replace(value, **{path[0]: setting})
    return dataclasses.replace(value, **{path[0]: _replaced(getattr(value, path[0]), path[1:], setting)})


def _scalar_fields(config: type, instance, path: tuple[str, ...] = ()):
    """(path, type, default, comment) of every int, float, bool or str field, nested ones too."""
    hints, comments = typing.get_type_hints(config), field_comments(config)
    for field in dataclasses.fields(config):
        kind, default = hints[field.name], getattr(instance, field.name)
        if dataclasses.is_dataclass(kind):
            yield from _scalar_fields(kind, default, (*path, field.name))
        elif _kind(kind) in (int, float, bool, str) or typing.get_origin(_kind(kind)) is typing.Literal:
            yield (*path, field.name), kind, default, comments.get(field.name)
