"""Calibration of `adaptive`'s thresholds on a dev split.

One run on the problems: `small` greedy (the FLOPs of one sample), the escalation strategy (its
answer and FLOPs per problem) and `adaptive` drawing every sample before escalating (each
problem's sample answers). Every pair of thresholds is then replayed on those records: after `k`
samples the small model answers, draws `more`, or escalates, as the strategy would. Kept: the
cheapest pair (estimated FLOPs) whose accuracy is within `tolerance` of the escalation strategy's
alone; the stricter one on a tie. Every pair's replay is written beside the choice.
"""

from __future__ import annotations

import dataclasses

from ..decoding.stopping import StopConfig
from ..errors import RelaykitError
from ..evals.answers import answers_match
from ..strategies.adaptive import Adaptive, AdaptiveConfig, leader

NEVER = 2.0  # an agreement threshold no sample set reaches


def calibrate_adaptive(models: dict, problems: list, config=None, tolerance: float = 0.005,
                       max_new_tokens: int = 512, batch_size: int = 8) -> dict:
    """Thresholds for `adaptive` (with `config`'s k, more, temperature and escalation) on `problems`."""
    from ..api import build_strategy
    from ..evals.harness import EvalSettings, evaluate

    if not problems or not hasattr(problems[0], "reference"):
        raise RelaykitError("calibrating adaptive needs evaluation problems with references (a dataset)")
    config = config or AdaptiveConfig()
    stop = StopConfig(max_new_tokens=max_new_tokens)
    every = dataclasses.replace(config, answer_at=NEVER, more_at=0.0, calibration="none")
    strategies = {"small": build_strategy("small", models, stop=stop), "escalate": build_strategy(config.escalate, models, stop=stop),
                  "samples": Adaptive(models, every, stop=stop)}
    results = evaluate(strategies, problems, "calibration", EvalSettings(batch_size=batch_size))["strategies"]
    flops = lambda record: sum(u["flops"] for u in record["usage"].values())  # noqa: E731
    rows = []
    for small, escalated, sampled, problem in zip(*(results[n]["problems"] for n in strategies), problems):
        answers = next(e for e in sampled["events"] if e["reason"] == "adaptive")["detail"]["answers"]
        rows.append({"answers": answers, "reference": problem.reference, "escalate_correct": escalated["correct"],
                     "sample_flops": flops(small), "escalate_flops": flops(escalated)})
    k, total = config.k, config.k + config.more
    levels = sorted({j / n for n in (k, total) for j in range(1, n + 1)}) + [NEVER]
    candidates = [(a, m) for a in levels for m in levels if m <= a or m == NEVER]
    escalate_accuracy = sum(r["escalate_correct"] for r in rows) / len(rows)
    escalate_flops = sum(r["escalate_flops"] for r in rows)
    replays = {pair: replay(rows, k, total, *pair) for pair in candidates}
    feasible = [p for p, (accuracy, _, _) in replays.items() if accuracy >= escalate_accuracy - tolerance]
    answer_at, more_at = min(feasible, key=lambda p: (replays[p][1], -p[0], -p[1]))
    figures = lambda pair: {"accuracy": replays[pair][0], "flops_vs_escalate": replays[pair][1] / escalate_flops,  # noqa: E731
                            "small_answers": replays[pair][2] / len(rows)}
    return {"answer_at": answer_at, "more_at": more_at, "k": config.k, "more": config.more,
            "temperature": config.temperature, "escalate": config.escalate, "problems": len(rows),
            "tolerance": tolerance, "escalate_accuracy": escalate_accuracy, **figures((answer_at, more_at)),
            "replays": [{"answer_at": a, "more_at": m, **figures((a, m))} for a, m in candidates]}


def replay(rows: list[dict], k: int, total: int, answer_at: float, more_at: float) -> tuple[float, float, int]:
    """(accuracy, estimated FLOPs, problems the small model answered) of the thresholds on `rows`."""
    correct, cost, answered = 0, 0.0, 0
    for row in rows:
        drawn = k
        answer, agreement = leader(row["answers"][:k])
        if more_at <= agreement < answer_at and total > k:
            drawn = total
            answer, agreement = leader(row["answers"])
        cost += drawn * row["sample_flops"]
        if agreement >= answer_at:
            answered += 1
            correct += answers_match(answer, row["reference"])
        else:
            cost += row["escalate_flops"]
            correct += row["escalate_correct"]
    return correct / len(rows), cost, answered
