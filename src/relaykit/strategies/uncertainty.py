"""Token-level uncertainty routing (R2R-like, Fu et al. 2025, without a trained router): the
small model drives, and wherever its own margin p(top1) - p(top2) is below a threshold the
large model writes that token instead."""

from __future__ import annotations

from dataclasses import dataclass

from ..decoding.sequence import Sequence
from ..errors import RelaykitError
from .base import Strategy, register


@dataclass
class UncertaintyConfig:
    margin_threshold: float = 0.5  # route a token to the large model below this small-model margin (ours)

    def __post_init__(self) -> None:
        if not 0 <= self.margin_threshold <= 1:
            raise RelaykitError(f"margin-threshold must be in [0, 1], got {self.margin_threshold}")


@register("uncertainty")
class Uncertainty(Strategy):
    roles = ("large", "small")
    Config = UncertaintyConfig

    def run(self, sequences: list[Sequence]) -> None:
        large, small = self.runners["large"], self.runners["small"]
        active = list(sequences)
        while active:
            logits = small.next_logits(active)
            top = logits.float().softmax(-1).topk(2, dim=-1).values
            unsure = ((top[:, 0] - top[:, 1]) < self.config.margin_threshold).tolist()
            tokens = self.sampler.sample(logits).tolist()
            hard = [s for s, u in zip(active, unsure) if u]
            large_tokens = iter(self.sampler.sample(large.next_logits(hard)).tolist() if hard else [])
            for sequence, token, is_hard in zip(active, tokens, unsure):
                writer = "large" if is_hard else "small"
                previous = sequence.writers[-1] if sequence.generated else "small"  # the small model drives
                if writer != previous:
                    self.events[id(sequence)].append(
                        {"position": len(sequence.generated), "direction": f"{previous}->{writer}", "reason": "margin", "cue": None}
                    )
                sequence.append(next(large_tokens) if is_hard else token, writer)
            active = [s for s in active if not self.finish_if_done(s)]
