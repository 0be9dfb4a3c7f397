"""relaykit's own forward for Llama-family decoders (Llama, Qwen2, Qwen3, Mistral without a
sliding window, SmolLM): the checkpoint's weights, relaykit's attention over a preallocated per-row
KV cache: no per-step cache objects, masks only when rows differ, logits only where asked."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..engine import Weights
from ..kv import KVCache, KVPolicy
from .attention import attention
from .linear import packs_bfloat16
from .plan import EXACT_CHUNK, plan_forward
from .rope import RotaryTable, rotate
from .weights import NativeWeights, native_weights

NATIVE_MODEL_TYPES = {"llama", "qwen2", "qwen3", "mistral"}
STATIC_ROPE_TYPES = {"default", "linear", "llama3", "yarn"}  # rotary tables that do not depend on length


def supports_native(hf_model: Any) -> bool:
    """Whether `NativeEngine` computes exactly what the model's own forward computes."""
    config = hf_model.config
    if config.model_type not in NATIVE_MODEL_TYPES:
        return False
    window = getattr(config, "sliding_window", None)
    uses_window = window is not None and getattr(config, "use_sliding_window", True)
    if uses_window and window < config.max_position_embeddings:
        return False
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    layer_types = getattr(config, "layer_types", None) or []
    return (
        rope_type in STATIC_ROPE_TYPES
        and not getattr(config, "mlp_bias", False)
        and all(t == "full_attention" for t in layer_types)
    )


class NativeEngine:
    """Llama-family forward over a `KVCache` whose rows may hold different lengths.

    The KV policy's `begin` runs before every forward (it may drop slots) and returns None, for
    plain SDPA, or an `Attention` that computes this forward's attention (RPC on the forwards
    that feed selector tokens, H2O on every forward). The weights are the engine's own
    (`native_weights`): the model is read, never changed."""

    runs_kv_policies: ClassVar[bool] = True

    def __init__(self, model: Weights, policy: KVPolicy | None = None):
        hf_model: Any = model.hf  # a Hugging Face Llama-family causal LM
        self.model = hf_model
        self.body = hf_model.model
        config = hf_model.config
        self.head_dim = self.body.layers[0].self_attn.head_dim
        self.kv_heads, self.heads = config.num_key_value_heads, config.num_attention_heads
        self.policy = policy or KVPolicy()
        param = next(hf_model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.cache = KVCache(len(self.body.layers), self.kv_heads, self.head_dim, param.dtype, param.device, self.heads)
        self.policy.attach(self.cache)
        self.embedding = self.body.embed_tokens.weight
        self.format = "int8" if model.int8 else "packed" if packs_bfloat16(param.dtype, param.device) else "plain"
        self.weights: NativeWeights = native_weights(hf_model, self.format)
        self.activation = F.silu if config.hidden_act == "silu" else self.body.layers[0].mlp.act_fn
        self.rope = RotaryTable(self.body.rotary_emb, self.head_dim, self.dtype, self.device)
        # a chunk of positions rounds differently than each position alone: in float32 by ~1e-7 (no
        # flipped choice seen), in low precision enough to flip near-ties, so there a verification
        # chunk is computed as decoding would (see `forward`): speculative greedy equals greedy
        self.exact_positions = self.dtype != torch.float32

    @property
    def lengths(self) -> list[int]:
        return self.cache.lengths.tolist()

    @torch.inference_mode()
    def add_rows(self, count: int) -> None:
        self.cache.add_rows(count)

    @torch.inference_mode()
    def keep_rows(self, rows: list[int]) -> None:
        self.cache.keep_rows(rows)

    @torch.inference_mode()
    def copy_row(self, source: int, target: int) -> None:
        self.cache.copy_row(source, target)

    move_row = copy_row  # the source row is cleared or reused afterwards

    @torch.inference_mode()
    def clear_row(self, row: int) -> None:
        self.cache.clear_row(row)

    @torch.inference_mode()
    def truncate(self, row: int, length: int) -> None:
        self.cache.truncate(row, length)

    def kv_bytes(self) -> int:
        return self.cache.nbytes()

    def kv_peak_bytes(self) -> int:
        return self.cache.peak_bytes

    def kv_slot_bytes(self) -> int:
        return self.cache.slot_bytes()

    @torch.inference_mode()
    def forward(self, tokens: list[list[int]], positions: list[int], wanted: list[int]) -> torch.Tensor:
        """Feed `tokens[b]` to row b (positions from `positions[b]`); logits [F, K, V] of the last
        K fed tokens of each of the F rows fed something (in row order), K = max(wanted), of which
        row b needs its last `wanted[b]` (rows fed fewer tokens get garbage before those).

        In low precision (`exact_positions`), one row's wanted positions (a verification) are fed
        apart from the tokens before them, so that both parts are computed as when decoding them."""
        if self.exact_positions and self.policy.name == "full" and sum(map(bool, tokens)) == 1:
            b = next(b for b, t in enumerate(tokens) if t)
            last = wanted[b]
            if 0 < last <= EXACT_CHUNK and last < len(tokens[b]):
                self.forward([t[:-last] for t in tokens], positions, [0] * len(tokens))
                after = [p + len(t) - last for p, t in zip(positions, tokens, strict=True)]
                return self.forward([t[-last:] for t in tokens], after, wanted)
        if self.weights.stale:  # a weight changed in place (training): derive the engine's weights again
            self.weights = native_weights(self.model, self.format)
        weights, cache = self.weights, self.cache
        plan = plan_forward(cache, self.policy, tokens, positions, wanted, self.exact_positions)
        batch, width, head_dim = plan.batch, plan.width, self.head_dim
        q_width, kv_width = self.heads, self.kv_heads
        hidden = self.embedding[plan.ids]
        cos, sin = self.rope.at(plan.position_ids, plan.rope_end, width)
        for index, layer in enumerate(weights.layers):
            qkv = layer.qkv.forward(layer.input_norm(hidden)).view(batch, width, q_width + 2 * kv_width, head_dim)
            qkv = qkv.transpose(1, 2)
            if layer.qk_norms is not None:  # Qwen3 normalises q and k per head before rotation
                q_norm, k_norm = layer.qk_norms
                q, k, v = qkv.split_with_sizes([q_width, kv_width, kv_width], 1)
                q, k = rotate(q_norm(q), cos, sin), rotate(k_norm(k), cos, sin)
            else:  # rotate q and k in one go
                qk, v = qkv.split_with_sizes([q_width + kv_width, kv_width], 1)
                q, k = rotate(qk, cos, sin).split_with_sizes([q_width, kv_width], 1)
            out = attention(plan, cache, index, q, k, v, layer.scaling).transpose(1, 2).reshape(batch, width, -1)
            hidden = hidden + layer.o.forward(out)
            gate, up = layer.gate_up.forward(layer.post_norm(hidden)).chunk(2, dim=-1)
            hidden = hidden + layer.down.forward(self.activation(gate) * up)
        plan.finish(cache)
        normed = weights.final_norm(plan.wanted(hidden))
        module, head = self.model._modules["lm_head"], weights.head  # read each time: a router may replace it
        if head is not None and module is weights.head_of:
            return head.forward(normed).float()
        if type(module) is not torch.nn.Linear:
            return module(normed).float()
        return F.linear(normed, module.weight, module.bias).float()
