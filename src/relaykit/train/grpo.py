"""GRPO (Shao et al. 2024): rewards normalised within each prompt's group of rollouts give every
token of a rollout one advantage; a clipped policy ratio and a KL penalty to a frozen reference
model (the k3 estimator) make the loss, on the tokens the policy wrote only (per-token masks)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sft import pad, token_logprobs


@dataclass(frozen=True)
class GRPOConfig:
    group: int = 8  # rollouts per prompt (RelayLLM: 8)
    temperature: float = 1.0  # rollout sampling (RelayLLM: 1.0)
    kl: float = 0.01  # KL coefficient to the reference (RelayLLM: 0.01)
    clip: float = 0.2  # policy-ratio clip (GRPO, PPO: 0.2)


def group_advantages(rewards: list[float], group: int, eps: float = 1e-6) -> torch.Tensor:
    """(r - mean) / std within each consecutive group of `group` rewards; 0 for a group whose
    rollouts all scored the same."""
    r = torch.tensor(rewards, dtype=torch.float32).view(-1, group)
    mean, std = r.mean(1, keepdim=True), r.std(1, keepdim=True)
    return ((r - mean) / (std + eps)).view(-1)


def grpo_loss(policy, reference, ids: list[list[int]], masks: list[list[bool]], advantages: torch.Tensor,
              old_logprobs: torch.Tensor | None, cfg: GRPOConfig) -> tuple[torch.Tensor, dict]:
    """The loss over rollouts `ids` (prompt + response), `masks[b][t]`: token t was written by the
    policy. `old_logprobs` [B, T-1]: the policy's at rollout time (None: this forward's, detached,
    so the ratio is 1 and the step is on-policy). Averaged over every masked token of the batch."""
    tokens = pad(ids, 0)
    mask = pad([[int(m) for m in row] for row in masks], 0)[:, 1:].float()
    logprobs = token_logprobs(policy, tokens)
    with torch.no_grad():
        ref = token_logprobs(reference, tokens)
    old = logprobs.detach() if old_logprobs is None else old_logprobs
    ratio = torch.exp(logprobs - old)
    adv = advantages[:, None]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv)
    log_ratio = ref - logprobs
    kl = torch.exp(log_ratio) - log_ratio - 1
    per_token = -surrogate + cfg.kl * kl
    total = mask.sum().clamp(min=1)
    loss = (per_token * mask).sum() / total
    return loss, {"kl": float((kl.detach() * mask).sum() / total)}
