"""A native layer's attention under a `ForwardPlan`: new keys and values go into the cache, then
the queries attend by one of four paths: a KV policy's own attention, one new token per row,
position by position (a short low-precision chunk, as decoding computes it), or one SDPA call."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kv import KVCache
from .plan import ForwardPlan


def attend_one(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None, scaling: float,
               grouped: bool) -> torch.Tensor:
    """Attention of one new token per row. Under GQA (`grouped`) each KV head's query group attends
    as one block of queries, which avoids SDPA's repeat of keys and values per query head."""
    if not grouped:
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scaling)
    batch, heads, _, head_dim = q.shape
    kv_heads = keys.shape[1]
    out = F.scaled_dot_product_attention(q.reshape(batch, kv_heads, heads // kv_heads, head_dim), keys, values,
                                         attn_mask=mask, scale=scaling)
    return out.reshape(batch, heads, 1, head_dim)


def attention(plan: ForwardPlan, cache: KVCache, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              scaling: float) -> torch.Tensor:
    """Layer `layer`'s attention output [B, heads, width, D] for rotated q and k, and v: k and v
    [B, kv_heads, width, D] go into the cache first."""
    keys, values = cache.layer_keys[layer], cache.layer_values[layer]
    rows, span, width, flat, write_index = plan.rows, plan.span, plan.width, plan.flat, plan.write_index
    if flat is not None:  # gathered rows
        head_dim = k.shape[-1]
        keys.view(-1, head_dim).index_copy_(0, flat, k.reshape(-1, head_dim))
        values.view(-1, head_dim).index_copy_(0, flat, v.reshape(-1, head_dim))
        keys, values = keys[rows, :, :span], values[rows, :, :span]
    else:  # a block of rows, read in place
        if rows != slice(None):
            keys, values = keys[rows], values[rows]
        if write_index is None:  # every row from the same slot
            start = plan.starts[0]
            keys[:, :, start : start + width] = k
            values[:, :, start : start + width] = v
        else:
            keys.scatter_(2, write_index, k)
            values.scatter_(2, write_index, v)
        keys, values = keys[:, :, :span], values[:, :, :span]
    grouped = cache.heads != cache.kv_heads
    if plan.policy_attention is not None:
        return plan.policy_attention.attend(layer, q, plan.mask, span, scaling)
    if width == 1:
        return attend_one(q, keys, values, plan.additive, scaling, grouped)
    if plan.one_by_one:
        before = span - width + 1  # slots the first position sees
        return torch.cat([attend_one(q[:, :, j : j + 1], keys[:, :, : before + j], values[:, :, : before + j], None,
                                     scaling, grouped) for j in range(width)], dim=2)
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=plan.additive, scale=scaling, enable_gqa=grouped)
