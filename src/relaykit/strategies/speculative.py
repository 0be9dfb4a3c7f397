"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): the small model drafts k
tokens, the large model scores them in one forward, and rejection sampling keeps the output
distributed exactly as the large model's. Greedy: the output equals large-only greedy."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..decoding.sequence import Sequence
from ..errors import RelaykitError
from .base import Strategy, register


@dataclass
class SpeculativeConfig:
    k: int = 4  # draft length; Leviathan et al. 2023 evaluate gamma in 1..10, with 3-7 typical
    adaptive: bool = False  # grow k after a fully accepted round, shrink it after a poor one
    max_k: int = 16
    # stop drafting once every row's draft token has probability below this (0 = never); HF
    # assisted generation's assistant_confidence_threshold defaults to 0.4
    draft_confidence: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.max_k:
            raise RelaykitError(f"speculative k must be in 1..{self.max_k}, got {self.k}")


def verify(sampler, drafts: list[int], draft_probs, target) -> tuple[int, int]:
    """Accepted draft count and the large model's next token (a correction or a bonus).

    Greedy: `target` lists the large model's argmax at the d draft positions and after them.
    Sampling: `target` [d+1, V] holds its distributions there and `draft_probs` [d, V] the small
    model's; a draft is kept with probability min(1, p/q), else the token comes from (p - q)+.
    """
    if sampler.greedy:
        accepted = 0
        while accepted < len(drafts) and drafts[accepted] == target[accepted]:
            accepted += 1
        return accepted, target[accepted]
    coins = sampler.uniform(len(drafts)).tolist()
    for i, token in enumerate(drafts):
        p, q = float(target[i, token]), float(draft_probs[i, token])
        if coins[i] * q > p:
            residual = (target[i] - draft_probs[i]).clamp(min=0)
            if residual.sum() <= 0:
                residual = target[i]
            return i, int(sampler.draw(residual / residual.sum()))
    return len(drafts), int(sampler.draw(target[len(drafts)]))


@register("speculative")
class Speculative(Strategy):
    roles = ("large", "small")
    Config = SpeculativeConfig

    def run(self, sequences: list[Sequence]) -> None:
        large, small = self.runners["large"], self.runners["small"]
        k = self.config.k
        active = list(sequences)
        while active:
            draft_length = max(0, min(k, min(self.stop.remaining(s) for s in active) - 1))
            starts = [len(s) for s in active]
            draft_probs = []
            drafted = 0
            while drafted < draft_length:
                logits = small.next_logits(active)
                if self.sampler.greedy:
                    tokens = logits.argmax(-1)
                else:
                    probs = self.sampler.probs(logits)
                    draft_probs.append(probs)
                    tokens = self.sampler.draw(probs)
                for sequence, token in zip(active, tokens.tolist()):
                    sequence.append(token, "small")
                drafted += 1
                if self.config.draft_confidence and bool(
                    (logits.softmax(-1).amax(-1) < self.config.draft_confidence).all()
                ):
                    break
            draft_length = drafted
            target_logits = large.score(active, draft_length + 1)
            if self.sampler.greedy:
                targets = target_logits.argmax(-1).tolist()
            else:
                targets = self.sampler.probs(target_logits)
            stacked = torch.stack(draft_probs, 1) if draft_probs else None
            accepted_total = 0
            still_active = []
            for b, (sequence, start) in enumerate(zip(active, starts)):
                drafts = sequence.tokens[start:]
                accepted, token = verify(self.sampler, drafts, stacked[b] if stacked is not None else None, targets[b])
                accepted_total += accepted
                sequence.truncate(start + accepted)
                sequence.append(token, "large")
                if not self.finish_if_done(sequence, accepted + 1):
                    still_active.append(sequence)
            if self.config.adaptive and draft_length:
                rate = accepted_total / (draft_length * len(active))
                k = min(k + 1, self.config.max_k) if rate == 1.0 else max(1, k - 1) if rate < 0.5 else k
            active = still_active
