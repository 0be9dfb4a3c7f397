"""Best-of-N by majority vote (self-consistency, Wang et al. 2023): N children of another
strategy (`child`, e.g. "relaygen" or "relaygen[speculative=8]") write on forks of the prompt,
which is read once; the answer given most often wins (ties: the earliest child). Every child's
work counts in the usage; the text and provenance are the chosen child's."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..errors import RelaykitError
from ..runtime.asks import Fork, Run
from .base import Strategy, register


@dataclass
class BestOfConfig:
    n: int = 4  # children; Wang et al. 2023 sample up to 40 paths
    child: str = "single"  # the strategy each child runs: NAME or NAME[option=value ...]

    def __post_init__(self) -> None:
        if self.n < 1:
            raise RelaykitError(f"best-of n must be >= 1, got {self.n}")


@register("best-of")
class BestOf(Strategy):
    roles = ("large", "small")
    Config = BestOfConfig

    in_demo = False  # greedy children all write the same text: best-of pays off with sampling

    def __init__(self, models: dict, config=None, *args, **kwargs):
        from ..api import build_strategy
        from ..options import strategy_variant

        config = config if config is not None else BestOfConfig()
        child_class, _ = strategy_variant(config.child)
        if child_class is BestOf:
            raise RelaykitError("best-of cannot run best-of children")
        self.roles = child_class.roles
        super().__init__(models, config, *args, **kwargs)
        self.child = build_strategy(config.child, self.models, sampling=self.sampling, stop=self.stop_config, kv_policy=self.kv_policy)

    @classmethod
    def needs_logits(cls, config) -> tuple[str, ...]:
        from ..options import strategy_variant

        child_class, options = strategy_variant(config.child)
        return child_class.needs_logits(child_class.Config(**options))

    def holdback(self) -> None:
        return None  # the chosen child is known only at the end

    def run(self, request):
        from ..evals.answers import extract_answer

        branches = yield Fork(request.sequence, self.config.n, self.child.roles)
        results = yield Run([(self.child, branch) for branch in branches])
        answers = [extract_answer(r.text) for r in results]
        votes = Counter(a for a in answers if a is not None)
        winner = votes.most_common(1)[0][0] if votes else None
        chosen = answers.index(winner) if winner is not None else 0
        request.event(None, "vote", f"{votes[winner] if winner is not None else 0}/{len(results)}")
        return results[chosen]
