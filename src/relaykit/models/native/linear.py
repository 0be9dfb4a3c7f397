"""The native engine's products, one class per weight format with the same `forward(x)` (plain,
oneDNN-packed bfloat16, weight-only int8), and a float32 RMS norm.

The products are plain classes, not `torch.nn.Module`s, and the engine calls `forward` itself: an
`nn.Linear` call costs about 3 us more than `F.linear` on a CPU and an object's `__call__` 0.2 us
more (measured), against a toy model's whole product of about 3 us on a decode step, 4 a layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


class Linear:
    """F.linear with a weight and an optional bias (the model's own tensors or a fused copy)."""

    __slots__ = ("weight", "bias")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight, self.bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Int8Linear:
    """A weight-only int8 product (gpt-fast's `WeightOnlyInt8Linear`): int8 rows and one scale per
    row (symmetric, per output channel) through PyTorch's int8 kernel; the bias is added after."""

    __slots__ = ("weight", "scales", "bias")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        scales = weight.float().abs().amax(1).clamp(min=1e-8) / 127
        self.weight = torch.round(weight.float() / scales[:, None]).clamp(-127, 127).to(torch.int8)
        self.scales = scales.to(weight.dtype)
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), self.weight, self.scales)
        out = out.view(*x.shape[:-1], out.shape[-1])  # not -1: a prefill asks for no positions
        return out if self.bias is None else out + self.bias


def packs_bfloat16(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether bfloat16 weights on `device` are packed for oneDNN (CPUs whose oneDNN does bfloat16)."""
    return (dtype == torch.bfloat16 and device.type == "cpu" and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class PackedLinear:
    """A bfloat16 product with the weight in oneDNN's blocked layout, reordered once. F.linear
    reorders a bfloat16 weight on every call, which costs as much as the product itself; the packed
    product computes the same numbers (tests/test_loading.py). A lone row is multiplied as two:
    oneDNN sums one row in another order than several, and rows of 2-33 agree (measured), so that a
    verification chunk's rows equal decoding them one by one."""

    __slots__ = ("weight", "bias")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, 1)  # torch._mkldnn layout
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == x.shape[-1]:  # a lone row: oneDNN would sum it in another order than a chunk's rows
            pair = x.expand(*x.shape[:-2], 2, x.shape[-1]).contiguous()
            return torch.ops.mkldnn._linear_pointwise(pair, self.weight, self.bias, "none", [], "")[..., :1, :]
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def float32_rms_norm(module: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """An RMS norm in float32 as a layer norm over [x, -x] (mean exactly 0, variance mean(x^2): the
    same norm to float32 rounding), which takes two thirds of the time of `F.rms_norm` (a composite
    of ~8 calls here) on a decode step's few positions and, like it, normalises each position on
    its own. A closure: its call costs less than an object's."""
    weight, eps = module.weight, module.variance_epsilon
    width = weight.shape[0]
    doubled = torch.cat([weight, weight])
    return lambda x: F.layer_norm(torch.cat([x, -x], -1), (2 * width,), doubled, None, eps)[..., :width]
