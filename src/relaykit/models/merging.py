"""Model merging: one model from several fine-tunes of one base (weight averaging; task
arithmetic, Ilharco et al. 2023)."""

from __future__ import annotations

import copy

import torch

from ..errors import RelaykitError
from .loading import Model, _count_parameters


def merge(experts: list[Model], base: Model, method: str = "average", scale: float = 1.0) -> Model:
    """The merged model (weights only; the base's config and tokenizer): `average` (the mean of the
    experts' weights) or `task-arithmetic` (base + scale x the sum of expert - base)."""
    state, states = base.hf.state_dict(), [expert.hf.state_dict() for expert in experts]
    merged = {}
    for key, value in state.items():
        weights = []
        for expert, expert_state in zip(experts, states):
            weight = expert_state.get(key)
            if weight is None or weight.shape != value.shape:
                raise RelaykitError(f"cannot merge {expert.name} into {base.name}: its {key} differs in shape "
                                    "(merging needs experts fine-tuned from the base)")
            weights.append(weight)
        if method == "average":
            merged[key] = torch.stack(weights).mean(0)
        else:
            merged[key] = value + scale * sum(w - value for w in weights)
    hf = copy.deepcopy(base.hf)
    hf.load_state_dict(merged)
    label = f"merged[{method}]"
    return Model(label, base.source, hf, base.tokenizer, *_count_parameters(hf))
