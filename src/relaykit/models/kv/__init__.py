"""KV cache storage for a batch of rows of different lengths, and pluggable cache policies.

Policies (one fresh copy per runner; options are dataclass fields):
  full       keep everything
  rpc        Reasoning Path Compression (Song et al. 2025)
  h2o        heavy hitters plus a recent window (Zhang et al. 2023)
  streaming  attention sinks plus a recent window (Xiao et al. 2023)
"""

from dataclasses import fields

from ...errors import RelaykitError
from .cache import KVCache
from .eviction import H2OPolicy, StreamingPolicy
from .policy import Attention, KVPolicy
from .rpc import RPCPolicy

__all__ = ["Attention", "H2OPolicy", "KVCache", "KVPolicy", "RPCPolicy", "StreamingPolicy", "make_policy"]

POLICIES: dict[str, type[KVPolicy]] = {p.name: p for p in (KVPolicy, RPCPolicy, H2OPolicy, StreamingPolicy)}


def make_policy(name: str = "full", **options) -> KVPolicy:
    """A KV policy by name with options (dataclass fields); a clear error for anything unknown."""
    if name not in POLICIES:
        raise RelaykitError(f"unknown KV policy {name!r}; available: {', '.join(POLICIES)}")
    policy = POLICIES[name]
    known = [f.name for f in fields(policy)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise RelaykitError(f"KV policy {name!r} has no option {', '.join(unknown)}; options: {', '.join(known) or 'none'}")
    return policy(**options)
