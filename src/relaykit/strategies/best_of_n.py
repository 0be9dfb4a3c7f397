"""Best-of-N: N samples of an inner strategy (`inner`, e.g. "relaygen" or "relaygen[speculative=8]")
write on forks of the prompt, which is read once, and a reranker picks one:
- `majority`: the answer given most often (self-consistency, Wang et al. 2023; ties: the earliest);
- `likelihood`: the sample with the highest mean log-probability under the large model.
Every sample's work counts in the usage (scoring included); the text and provenance are the
chosen sample's."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..errors import RelaykitError
from ..evals.answers import extract_answer
from ..runtime.asks import Fork, Logits, Run
from .base import Strategy, register

RERANKERS = ("majority", "likelihood")


@dataclass
class BestOfNConfig:
    n: int = 4  # samples; Wang et al. 2023 sample up to 40 paths
    inner: str = "single"  # the strategy each sample runs: NAME or NAME[option=value ...]
    rerank: str = "majority"  # majority or likelihood

    def __post_init__(self) -> None:
        if self.n < 1:
            raise RelaykitError(f"best-of-n n must be >= 1, got {self.n}")
        if self.rerank not in RERANKERS:
            raise RelaykitError(f"best-of-n rerank must be one of {', '.join(RERANKERS)}, got {self.rerank!r}")


@register("best-of-n")
class BestOfN(Strategy):
    Config = BestOfNConfig
    in_demo = False  # greedy samples all write the same text: best-of-n pays off with sampling

    def __init__(self, models: dict, config=None, *args, **kwargs):
        from ..api import build_strategy
        from ..options import strategy_variant

        config = config if config is not None else BestOfNConfig()
        inner_class, _ = strategy_variant(config.inner)
        scorer = ("large",) if config.rerank == "likelihood" else ()
        self.roles = tuple(dict.fromkeys((*inner_class.roles, *scorer)))
        super().__init__(models, config, *args, **kwargs)
        self.inner = build_strategy(config.inner, self.models, sampling=self.sampling, stop=self.stop_config, kv_policy=self.kv_policy)

    @classmethod
    def needs_logits(cls, config) -> tuple[str, ...]:
        from ..options import strategy_variant

        inner_class, options = strategy_variant(config.inner)
        scorer = ("large",) if config.rerank == "likelihood" else ()
        return tuple(dict.fromkeys((*inner_class.needs_logits(inner_class.Config(**options)), *scorer)))

    def holdback(self) -> None:
        return None  # the chosen sample is known only at the end

    def run(self, request):
        branches = yield Fork(request.sequence, self.config.n, self.roles)  # the scorer reads the prompt once too
        # the samples stay this request's (keep): scoring reads them again, on rows still alive
        results = yield Run([(self.inner, branch) for branch in branches], keep=True)
        if self.config.rerank == "likelihood":
            scores = []
            for branch, result in zip(branches, results):
                written = len(result.token_ids)
                if not written:
                    scores.append(float("-inf"))
                    continue
                logits = (yield Logits("large", branch, written + 1))[:-1].float()
                chosen = logits.log_softmax(-1).gather(1, logits.new_tensor(result.token_ids, dtype=int)[:, None])
                scores.append(float(chosen.mean()))
            best = max(range(len(results)), key=lambda i: scores[i])
            request.event(None, "rerank", f"likelihood {scores[best]:.3f}")
            return results[best]
        answers = [extract_answer(r.text) for r in results]
        votes = Counter(a for a in answers if a is not None)
        winner = votes.most_common(1)[0][0] if votes else None
        chosen = answers.index(winner) if winner is not None else 0
        request.event(None, "vote", f"{votes[winner] if winner is not None else 0}/{len(results)}")
        return results[chosen]
