"""Direct preference optimisation (Rafailov et al. 2023) on sequence log-probabilities."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """-log sigmoid(beta x [(policy - reference) on the chosen - (policy - reference) on the
    rejected]), averaged over pairs; each argument holds one summed log-probability per pair."""
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -F.logsigmoid(beta * margin).mean()
