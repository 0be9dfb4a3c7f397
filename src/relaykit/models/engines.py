"""Forward engines: run one model over new tokens of a batch of cache rows.

`NativeEngine` runs Llama-family decoders (Llama, Qwen2, Qwen3, Mistral without a sliding
window, SmolLM) with the checkpoint's own modules but relaykit's attention over a preallocated
per-row KV cache: no per-step cache objects, masks only when rows differ, logits only where
asked. `HFEngine` is the generic fallback: the model's own forward with one DynamicCache per row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kv import KVCache, KVPolicy

NATIVE_MODEL_TYPES = {"llama", "qwen2", "qwen3", "mistral"}


def supports_native(hf_model) -> bool:
    """Whether `NativeEngine` computes exactly what the model's own forward computes."""
    config = hf_model.config
    if config.model_type not in NATIVE_MODEL_TYPES:
        return False
    window = getattr(config, "sliding_window", None)
    uses_window = window is not None and getattr(config, "use_sliding_window", True)
    if uses_window and window < config.max_position_embeddings:
        return False
    layer_types = getattr(config, "layer_types", None) or []
    return all(t == "full_attention" for t in layer_types)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class NativeEngine:
    """Llama-family forward over a `KVCache` whose rows may hold different lengths."""

    def __init__(self, hf_model, policy: KVPolicy | None = None):
        self.model = hf_model
        self.body = hf_model.model
        config = hf_model.config
        attention = self.body.layers[0].self_attn
        self.head_dim = attention.head_dim
        self.kv_heads = config.num_key_value_heads
        self.heads = config.num_attention_heads
        self.policy = policy or KVPolicy()
        param = next(hf_model.parameters())
        self.cache = KVCache(len(self.body.layers), self.kv_heads, self.head_dim, param.dtype, param.device)
        self.device = param.device

    @property
    def lengths(self) -> list[int]:
        return self.cache.lengths.tolist()

    def add_rows(self, count: int) -> None:
        self.cache.add_rows(count)

    def keep_rows(self, rows: list[int]) -> None:
        self.cache.keep_rows(rows)

    def truncate(self, row: int, length: int) -> None:
        self.cache.truncate(row, length)

    @torch.inference_mode()
    def forward(self, tokens: list[list[int]], positions: list[int], last_k: int) -> torch.Tensor:
        """Feed `tokens[b]` to row b (positions from `positions[b]`); logits [B, last_k, V] of
        each row's last `last_k` fed tokens (rows fed fewer tokens get garbage there)."""
        cache = self.cache
        batch, width = len(tokens), max(len(t) for t in tokens)
        starts = cache.lengths.tolist()
        cache.reserve(max(starts) + width)
        same_start = min(starts) == max(starts)
        ids = torch.tensor([t + [0] * (width - len(t)) for t in tokens], dtype=torch.long, device=self.device)
        position_ids = torch.tensor(positions, dtype=torch.long, device=self.device)[:, None] + torch.arange(
            width, device=self.device
        )
        span = max(starts) + width  # slots attended by any row
        mask = None
        if not (same_start and width == 1):
            slot = torch.arange(span, device=self.device)
            limit = cache.lengths.to(self.device)[:, None] + torch.arange(width, device=self.device) + 1
            mask = (slot[None, None, :] < limit[:, :, None])[:, None]  # [B, 1, width, span]
        if not same_start:
            write_index = (cache.lengths.to(self.device)[:, None] + torch.arange(width, device=self.device))
            write_index = write_index[:, None, :, None].expand(batch, self.kv_heads, width, self.head_dim)

        hidden = self.body.embed_tokens(ids)
        cos, sin = self.body.rotary_emb(hidden, position_ids)
        cos, sin = cos[:, None], sin[:, None]
        for index, layer in enumerate(self.body.layers):
            attention = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attention.q_proj(x).view(batch, width, self.heads, self.head_dim)
            k = attention.k_proj(x).view(batch, width, self.kv_heads, self.head_dim)
            v = attention.v_proj(x).view(batch, width, self.kv_heads, self.head_dim).transpose(1, 2)
            if hasattr(attention, "q_norm"):
                q, k = attention.q_norm(q), attention.k_norm(k)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            keys, values = cache.keys[index], cache.values[index]
            if same_start:
                keys[:, :, starts[0] : starts[0] + width] = k
                values[:, :, starts[0] : starts[0] + width] = v
            else:
                keys.scatter_(2, write_index, k)
                values.scatter_(2, write_index, v)
            out = F.scaled_dot_product_attention(
                q,
                keys[:, :, :span],
                values[:, :, :span],
                attn_mask=mask,
                scale=attention.scaling,
                enable_gqa=self.heads != self.kv_heads,
            )
            hidden = hidden + attention.o_proj(out.transpose(1, 2).reshape(batch, width, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))

        fed = torch.tensor([len(t) for t in tokens], dtype=torch.long, device=self.device)
        cache.lengths += fed.cpu()
        self.policy.after_forward(cache)
        pick = (fed[:, None] - last_k + torch.arange(last_k, device=self.device)).clamp(min=0)
        chosen = hidden.gather(1, pick[:, :, None].expand(batch, last_k, hidden.shape[-1]))
        return self.model.lm_head(self.body.norm(chosen)).float()


class HFEngine:
    """Any causal LM through its own forward; one DynamicCache per row (rows run one by one)."""

    def __init__(self, hf_model):
        self.model = hf_model
        self.caches: list = []
        self.device = next(hf_model.parameters()).device

    @property
    def lengths(self) -> list[int]:
        return [c.get_seq_length() for c in self.caches]

    def add_rows(self, count: int) -> None:
        from transformers import DynamicCache

        self.caches += [DynamicCache(config=self.model.config) for _ in range(count)]

    def keep_rows(self, rows: list[int]) -> None:
        self.caches = [self.caches[r] for r in rows]

    def truncate(self, row: int, length: int) -> None:
        current = self.caches[row].get_seq_length()
        if length < current:
            self.caches[row].crop(length - current)  # a negative count removes tokens (transformers 4 and 5)

    @torch.inference_mode()
    def forward(self, tokens: list[list[int]], positions: list[int], last_k: int) -> torch.Tensor:
        rows = []
        for row_tokens, position, cache in zip(tokens, positions, self.caches):
            if not row_tokens:
                rows.append(None)
                continue
            ids = torch.tensor([row_tokens], dtype=torch.long, device=self.device)
            position_ids = torch.arange(position, position + len(row_tokens), device=self.device)[None]
            out = self.model(
                input_ids=ids, position_ids=position_ids, past_key_values=cache, use_cache=True, logits_to_keep=last_k
            )
            logits = out.logits[0].float()
            if logits.shape[0] < last_k:
                logits = torch.cat([logits.new_zeros(last_k - logits.shape[0], logits.shape[1]), logits])
            rows.append(logits)
        vocab = next(r for r in rows if r is not None).shape[-1]
        return torch.stack([r if r is not None else torch.zeros(last_k, vocab, device=self.device) for r in rows])
