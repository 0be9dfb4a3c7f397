"""The native engine's own weights: per layer, fused q/k/v and gate/up products (plain, packed
bfloat16 or int8) and the norms, built from a Hugging Face model without changing it.

The model's modules keep their parameters; what the engine derives (fused copies, packed or
quantised products, float32 norm weights) is built once per model and format and shared by every
engine of that model (`native_weights`). In the plain format the fused copies hold q/k/v and
gate/up again (about two thirds of a layer's weights); packed and int8 products replace them.

They are rebuilt when a weight changes in place (a training step), as tensors count their in-place
changes (`_version`): PyTorch optimizers' default and foreach steps do, fused steps (`fused=True`)
do not, so after those the engines go on with the old weights."""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from .linear import Int8Linear, Linear, PackedLinear, float32_rms_norm

Product = Linear | Int8Linear | PackedLinear


class LayerWeights(NamedTuple):
    """What a forward uses of one decoder layer, looked up once."""

    input_norm: Callable
    qkv: Product  # q, k and v in one product (with their biases, Qwen2)
    qk_norms: tuple[Callable, Callable] | None  # Qwen3's per-head norms of q and k
    scaling: float
    o: Product
    post_norm: Callable
    gate_up: Product  # gate and up in one product
    down: Product


@dataclass
class NativeWeights:
    """Every layer's weights, the final norm, and the output head when it is packed or quantised
    (`head_of`: the lm_head module it was made from; a router that replaces it is read instead)."""

    layers: list[LayerWeights]
    final_norm: Callable
    head: Product | None
    head_of: torch.nn.Module | None
    sources: list[torch.Tensor]  # the model's tensors these were derived from
    version: int

    @property
    def stale(self) -> bool:
        """Whether a source tensor changed in place since these were built."""
        return version(self.sources) != self.version


_COUNTER = operator.attrgetter("_version")


def version(tensors: list[torch.Tensor]) -> int:
    """The sum of the tensors' in-place change counters (counters only grow)."""
    return sum(map(_COUNTER, tensors))


PRODUCTS: dict[str, Callable[..., Product]] = {"plain": Linear, "int8": Int8Linear, "packed": PackedLinear}


def norm(module: Any, dtype: torch.dtype) -> Callable:
    """An RMS norm as a callable: `float32_rms_norm` in float32, else the module itself."""
    return float32_rms_norm(module) if dtype == torch.float32 else module


@torch.no_grad()
def build(hf_model: Any, fmt: str) -> NativeWeights:
    """The weights of `hf_model` in format `fmt` (plain, packed or int8)."""
    body, dtype = hf_model.model, next(hf_model.parameters()).dtype
    make = PRODUCTS[fmt]
    layers = []
    for layer in body.layers:
        attention, mlp = layer.self_attn, layer.mlp
        projections = [attention.q_proj, attention.k_proj, attention.v_proj]
        qkv_bias = torch.cat([m.bias for m in projections]) if attention.q_proj.bias is not None else None
        qk_norm = hasattr(attention, "q_norm")
        layers.append(LayerWeights(
            input_norm=norm(layer.input_layernorm, dtype),
            qkv=make(torch.cat([m.weight for m in projections]), qkv_bias),
            qk_norms=(norm(attention.q_norm, dtype), norm(attention.k_norm, dtype)) if qk_norm else None,
            scaling=attention.scaling,
            o=make(attention.o_proj.weight, attention.o_proj.bias),
            post_norm=norm(layer.post_attention_layernorm, dtype),
            gate_up=make(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])),
            down=make(mlp.down_proj.weight, mlp.down_proj.bias),
        ))
    lm_head = hf_model.lm_head
    packs_head = fmt != "plain" and type(lm_head) is torch.nn.Linear and lm_head.bias is None
    sources = [p for p in (*body.layers.parameters(), *body.norm.parameters()) if not p.is_inference()]
    if packs_head and not lm_head.weight.is_inference():
        sources.append(lm_head.weight)
    return NativeWeights(layers, norm(body.norm, dtype), make(lm_head.weight) if packs_head else None,
                         lm_head if packs_head else None, sources, version(sources))


_shared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {format: NativeWeights}


def native_weights(hf_model: Any, fmt: str) -> NativeWeights:
    """`hf_model`'s weights in format `fmt`, shared by its engines; rebuilt when stale."""
    formats = _shared.setdefault(hf_model, {})
    weights = formats.get(fmt)
    if weights is None or weights.stale:
        weights = formats[fmt] = build(hf_model, fmt)
    return weights
