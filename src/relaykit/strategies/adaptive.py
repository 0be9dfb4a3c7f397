"""Compute adapted to difficulty (compute-optimal test-time scaling, Snell et al. 2024, spends by a
question's estimated difficulty; the estimate here is the agreement of the small model's own
samples): the small model writes `k` samples; when enough of them give one answer, that answer
stands; in a middle band `more` samples are drawn first; otherwise the problem escalates to a
stronger strategy (`relaygen` or `large`). Thresholds come from
`relaykit calibrate adaptive`, which picks the cheapest pair that keeps the escalation strategy's
accuracy on the dev split. Every sample's work counts in the usage."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import RelaykitError
from ..evals.answers import extract_answer
from ..options import variant_config
from ..runtime.asks import Fork, Run
from ..toyworld import SHIPPED_ADAPTIVE, is_shipped_pair
from .base import Strategy, register

THRESHOLDS = ("answer_at", "more_at")


@dataclass
class AdaptiveConfig:
    k: int = 4  # the small model's samples for the signal (ours)
    more: int = 4  # samples drawn next when the agreement is in the middle band (ours)
    temperature: float = 0.7  # the samples' temperature (greedy samples would always agree)
    answer_at: float = 1.0  # agreement (share of samples giving the leading answer) at which the small model answers
    more_at: float = 0.75  # agreement at which `more` samples are drawn before deciding
    escalate: str = "relaygen"  # NAME or NAME[option=value ...]: the strategy for the rest
    # an adaptive.json of `relaykit calibrate adaptive` whose thresholds replace the two above; None:
    # the shipped one on the shipped toy pair; "none": the thresholds above
    calibration: str | None = None

    def __post_init__(self) -> None:
        if self.k < 1 or self.more < 0 or self.temperature <= 0:
            raise RelaykitError("adaptive needs k >= 1, more >= 0 and temperature > 0")


@register("adaptive")
class Adaptive(Strategy):
    Config = AdaptiveConfig
    in_demo = False

    def __init__(self, models: dict, config=None, *args, **kwargs):
        from ..api import build_strategy

        config = config if config is not None else AdaptiveConfig()
        self.roles = self.roles_of(config)
        super().__init__(models, config, *args, **kwargs)
        calibration = config.calibration
        if calibration is None and is_shipped_pair(self.models) and SHIPPED_ADAPTIVE.is_file():
            calibration = str(SHIPPED_ADAPTIVE)
        if calibration and calibration != "none":
            self.config = dataclasses.replace(config, **load_thresholds(calibration))
        self.small = build_strategy("small", self.models, stop=self.stop_config)
        self.escalate = build_strategy(config.escalate, self.models, sampling=self.sampling, stop=self.stop_config, kv_policy=self.kv_policy)

    @classmethod
    def roles_of(cls, config) -> tuple[str, ...]:
        inner_class, inner_config = variant_config(config.escalate)
        return tuple(dict.fromkeys(("small", *inner_class.roles_of(inner_config))))

    @classmethod
    def needs_logits(cls, config) -> tuple[str, ...]:
        inner_class, inner_config = variant_config(config.escalate)
        return inner_class.needs_logits(inner_config)

    def holdback(self) -> None:
        return None  # who answers is known only once the samples are in

    def run(self, request):
        cfg = self.config
        seed = request.sampling.seed if request.sampling.seed is not None else 0
        sampling = dataclasses.replace(request.sampling, temperature=cfg.temperature, seed=seed)
        results, answers = [], []
        for count in (cfg.k, cfg.more):
            branches = yield Fork(request.sequence, count, ("small",))
            drawn = yield Run([(self.small, branch) for branch in branches], sampling=sampling)
            results += drawn
            answers += [extract_answer(r.text) for r in drawn]
            answer, agreement = leader(answers)
            detail = {"samples": len(answers), "answers": answers}
            if agreement >= cfg.answer_at:
                request.event(None, "adaptive", f"small {agreement:.2f}").detail = detail
                return results[answers.index(answer)]
            if agreement < cfg.more_at or not cfg.more:
                break
        branch = (yield Fork(request.sequence, 1, self.escalate.roles))[0]
        result = (yield Run([(self.escalate, branch)]))[0]
        request.event(None, "adaptive", f"{cfg.escalate} {agreement:.2f}").detail = detail
        return result


def leader(answers: list) -> tuple[str | None, float]:
    """The most frequent answer (the first seen on a tie) and the share of samples giving it."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None, 0.0
    answer, count = votes.most_common(1)[0]
    return answer, count / len(answers)


def load_thresholds(path: str) -> dict:
    """answer_at and more_at from an adaptive.json of `relaykit calibrate adaptive`."""
    if not Path(path).is_file():
        raise RelaykitError(f"adaptive calibration file not found: {path}")
    try:
        chosen = json.loads(Path(path).read_text())
        return {name: float(chosen[name]) for name in THRESHOLDS}
    except (ValueError, KeyError, TypeError) as error:
        raise RelaykitError(f"{path}: not an adaptive.json of `relaykit calibrate adaptive` ({error})") from None
