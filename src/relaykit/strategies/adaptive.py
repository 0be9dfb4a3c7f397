"""Compute adapted to difficulty (compute-optimal test-time scaling, Snell et al. 2024, spends by a
question's estimated difficulty). Two estimates from the small model:
- `signal=samples`: the agreement of its own samples. It writes `k` samples; when enough of them give
  one answer, that answer stands; in a middle band `more` samples are drawn first; otherwise the
  problem escalates to a stronger strategy (`relaygen` or `large`).
- `signal=difficulty`: a difficulty model (the small model with a routing head, `relaykit train
  difficulty`) reads the prompt once and gives the probability that the small model's greedy answer
  is right; at or above `answer_at` the small model answers, otherwise the problem escalates.
Thresholds come from `relaykit calibrate adaptive`, which picks on the dev split the cheapest that
keep the escalation strategy's accuracy, or the most accurate within a FLOPs budget. Every model's
work counts in the usage."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Literal, get_args

from ..answers import extract_answer
from ..errors import RelaykitError
from ..models.router import router_experts
from ..runtime.asks import Fork, Logits, Run
from ..vocabulary import DIFFICULTY, SMALL, EventKind
from .base import Strategy, get_strategy, reads, register, variant_of

Signal = Literal["samples", "difficulty"]
SIGNALS = get_args(Signal)
ROUTES = ("small", "escalate")  # a difficulty model's routing head, in order


@dataclass
class AdaptiveConfig:
    signal: Signal = "samples"  # samples: the small model's agreement; difficulty: a difficulty model (ours)
    k: int = 4  # the small model's samples for the signal (ours)
    more: int = 4  # samples drawn next when the agreement is in the middle band (ours)
    temperature: float = 0.7  # the samples' temperature (greedy samples would always agree)
    # the signal (agreement: share of samples giving the leading answer; difficulty: the probability
    # that the small model is right) at which the small model answers
    answer_at: float = 1.0
    more_at: float = 0.75  # agreement at which `more` samples are drawn before deciding
    escalate: str = reads("strategy", "relaygen")  # NAME or NAME[option=value ...]: the strategy for the rest
    # an adaptive.json of `relaykit calibrate adaptive` whose thresholds replace the two above; None:
    # the shipped one for the signal on the shipped toy pair; "none": the thresholds above
    calibration: str | None = reads("thresholds", None)

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise RelaykitError(f"adaptive: unknown signal {self.signal!r}; choose from {', '.join(SIGNALS)}")
        if self.k < 1 or self.more < 0 or self.temperature <= 0:
            raise RelaykitError("adaptive needs k >= 1, more >= 0 and temperature > 0")


@register("adaptive")
class Adaptive(Strategy):
    Config = AdaptiveConfig
    in_demo = False
    tunes = ("signal", "escalate", "answer_at", "more_at", "calibration")

    def __init__(self, models: dict, config=None, *args, **kwargs):
        config = config if config is not None else AdaptiveConfig()
        self.roles = self.roles_of(config)
        super().__init__(models, config, *args, **kwargs)
        if config.signal == "difficulty":
            judge = self.models[DIFFICULTY]
            if router_experts(getattr(judge, "hf", None)) != list(ROUTES):
                raise RelaykitError(f"{judge.source} is not a difficulty model (a routing head over "
                                    f"{', '.join(ROUTES)}; "
                                    "relaykit train difficulty writes one)")
        self.small = get_strategy("small")(self.models, stop=self.stop_config)
        self.escalate = variant_of(config.escalate).build(self.models, self.sampling, self.stop_config)

    @classmethod
    def roles_of(cls, config) -> tuple[str, ...]:
        inner = variant_of(config.escalate)
        return tuple(dict.fromkeys((SMALL, *_signal_roles(config), *inner.cls.roles_of(inner.config))))

    @classmethod
    def needs_logits(cls, config) -> tuple[str, ...]:
        inner = variant_of(config.escalate)
        return tuple(dict.fromkeys((*_signal_roles(config), *inner.cls.needs_logits(inner.config))))

    def holdback(self) -> None:
        return None  # who answers is known only once the samples (or the difficulty model) are in

    def run(self, request):
        if self.config.signal == "difficulty":
            return (yield from self._by_difficulty(request))
        cfg = self.config
        seed = request.sampling.seed if request.sampling.seed is not None else 0
        sampling = dataclasses.replace(request.sampling, temperature=cfg.temperature, seed=seed)
        results, answers = [], []
        for count in (cfg.k, cfg.more):
            branches = yield Fork(request.sequence, count, (SMALL,))
            drawn = yield Run([(self.small, branch) for branch in branches], sampling=sampling)
            results += drawn
            answers += [extract_answer(r.text) for r in drawn]
            answer, agreement = leader(answers)
            detail = {"samples": len(answers), "answers": answers}
            if agreement >= cfg.answer_at:
                request.event(EventKind.ADAPTIVE, cue=f"small {agreement:.2f}", detail=detail)
                return results[answers.index(answer)]
            if agreement < cfg.more_at or not cfg.more:
                break
        result = yield from self._escalate(request)
        request.event(EventKind.ADAPTIVE, cue=f"{self.config.escalate} {agreement:.2f}", detail=detail)
        return result

    def _by_difficulty(self, request):
        """One read of the prompt by the difficulty model, then the small model or the escalation."""
        routing = (yield Logits(DIFFICULTY, request.sequence))[-1][-len(ROUTES):]
        p_small = float(routing.softmax(-1)[0])
        detail = {"p_small": round(p_small, 4)}
        if p_small >= self.config.answer_at:
            branch = (yield Fork(request.sequence, 1, (SMALL,)))[0]
            result = (yield Run([(self.small, branch)]))[0]
            request.event(EventKind.ADAPTIVE, cue=f"small {p_small:.2f}", detail=detail)
            return result
        result = yield from self._escalate(request)
        request.event(EventKind.ADAPTIVE, cue=f"{self.config.escalate} {p_small:.2f}", detail=detail)
        return result

    def _escalate(self, request):
        branch = (yield Fork(request.sequence, 1, self.escalate.roles))[0]
        return (yield Run([(self.escalate, branch)]))[0]


def _signal_roles(config: AdaptiveConfig) -> tuple[str, ...]:
    """The model the signal reads, besides the small model's samples."""
    return (DIFFICULTY,) if config.signal == "difficulty" else ()


def leader(answers: list) -> tuple[str | None, float]:
    """The most frequent answer (the first seen on a tie) and the share of samples giving it."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None, 0.0
    answer, count = votes.most_common(1)[0]
    return answer, count / len(answers)

