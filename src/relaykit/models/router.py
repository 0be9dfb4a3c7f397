"""The router checkpoint format (FusionRoute): any causal LM plus a routing head.

A router folder is an ordinary checkpoint of its base model (config.json, model.safetensors, the
tokenizer) with `routing_head.safetensors`, a linear map from the final hidden state to one weight
per expert, and `"relaykit_router": {"experts": [...]}` in config.json naming the experts in the
head's order. Loaded, the model's output head returns the vocabulary logits followed by the routing
weights, so every engine that computes logits gives both from the same forward, and the runtime
treats the router as one more model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import RelaykitError

ROUTER_KEY = "relaykit_router"
HEAD_FILE = "routing_head.safetensors"


class RoutedHead(torch.nn.Module):
    """The output head of a router: [vocabulary logits | one routing weight per expert]."""

    def __init__(self, lm_head: torch.nn.Module, routing: torch.nn.Linear):
        super().__init__()
        self.lm_head = lm_head
        self.routing = routing

    @property
    def weight(self) -> torch.Tensor:  # the vocabulary head's (tied-embedding checks read it)
        return self.lm_head.weight  # type: ignore[return-value]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.lm_head(hidden), self.routing(hidden)], dim=-1)


def make_router(hf_model, experts: list[str]) -> RoutedHead:
    """Give `hf_model` (any causal LM) a routing head over `experts` (small random weights, no bias:
    a zero head would pass no gradient to the body, which must learn what routing needs); returns
    the new output head."""
    if len(set(experts)) != len(experts) or not experts:
        raise RelaykitError(f"a router needs distinct expert names, got {experts}")
    lm_head = hf_model.get_output_embeddings()
    routing = torch.nn.Linear(hf_model.config.hidden_size, len(experts), bias=True)
    torch.nn.init.normal_(routing.weight, std=getattr(hf_model.config, "initializer_range", 0.02))
    torch.nn.init.zeros_(routing.bias)
    routing.to(lm_head.weight.device, lm_head.weight.dtype)
    head = RoutedHead(lm_head, routing)
    hf_model.lm_head = head
    setattr(hf_model.config, ROUTER_KEY, {"experts": list(experts)})
    return head


def router_experts(hf_model) -> list[str] | None:
    """The expert names a loaded router routes to (None: not a router)."""
    if not isinstance(getattr(hf_model, "lm_head", None), RoutedHead):
        return None
    return list(getattr(hf_model.config, ROUTER_KEY)["experts"])


def attach_saved_head(hf_model, folder: str | Path) -> None:
    """If `folder` is a router checkpoint (its config, loaded with the model, names experts), give
    the loaded base model its routing head."""
    saved = getattr(hf_model.config, ROUTER_KEY, None)
    if saved is None:
        return
    experts = saved.get("experts") if isinstance(saved, dict) else None
    path = Path(folder) / HEAD_FILE
    if not isinstance(experts, list) or not path.is_file():
        raise RelaykitError(f"{folder} is a router checkpoint without its expert names or {HEAD_FILE}")
    head = make_router(hf_model, experts)
    weights = load_file(str(path))
    if weights.get("weight") is None or tuple(weights["weight"].shape) != tuple(head.routing.weight.shape):
        raise RelaykitError(f"{path}: expected a routing weight of shape {tuple(head.routing.weight.shape)}")
    with torch.no_grad():
        head.routing.weight.copy_(weights["weight"])
        head.routing.bias.copy_(weights["bias"])


def save_router(hf_model, out: str | Path) -> None:
    """Write a router as its base model's checkpoint plus the routing head (no tokenizer files:
    copy them from the base, as `relaykit.train.loop.save_model` does)."""
    head = hf_model.lm_head
    if not isinstance(head, RoutedHead):
        raise RelaykitError("save_router needs a model with a routing head (make_router)")
    hf_model.lm_head = head.lm_head
    try:
        hf_model.save_pretrained(str(out), safe_serialization=True)
    finally:
        hf_model.lm_head = head
    save_file({"weight": head.routing.weight.detach().contiguous(), "bias": head.routing.bias.detach().contiguous()},
              str(Path(out) / HEAD_FILE))
