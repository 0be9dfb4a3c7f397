"""Self-consistency (Wang et al. 2023) with adaptive stopping: samples of an inner strategy on
forks of the prompt (read once), drawn in windows until a stopping rule holds or `n` are drawn;
the most frequent answer over all samples wins.

- `fixed`: all `n` samples.
- `adaptive` (Adaptive-Consistency, Aggarwal et al. 2023): one sample at a time; stop once the
  Beta posterior that the leading answer beats the runner-up reaches `confidence` (0.95).
- `esc` (Early-Stopping Self-Consistency, Li et al. 2024): windows of 5; stop after the first
  window whose answers all agree.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from ..answers import extract_answer
from ..errors import RelaykitError
from ..runtime.asks import Fork, Run
from ..vocabulary import EventKind
from .base import Strategy, reads, register, variant_of
from .best_of_n import majority


@dataclass
class SelfConsistencyConfig:
    inner: str = reads("strategy", "large")  # the strategy each sample runs: NAME or NAME[option=value ...]
    n: int = 40  # samples at most (Adaptive-Consistency and ESC: 40)
    stop: Literal["fixed", "adaptive", "esc"] = "adaptive"  # fixed, adaptive or esc
    confidence: float = 0.95  # adaptive: stop once P(leader beats runner-up) reaches it (Adaptive-Consistency: 0.95)
    window: int = 5  # esc: samples per window (ESC: 5)

    def __post_init__(self) -> None:
        if self.stop not in ("fixed", "adaptive", "esc"):
            raise RelaykitError(f"self-consistency stop must be fixed, adaptive or esc, got {self.stop!r}")
        if self.n < 1 or self.window < 1 or not 0 < self.confidence < 1:
            raise RelaykitError("self-consistency needs n >= 1, window >= 1 and 0 < confidence < 1")


def leader_beats_runner_up(votes: Counter) -> float:
    """P(p1 > p2) for the two most frequent answers, p1/(p1 + p2) ~ Beta(v1 + 1, v2 + 1): with
    integer parameters P(X <= 1/2) = P(Binomial(v1 + v2 + 1, 1/2) >= v1 + 1)."""
    top = [count for _, count in votes.most_common(2)] + [0, 0]
    a, b = top[0] + 1, top[1] + 1
    trials = a + b - 1
    at_most_half = sum(math.comb(trials, j) for j in range(a, trials + 1)) / 2**trials
    return 1 - at_most_half


def should_stop(rule: str, answers: list, window: list, confidence: float) -> bool:
    """Whether the stopping rule holds after `answers` (all so far; `window` the newest)."""
    if rule == "adaptive":
        votes = Counter(a for a in answers if a is not None)
        return bool(votes) and leader_beats_runner_up(votes) >= confidence
    if rule == "esc":
        return window[0] is not None and len(set(window)) == 1
    return False


@register("self-consistency")
class SelfConsistency(Strategy):
    Config = SelfConsistencyConfig
    in_demo = False  # greedy samples all agree: it pays off with sampling

    def __init__(self, models: dict, config=None, *args, **kwargs):
        config = config if config is not None else SelfConsistencyConfig()
        self.roles = self.roles_of(config)
        super().__init__(models, config, *args, **kwargs)
        self.inner = variant_of(config.inner).build(self.models, self.sampling, self.stop_config)

    @classmethod
    def roles_of(cls, config) -> tuple[str, ...]:
        inner = variant_of(config.inner)
        return inner.cls.roles_of(inner.config)

    @classmethod
    def needs_logits(cls, config) -> tuple[str, ...]:
        inner = variant_of(config.inner)
        return inner.cls.needs_logits(inner.config)

    @classmethod
    def needs_whole_distribution(cls, config) -> tuple[str, ...]:
        inner = variant_of(config.inner)
        return inner.cls.needs_whole_distribution(inner.config)

    def holdback(self) -> None:
        return None  # the chosen sample is known only at the end

    def run(self, request):
        cfg = self.config
        size = {"fixed": cfg.n, "adaptive": 1, "esc": cfg.window}[cfg.stop]
        results, answers = [], []
        while len(results) < cfg.n:
            branches = yield Fork(request.sequence, min(size, cfg.n - len(results)), self.inner.roles)
            drawn = yield Run([(self.inner, branch) for branch in branches])
            results += drawn
            window = [extract_answer(r.text) for r in drawn]
            answers += window
            if should_stop(cfg.stop, answers, window, cfg.confidence):
                break
        chosen, tally = majority(answers)
        request.event(EventKind.VOTE, cue=tally, detail={"samples": len(results)})
        return results[chosen]
