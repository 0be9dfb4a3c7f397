"""Registries by name (strategies, KV policies): a class registers itself with a decorator, and a
package's modules are imported once so that every class in them has."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType


def registrar(table: dict[str, type]) -> Callable[[str], Callable[[type], type]]:
    """`register = registrar(TABLE)`; then `@register(name)` sets a class's `name` and adds it to TABLE."""

    def register(name: str) -> Callable[[type], type]:
        def wrap(cls: type) -> type:
            cls.name = name  # type: ignore[attr-defined]
            table[name] = cls
            return cls

        return wrap

    return register


def import_all(package: ModuleType) -> None:
    """Import every module of `package`, so that the classes in them register themselves."""
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
