"""Forward engines: run one model over new tokens of a batch of cache rows.

`NativeEngine` runs Llama-family decoders (Llama, Qwen2, Qwen3, Mistral without a sliding
window, SmolLM) with the checkpoint's own modules but relaykit's attention over a preallocated
per-row KV cache: no per-step cache objects, masks only when rows differ, logits only where
asked. `HFEngine` is the generic fallback: the model's own forward with one DynamicCache per row.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .kv import KVCache, KVPolicy

NATIVE_MODEL_TYPES = {"llama", "qwen2", "qwen3", "mistral"}
STATIC_ROPE_TYPES = {"default", "linear", "llama3", "yarn"}  # rotary tables that do not depend on length
EXACT_CHUNK = 32  # longest chunk a low-precision forward attends position by position (see NativeEngine)


def supports_native(hf_model) -> bool:
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


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE: x * cos + rotate_half(x) * sin, with rotate_half's sign moved into `sin` (its first
    half negated), so that the halves swap in one op (exactly the same products)."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin


def _fuse(linears: list[torch.nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One weight (and bias) for several projections of the same input; the modules' own
    parameters become views into it, so memory is not duplicated and the modules still work."""
    weight = torch.cat([m.weight.data for m in linears])
    bias = torch.cat([m.bias.data for m in linears]) if linears[0].bias is not None else None
    start = 0
    for m in linears:
        rows = m.weight.shape[0]
        m.weight.data = weight[start : start + rows]
        if bias is not None:
            m.bias.data = bias[start : start + rows]
        start += rows
    return weight, bias


def fused_projections(hf_model) -> list[tuple]:
    """Per layer: (q/k/v weight, q/k/v bias, gate/up weight), fused once per model."""
    if not hasattr(hf_model, "_relaykit_fused"):
        fused = []
        for layer in hf_model.model.layers:
            attention, mlp = layer.self_attn, layer.mlp
            qkv_weight, qkv_bias = _fuse([attention.q_proj, attention.k_proj, attention.v_proj])
            gate_up, _ = _fuse([mlp.gate_proj, mlp.up_proj])
            fused.append((qkv_weight, qkv_bias, gate_up))
        hf_model._relaykit_fused = fused
    return hf_model._relaykit_fused


class Int8Weight(NamedTuple):
    """A weight-only int8 matrix: int8 rows and one scale per row (symmetric, per channel)."""

    weight: torch.Tensor
    scales: torch.Tensor


def quantize_int8(weight: torch.Tensor) -> Int8Weight:
    scales = weight.float().abs().amax(1).clamp(min=1e-8) / 127
    quantized = torch.round(weight.float() / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return Int8Weight(quantized, scales.to(weight.dtype))


class PackedWeight(NamedTuple):
    """A bfloat16 matrix in oneDNN's blocked layout, reordered once. F.linear reorders a bfloat16
    weight on every call, which costs as much as the product itself; the packed product computes
    the same numbers (tests/test_loading.py). A lone row is multiplied as two: oneDNN sums one row
    in another order than several, and rows of 2-33 agree (measured), so that a verification
    chunk's rows equal decoding them one by one."""

    weight: torch.Tensor  # torch._mkldnn layout


def packs_bfloat16(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether bfloat16 weights on `device` are packed for oneDNN (CPUs whose oneDNN does bfloat16)."""
    return (dtype == torch.bfloat16 and device.type == "cpu" and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pack_bfloat16(weight: torch.Tensor) -> PackedWeight:
    return PackedWeight(torch.ops.mkldnn._reorder_linear_weight(weight, 1))


def _linear(x: torch.Tensor, weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, or oneDNN's product with a `PackedWeight`, or PyTorch's int8 weight-only kernel
    for an `Int8Weight`."""
    if isinstance(weight, PackedWeight):
        if x.numel() == x.shape[-1]:  # a lone row: oneDNN would sum it in another order than a chunk's rows
            return torch.ops.mkldnn._linear_pointwise(x.expand(*x.shape[:-2], 2, x.shape[-1]).contiguous(), weight.weight,
                                                      bias, "none", [], "")[..., :1, :]
        return torch.ops.mkldnn._linear_pointwise(x, weight.weight, bias, "none", [], "")
    if not isinstance(weight, Int8Weight):
        return F.linear(x, weight, bias)
    out = torch._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), weight.weight, weight.scales)
    out = out.view(*x.shape[:-1], out.shape[-1])  # not -1: a prefill asks for no positions
    return out if bias is None else out + bias


