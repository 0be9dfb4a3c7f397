"""Turning logits into tokens: greedy, temperature, top-k, top-p, seeded."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import RelaykitError


@dataclass
class SamplingConfig:
    temperature: float = 0.0  # 0 means greedy
    top_k: int = 0  # 0 disables
    top_p: float = 1.0  # 1 disables
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise RelaykitError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise RelaykitError(f"top-k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise RelaykitError(f"top-p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class Sampler:
    """Samples from warped distributions; `probs` exposes them for speculative acceptance."""

    def __init__(self, config: SamplingConfig | None = None):
        self.config = config or SamplingConfig()
        self.generator = torch.Generator()
        if self.config.seed is not None:
            self.generator.manual_seed(self.config.seed)
        else:
            self.generator.seed()

    @property
    def greedy(self) -> bool:
        return self.config.greedy

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Next-token distribution(s) after temperature, top-k and top-p, last dim = vocabulary."""
        c = self.config
        if c.greedy:
            return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(torch.float32)
        logits = logits.float() / c.temperature
        if c.top_k and c.top_k < logits.shape[-1]:
            kth = torch.topk(logits, c.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if c.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            drop_sorted = cumulative - sorted_logits.softmax(-1) >= c.top_p  # keep the first token always
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            logits = logits.masked_fill(drop, float("-inf"))
        return logits.softmax(-1)

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        """One token per row of `logits` [..., V]."""
        if self.greedy:
            return logits.argmax(-1)
        return self.draw(self.probs(logits))

    def draw(self, probs: torch.Tensor) -> torch.Tensor:
        """Drawn on the CPU, from the seeded CPU generator, whatever device the model runs on."""
        flat = probs.reshape(-1, probs.shape[-1]).cpu()
        return torch.multinomial(flat, 1, generator=self.generator).reshape(probs.shape[:-1])

    def uniform(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.generator)


def next_tokens(samplers: list[Sampler], logits: torch.Tensor) -> list[int]:
    """One token per row of next-token `logits` [B, V], row b drawn by `samplers[b]`: the greedy
    rows in one argmax, the others one by one."""
    greedy = [b for b, sampler in enumerate(samplers) if sampler.greedy]
    tokens: dict[int, int] = {}
    if len(greedy) == len(samplers):
        return logits.argmax(-1).tolist()
    if greedy:
        tokens.update(zip(greedy, logits[greedy].argmax(-1).tolist()))
    for b, sampler in enumerate(samplers):
        if b not in tokens:
            tokens[b] = int(sampler.sample(logits[b]))
    return [tokens[b] for b in range(len(samplers))]
