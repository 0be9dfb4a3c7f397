"""relaykit's native engine: Llama-family forwards over a preallocated KV cache.

engine (the engine and the models it runs) <- plan (a forward's layout) and attention (its paths),
rope, weights (the engine's own fused, packed or int8 products, shared per model) <- linear."""

from .engine import NativeEngine, supports_native

__all__ = ["NativeEngine", "supports_native"]