def _norm(module, dtype: torch.dtype):
    """An RMS norm module as a function: in float32 a layer norm over [x, -x] (mean exactly 0,
    variance mean(x^2): the same norm to float32 rounding), which takes two thirds of the time of
    `F.rms_norm` (a composite of ~8 calls here) on a decode step's few positions and, like it,
    normalises each position on its own; in other dtypes the module itself."""
    if dtype != torch.float32:
        return module
    weight, eps = module.weight, module.variance_epsilon
    width = weight.shape[0]
    doubled = torch.cat([weight, weight])
    return lambda x: F.layer_norm(torch.cat([x, -x], -1), (2 * width,), doubled, None, eps)[..., :width]


class _Layer(NamedTuple):
    """What a forward uses of one decoder layer, looked up once (weights may be `Int8Weight`s or
    `PackedWeight`s)."""

    input_norm: Callable
    qkv: torch.Tensor | Int8Weight | PackedWeight
    qkv_bias: torch.Tensor | None
    q_norm: Callable | None  # Qwen3's per-head norms of q and k
    k_norm: Callable | None
    scaling: float
    o: torch.Tensor | Int8Weight | PackedWeight
    o_bias: torch.Tensor | None
    post_norm: Callable
    gate_up: torch.Tensor | Int8Weight | PackedWeight
    down: torch.Tensor | Int8Weight | PackedWeight
    down_bias: torch.Tensor | None


