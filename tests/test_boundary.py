"""The runtime boundary: imports only go down the layers, strategies do no I/O when built, one
options grammar for strategies and KV policies."""

from __future__ import annotations

import ast
import builtins
import dataclasses
from pathlib import Path

import pytest

from relaykit.errors import OptionError
from relaykit.models.kv import POLICIES, load_all, parse_policy
from relaykit.options import config_from_dict, split_variants
from relaykit.resolve import resolve
from relaykit.strategies.base import load_all as load_strategies
from relaykit.strategies.base import parse_variant

SRC = Path(__file__).resolve().parents[1] / "src" / "relaykit"
# what a package may not import (its own layer or a higher one)
FORBIDDEN = {
    "strategies": ("api", "toyworld", "train", "evals", "calibrate", "resolve", "serve", "cli"),
    "models": ("runtime", "strategies", "api", "serve", "cli"),
    "runtime": ("strategies", "api", "serve", "cli", "train", "calibrate", "evals"),
}


def imports_of(path: Path) -> set[str]:
    """Modules `path` imports (anywhere in it, lazy imports too), as dotted names under relaykit."""
    module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)  # `from . import x` names a module
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("relaykit")}


def test_imports_only_go_down_the_layers():
    wrong = []
    for package, forbidden in FORBIDDEN.items():
        for path in (SRC / package).rglob("*.py"):
            for name in imports_of(path):
                if name.count(".") and name.split(".")[1] in forbidden:
                    wrong.append(f"{path.relative_to(SRC)} imports {name}")
    assert not wrong


def test_no_import_circle():
    modules = {".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in SRC.rglob("*.py")}
    graph = {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}
    # a package's __init__ that only hands names on is not a room of its own: skip edges into packages
    graph = {name: {m for m in edges if modules[m].name != "__init__.py"} for name, edges in graph.items()}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for child in graph[name]:
            if state.get(child) == 1:
                return path + [child]
            if child not in state:
                cycle = visit(child, path + [child])
                if cycle:
                    return cycle
        state[name] = 2
        return None

    for name in graph:
        if name not in state:
            cycle = visit(name, [name])
            assert cycle is None, " -> ".join(cycle)


def test_strategies_read_no_files_when_built(shipped_pair, monkeypatch):
    """Files are read by the resolver; a strategy's constructor gets them read."""
    models = dict(shipped_pair)
    specs = {"expert": {"name": "add"}}
    built = 0
    for name, cls in sorted(load_strategies().items()):
        if any(role not in models and not role.startswith("expert") for role in cls.roles_of(cls.Config())):
            continue
        config, mine = resolve(cls, config_from_dict(cls, specs.get(name, {})), models)

        def refuse(*args, name=name, **kwargs):
            raise AssertionError(f"{name} read a file while being built")

        with monkeypatch.context() as patched:
            patched.setattr(builtins, "open", refuse)
            patched.setattr(Path, "read_text", refuse)
            patched.setattr(Path, "read_bytes", refuse)
            cls(mine, config)
        built += 1
    assert built >= 15


def test_one_grammar_for_strategies_and_kv_policies():
    assert split_variants("large,best-of-n[n=1..4 inner=relaygen[cues=none]]")[1:] == [
        "best-of-n[n=1 inner=relaygen[cues=none]]", "best-of-n[n=2 inner=relaygen[cues=none]]",
        "best-of-n[n=4 inner=relaygen[cues=none]]"]
    cls, options = parse_variant("best-of-n[rerank=likelihood n=3]")
    assert cls.name == "best-of-n" and options == {"rerank": "likelihood", "n": 3}
    with pytest.raises(OptionError, match="rerank is one of majority"):
        parse_variant("best-of-n[rerank=loudest]")
    policy = parse_policy("rpc[ratio=8 per_group=true kernel=5]")
    assert (policy.name, policy.ratio, policy.per_group, policy.kernel) == ("rpc", 8.0, True, 5)
    with pytest.raises(OptionError, match="has no option"):
        parse_policy("h2o[colour=red]")
    assert set(load_all()) == set(POLICIES) >= {"full", "rpc", "h2o", "streaming"}


def test_every_kv_option_has_a_flag():
    from relaykit.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    flags = set(commands["eval"]._option_string_actions)
    for policy in POLICIES.values():
        for field in dataclasses.fields(policy):
            assert "--kv-" + field.name.replace("_", "-") in flags
