"""KV cache storage for a batch of rows of different lengths, and pluggable cache policies.

Policies (one fresh copy per runner; options are dataclass fields), each a module of this
package registered by name (`register`):
  full       keep everything
  rpc        Reasoning Path Compression (Song et al. 2025)
  h2o        heavy hitters plus a recent window (Zhang et al. 2023)
  streaming  attention sinks plus a recent window (Xiao et al. 2023)
"""

import sys

from ...errors import RelaykitError
from ...options import make_config, parse_options, split_variant
from ...registry import import_all
from .cache import KVCache
from .policy import POLICIES, Attention, KVPolicy, register

__all__ = ["Attention", "KVCache", "KVPolicy", "POLICIES", "load_all", "make_policy", "parse_policy", "register"]


def load_all() -> dict[str, type[KVPolicy]]:
    """Every KV policy, by name (each module of this package registers its own)."""
    import_all(sys.modules[__name__])
    return POLICIES


def make_policy(name: str = "full", **options) -> KVPolicy:
    """A KV policy by name with options (dataclass fields); a clear error for anything unknown."""
    policies = load_all()
    if name not in policies:
        raise RelaykitError(f"unknown KV policy {name!r}; available: {', '.join(policies)}")
    return make_config(f"KV policy {name!r}", policies[name], options)


def parse_policy(text: str) -> KVPolicy:
    """`rpc[ratio=8 per_group=true]` (or a bare name) -> that policy."""
    name, options = split_variant(text)
    policies = load_all()
    if name not in policies:
        raise RelaykitError(f"unknown KV policy {name!r}; available: {', '.join(policies)}")
    return make_policy(name, **(parse_options(f"KV policy {name!r}", policies[name], options) if options else {}))