class NativeEngine:
    """Llama-family forward over a `KVCache` whose rows may hold different lengths.

    The KV policy's `begin` runs before every forward (it may drop slots) and returns None, for
    plain SDPA, or an `Attention` that computes this forward's attention (RPC on the forwards
    that feed selector tokens, H2O on every forward)."""

    def __init__(self, hf_model, policy: KVPolicy | None = None, int8: bool = False):
        self.model = hf_model
        self.body = hf_model.model
        config = hf_model.config
        attention = self.body.layers[0].self_attn
        self.head_dim = attention.head_dim
        self.kv_heads = config.num_key_value_heads
        self.heads = config.num_attention_heads
        self.policy = policy or KVPolicy()
        param = next(hf_model.parameters())
        self.cache = KVCache(len(self.body.layers), self.kv_heads, self.head_dim, param.dtype, param.device, self.heads)
        self.policy.attach(self.cache)
        self.device, self.dtype = param.device, param.dtype
        self.embedding = self.body.embed_tokens.weight
        self.head = None  # the model's own output head (a router's adds its routing weights)
        packed = not int8 and packs_bfloat16(param.dtype, param.device)
        quantized = quantize_int8 if int8 else pack_bfloat16 if packed else lambda weight: weight
        if (int8 or packed) and type(hf_model.lm_head) is torch.nn.Linear and hf_model.lm_head.bias is None:
            self.head = quantized(hf_model.lm_head.weight)
        qk_norm = hasattr(attention, "q_norm")
        self.layers = [
            _Layer(
                input_norm=_norm(layer.input_layernorm, param.dtype),
                qkv=quantized(qkv), qkv_bias=qkv_bias,
                q_norm=_norm(layer.self_attn.q_norm, param.dtype) if qk_norm else None,
                k_norm=_norm(layer.self_attn.k_norm, param.dtype) if qk_norm else None,
                scaling=layer.self_attn.scaling,
                o=quantized(layer.self_attn.o_proj.weight), o_bias=layer.self_attn.o_proj.bias,
                post_norm=_norm(layer.post_attention_layernorm, param.dtype),
                gate_up=quantized(gate_up),
                down=quantized(layer.mlp.down_proj.weight), down_bias=layer.mlp.down_proj.bias,
            )
            for (qkv, qkv_bias, gate_up), layer in zip(fused_projections(hf_model), self.body.layers)
        ]
        self.final_norm = _norm(self.body.norm, param.dtype)
        self.activation = F.silu if config.hidden_act == "silu" else self.body.layers[0].mlp.act_fn
        self.rope_cos = self.rope_sin = None
        # a chunk of positions rounds differently than each position alone: in float32 by ~1e-7 (no
        # flipped choice seen), in low precision enough to flip near-ties, so there a verification
        # chunk is computed as decoding would (see `forward`): speculative greedy equals greedy
        self.exact_positions = self.dtype != torch.float32

    def _rope(self, position_ids: torch.Tensor | None, end: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sign-folded sin (see `_rotate`) at `position_ids` [B, width] (all below `end`),
        [B, 1, width, head_dim]; None: every row at the `width` positions ending at `end`, then
        [width, head_dim]. From a table grown on demand (the model's own rotary module)."""
        if self.rope_cos is None or self.rope_cos.shape[0] < end:
            size = max(end, 2 * (0 if self.rope_cos is None else self.rope_cos.shape[0]), 256)
            probe = torch.zeros(1, dtype=self.dtype, device=self.device)  # the module reads only its dtype and device
            cos, sin = self.body.rotary_emb(probe, torch.arange(size, device=self.device)[None])
            half = self.head_dim // 2
            self.rope_cos, self.rope_sin = cos[0], torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)
        if position_ids is None:  # a slice of the table instead of a gather
            return self.rope_cos[end - width : end], self.rope_sin[end - width : end]
        return self.rope_cos[position_ids][:, None], self.rope_sin[position_ids][:, None]

    def _attend_one(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask, scaling: float) -> torch.Tensor:
        """Attention of one new token per row. Under GQA each KV head's query group attends as one
        block of queries, which avoids SDPA's repeat of keys and values per query head."""
        if self.heads == self.kv_heads:
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scaling)
        grouped = q.reshape(q.shape[0], self.kv_heads, self.heads // self.kv_heads, self.head_dim)
        out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask, scale=scaling)
        return out.reshape(q.shape[0], self.heads, 1, self.head_dim)

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

    @torch.inference_mode()
    def forward(self, tokens: list[list[int]], positions: list[int], wanted: list[int]) -> torch.Tensor:
        """Feed `tokens[b]` to row b (positions from `positions[b]`); logits [F, K, V] of the last
        K fed tokens of each of the F rows fed something (in row order), K = max(wanted), of which
        row b needs its last `wanted[b]` (rows fed fewer tokens get garbage before those).

        Only the fed rows are computed (a block of rows is read in place, scattered rows have their
        keys and values gathered), unless a policy takes over this forward's attention: policies
        work on every row of the cache.

        In low precision (`exact_positions`), one row's wanted positions (a verification) are fed
        apart from the tokens before them, so that both parts are computed as when decoding them."""
        if self.exact_positions and self.policy.name == "full" and sum(map(bool, tokens)) == 1:
            b = next(b for b, t in enumerate(tokens) if t)
            k = wanted[b]
            if 0 < k <= EXACT_CHUNK and k < len(tokens[b]):
                self.forward([t[:-k] for t in tokens], positions, [0] * len(tokens))
                return self.forward([t[-k:] for t in tokens], [p + len(t) - k for p, t in zip(positions, tokens)], wanted)
        cache = self.cache
        fed_counts = [len(t) for t in tokens]
        for row, (start, count, k) in enumerate(zip(cache.lengths.tolist(), fed_counts, wanted)):
            if start == 0 and count:  # a row's prompt: what it read before its first prediction
                cache.prompt_lengths[row] = max(count - k + 1, 1)
        policy_attention = self.policy.begin(cache, fed_counts, positions)  # None: plain attention
        fed_rows = [b for b, count in enumerate(fed_counts) if count]
        # the rows computed: a block of the cache (a view) or scattered rows (gathered)
        if policy_attention is not None or len(fed_rows) == len(tokens):
            rows = slice(None)
        elif fed_rows[-1] - fed_rows[0] + 1 == len(fed_rows):
            rows = slice(fed_rows[0], fed_rows[-1] + 1)
        else:
            rows = torch.tensor(fed_rows, dtype=torch.long, device=self.device)
        picked = range(len(tokens))[rows] if isinstance(rows, slice) else fed_rows
        tokens, positions = [tokens[b] for b in picked], [positions[b] for b in picked]
        lengths = cache.lengths.tolist()  # after the policy's drops
        starts = [lengths[b] for b in picked]
        batch, width, last_k = len(tokens), max(len(t) for t in tokens), max(wanted)
        cache.reserve(max(starts) + width)
        same_start = min(starts) == max(starts)
        ids = torch.tensor([t + [0] * (width - len(t)) for t in tokens], dtype=torch.long, device=self.device)
        shared = min(positions) == max(positions)  # then every row reads the same slice of the rotary table
        position_ids = None if shared else torch.tensor([range(p, p + width) for p in positions], device=self.device)
        span = max(starts) + width  # slots attended by any row
        starts_t = None if same_start else torch.tensor(starts, dtype=torch.long, device=self.device)
        mask = None  # [B or 1, 1, width, span]: the slots each query sees; None: all of [0, span)
        if not same_start:
            slot = torch.arange(span, device=self.device)
            limit = starts_t[:, None] + torch.arange(width, device=self.device) + 1
            mask = (slot[None, None, :] < limit[:, :, None])[:, None]
        elif width > 1:
            mask = torch.ones(width, span, dtype=torch.bool, device=self.device).tril_(starts[0])[None, None]
        additive = mask  # what SDPA would convert a boolean mask to in every layer, made once
        if mask is not None and policy_attention is None:
            additive = torch.zeros(mask.shape, dtype=self.dtype, device=self.device)
            additive.masked_fill_(~mask, float("-inf"))
        if self.policy.name != "full":  # positions are read only once a policy has moved slots
            ids_written = torch.arange(positions[0], positions[0] + width, device=self.device)[None] if shared else position_ids
            cache.write_positions(starts[0] if same_start else starts_t, ids_written, rows)
        if not isinstance(rows, slice):  # flat indices into a layer's [rows * kv_heads * capacity, head_dim]
            if starts_t is None:
                starts_t = torch.tensor(starts, dtype=torch.long, device=self.device)
            write_slots = starts_t[:, None] + torch.arange(width, device=self.device)  # [B, width]
            heads = torch.arange(self.kv_heads, device=self.device)
            flat = ((rows[:, None, None] * self.kv_heads + heads[None, :, None]) * cache.capacity + write_slots[:, None, :]).reshape(-1)
        elif not same_start:
            write_slots = starts_t[:, None] + torch.arange(width, device=self.device)
            write_index = write_slots[:, None, :, None].expand(batch, self.kv_heads, width, self.head_dim)

        # a short chunk of one row in low precision: each position attends as decoding it would
        one_by_one = policy_attention is None and self.exact_positions and batch == 1 and 1 < width == last_k <= EXACT_CHUNK
        hidden = self.embedding[ids]
        cos, sin = self._rope(position_ids, max(positions) + width, width)
        q_width, kv_width = self.heads, self.kv_heads
        for index, layer in enumerate(self.layers):
            qkv = _linear(layer.input_norm(hidden), layer.qkv, layer.qkv_bias)
            qkv = qkv.view(batch, width, q_width + 2 * kv_width, self.head_dim).transpose(1, 2)
            if layer.q_norm is not None:  # Qwen3 normalises q and k per head before rotation
                q, k, v = qkv.split_with_sizes([q_width, kv_width, kv_width], 1)
                q, k = _rotate(layer.q_norm(q), cos, sin), _rotate(layer.k_norm(k), cos, sin)
            else:  # rotate q and k in one go
                qk, v = qkv.split_with_sizes([q_width + kv_width, kv_width], 1)
                q, k = _rotate(qk, cos, sin).split_with_sizes([q_width, kv_width], 1)
            keys, values = cache.layer_keys[index], cache.layer_values[index]
            if not isinstance(rows, slice):
                keys.view(-1, self.head_dim).index_copy_(0, flat, k.reshape(-1, self.head_dim))
                values.view(-1, self.head_dim).index_copy_(0, flat, v.reshape(-1, self.head_dim))
                keys, values = keys[rows, :, :span], values[rows, :, :span]
            else:
                if rows != slice(None):
                    keys, values = keys[rows], values[rows]
                if same_start:
                    keys[:, :, starts[0] : starts[0] + width] = k
                    values[:, :, starts[0] : starts[0] + width] = v
                else:
                    keys.scatter_(2, write_index, k)
                    values.scatter_(2, write_index, v)
                keys, values = keys[:, :, :span], values[:, :, :span]
            if policy_attention is not None:
                out = policy_attention.attend(index, q, mask, span, layer.scaling)
            elif width == 1:
                out = self._attend_one(q, keys, values, additive, layer.scaling)
            elif one_by_one:
                out = torch.cat([self._attend_one(q[:, :, j : j + 1], keys[:, :, : span - width + j + 1],
                                                  values[:, :, : span - width + j + 1], None, layer.scaling)
                                 for j in range(width)], dim=2)
            else:
                out = F.scaled_dot_product_attention(
                    q, keys, values, attn_mask=additive, scale=layer.scaling, enable_gqa=self.heads != self.kv_heads
                )
            out = out.transpose(1, 2).reshape(batch, width, -1)
            hidden = hidden + _linear(out, layer.o, layer.o_bias)
            gate, up = _linear(layer.post_norm(hidden), layer.gate_up).chunk(2, dim=-1)
            hidden = hidden + _linear(self.activation(gate) * up, layer.down, layer.down_bias)

        if min(fed_counts) == max(fed_counts):
            cache.lengths += fed_counts[0]
        else:
            cache.lengths += torch.tensor(fed_counts, dtype=cache.lengths.dtype)
        cache.note_usage(sum(lengths) + sum(fed_counts))
        counts = [len(t) for t in tokens]
        if len(fed_rows) < batch:  # a policy's forward over every row: keep the fed ones
            hidden, counts = hidden[torch.tensor(fed_rows, device=self.device)], [counts[b] for b in fed_rows]
        if min(counts) == width >= last_k:  # every row's last k fed tokens end the block
            chosen = hidden if width == last_k else hidden[:, width - last_k :]
        else:
            fed = torch.tensor(counts, dtype=torch.long, device=self.device)
            pick = (fed[:, None] - last_k + torch.arange(last_k, device=self.device)).clamp(min=0)
            chosen = hidden.gather(1, pick[:, :, None].expand(len(counts), last_k, hidden.shape[-1]))
        normed = self.final_norm(chosen)
        if self.head is not None:
            return _linear(normed, self.head).float()
        module = self.model._modules["lm_head"]  # read each time: a router may replace it
        if type(module) is not torch.nn.Linear:
            return module(normed).float()
        return _linear(normed, module.weight, module.bias).float()


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

    def copy_row(self, source: int, target: int) -> None:
        self.caches[target] = copy.deepcopy(self.caches[source])

    def move_row(self, source: int, target: int) -> None:
        """The source row's cache becomes the target's (the source is cleared afterwards)."""
        self.caches[target] = self.caches[source]

    def clear_row(self, row: int) -> None:
        from transformers import DynamicCache

        self.caches[row] = DynamicCache(config=self.model.config)

    def truncate(self, row: int, length: int) -> None:
        current = self.caches[row].get_seq_length()
        if length < current:
            self.caches[row].crop(length - current)  # a negative count removes tokens (transformers 4 and 5)

    @torch.inference_mode()
    def forward(self, tokens: list[list[int]], positions: list[int], wanted: list[int]) -> torch.Tensor:
        """As `NativeEngine.forward`: logits of the fed rows only."""
        last_k = max(wanted)
        rows = []
        for row_tokens, position, cache in zip(tokens, positions, self.caches):
            if not row_tokens:
                rows.append(None)
                continue
            ids = torch.tensor([row_tokens], dtype=torch.long, device=self.device)
            position_ids = torch.arange(position, position + len(row_tokens), device=self.device)[None]
            out = self.model(
                input_ids=ids, position_ids=position_ids, past_key_values=cache, use_cache=True,
                logits_to_keep=max(last_k, 1),  # 0 would keep every position
            )
            logits = out.logits[0, out.logits.shape[1] - last_k :].float()
            if logits.shape[0] < last_k:
                logits = torch.cat([logits.new_zeros(last_k - logits.shape[0], logits.shape[1]), logits])
            rows.append(logits)
        return torch.stack([r for r in rows if r is not None])
