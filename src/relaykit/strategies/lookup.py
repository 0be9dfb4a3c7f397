"""Prompt lookup decoding (Saxena 2023; LLMA, Yang et al. 2023): one model, no drafter. The
newest n tokens are looked up earlier in the sequence (the prompt included); the tokens that
followed their latest earlier occurrence are proposed as drafts, and the model checks them in one
forward, as speculative decoding checks a small model's. Greedy: the output is the model's greedy
output. Sampling: a draft is kept with the model's probability of it, else the token is drawn
without it, so the output is distributed as the model's."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RelaykitError
from ..vocabulary import LARGE
from .base import Strategy, register
from .speculative import check_drafts


@dataclass
class LookupConfig:
    # most drafts a forward checks; the prompt-lookup reference code checks 10 (num_pred_tokens), 5 ran
    # 3% faster on a CPU, where a forward's cost grows with its tokens, at 1.75x the FLOPs instead of 2.4x
    k: int = 5
    ngram: int = 3  # longest n-gram looked up, then shorter ones (reference code: max_ngram_size 3)

    def __post_init__(self) -> None:
        if self.k < 1 or self.ngram < 1:
            raise RelaykitError(f"lookup needs k >= 1 and ngram >= 1, got k={self.k} ngram={self.ngram}")


class NgramIndex:
    """For each n-gram of a token list (n = 1..`longest`), the position after its latest
    occurrence that has a token after it."""

    def __init__(self, longest: int):
        self.longest = longest
        self.after: dict[tuple[int, ...], int] = {}
        self.indexed = 0  # n-grams ending before this position are indexed

    def propose(self, tokens: list[int], k: int) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of the longest n-gram ending
        `tokens` that occurred before."""
        for end in range(self.indexed + 1, len(tokens)):  # n-grams ending at end - 1, followed by tokens[end]
            for n in range(1, min(self.longest, end) + 1):
                self.after[tuple(tokens[end - n : end])] = end
        self.indexed = max(self.indexed, len(tokens) - 1)
        for n in range(min(self.longest, len(tokens)), 0, -1):
            start = self.after.get(tuple(tokens[-n:]))
            if start is not None:
                return tokens[start : start + k]
        return []


class ContextDrafts(Strategy):
    """The model alone, checking drafts taken from text (no drafter model). A check reads the top
    token (greedy), or the drafted token's probability and the top tokens: it runs over an endpoint
    that scores tokens."""

    @classmethod
    def needs_whole_distribution(cls, config) -> tuple[str, ...]:
        return ()

    def holdback(self) -> int:
        return self.config.k


@register("lookup")
class Lookup(ContextDrafts):
    """The model alone, checking drafts copied from its own context."""

    Config = LookupConfig
    tunes = ("k",)

    def run(self, request):
        sequence = request.sequence
        index = NgramIndex(self.config.ngram)
        while not sequence.finished:
            start = len(sequence)
            sequence.extend(index.propose(sequence.tokens, max(0, min(self.config.k, request.remaining() - 1))), LARGE)
            yield from check_drafts(request, sequence, start, [])  # no draft distributions: proposed with certainty
            request.finish_if_done(sequence, len(sequence) - start)
