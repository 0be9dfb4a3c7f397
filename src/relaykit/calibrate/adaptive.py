"""Calibration of `adaptive`'s thresholds on a dev split.

One run on the problems: `small` greedy (the FLOPs of one sample), the escalation strategy (its
answer and FLOPs per problem) and, for `signal=samples`, `adaptive` drawing every sample before
escalating (each problem's sample answers). Every pair of thresholds is then replayed on those
records: after `k` samples the small model answers, draws `more`, or escalates, as the strategy
would. For `signal=difficulty` the difficulty model reads each prompt once, and every threshold
on its probability is replayed (the small model's greedy answer or the escalation). Kept: the
cheapest thresholds (estimated FLOPs) whose accuracy is within `tolerance` of the escalation
strategy's alone (of those within 2% of the cheapest, the most accurate, then the cheapest); or,
given a FLOPs budget, the most accurate within it (compute-optimal allocation under a budget, as
Snell et al. 2024 frame it). Every replay is written beside the choice.
"""

from __future__ import annotations

import dataclasses

from ..answers import answers_match
from ..decoding.stopping import StopConfig
from ..errors import RelaykitError
from ..resolve import resolve
from ..strategies.adaptive import Adaptive, AdaptiveConfig, leader

NEVER = 2.0  # an agreement threshold no sample set reaches
# thresholds this close to the cheapest in FLOPs count as as cheap: the most accurate of them is kept,
# not the one at the edge of the tolerance (on toy:mixed:calibration 1% more FLOPs kept one more problem of 300)
COST_TIE = 0.02


def calibrate_adaptive(models: dict, problems: list, config=None, tolerance: float = 0.005,
                       max_new_tokens: int = 512, batch_size: int = 8, budget: float | None = None) -> dict:
    """Thresholds for `adaptive` (with `config`'s signal, k, more, temperature and escalation) on
    `problems`: the cheapest within `tolerance` of the escalation's accuracy or, with `budget` (a
    share of the escalation's FLOPs), the most accurate that spend at most that."""
    from ..api import build_strategy
    from ..evals.harness import EvalSettings, evaluate

    if not problems or not hasattr(problems[0], "reference"):
        raise RelaykitError("calibrating adaptive needs evaluation problems with references (a dataset)")
    config = config or AdaptiveConfig()
    stop = StopConfig(max_new_tokens=max_new_tokens)
    strategies = {"small": build_strategy("small", models, stop=stop),
                  "escalate": build_strategy(config.escalate, models, stop=stop)}
    if config.signal == "samples":
        every = dataclasses.replace(config, answer_at=NEVER, more_at=0.0, calibration="none")
        every, mine = resolve(Adaptive, every, models)
        strategies["samples"] = Adaptive(mine, every, stop=stop)
    results = evaluate(strategies, problems, "calibration", EvalSettings(batch_size=batch_size))["strategies"]
    flops = lambda record: sum(u["flops"] for u in record["usage"].values())  # noqa: E731
    rows = []
    for small, escalated, problem in zip(results["small"]["problems"], results["escalate"]["problems"], problems):
        rows.append({"reference": problem.reference, "small_answer": small["prediction"],
                     "escalate_correct": escalated["correct"],
                     "sample_flops": flops(small), "escalate_flops": flops(escalated)})
    if config.signal == "samples":
        for row, sampled in zip(rows, results["samples"]["problems"]):
            row["answers"] = next(e for e in sampled["events"] if e["reason"] == "adaptive")["detail"]["answers"]
        k, total = config.k, config.k + config.more
        levels = sorted({j / n for n in (k, total) for j in range(1, n + 1)}) + [NEVER]
        candidates = [(a, m) for a in levels for m in levels if m <= a or m == NEVER]
        replays = {pair: replay(rows, k, total, *pair) for pair in candidates}
    else:
        for row, p_small in zip(rows, small_is_right_probability(models, problems, batch_size)):
            row["p_small"] = p_small
        # midway between the probabilities seen, so that a replayed decision is robust to the last
        # digits in which the runtime's forward may differ
        seen = sorted({r["p_small"] for r in rows})
        candidates = [(t, t) for t in (0.0, *((a + b) / 2 for a, b in zip(seen, seen[1:])), NEVER)]
        replays = {pair: replay_difficulty(rows, pair[0]) for pair in candidates}
    escalate_accuracy = sum(r["escalate_correct"] for r in rows) / len(rows)
    escalate_flops = sum(r["escalate_flops"] for r in rows)
    if budget is None:  # the cheapest within tolerance; within COST_TIE of it, the most accurate
        feasible = [p for p, (accuracy, _, _) in replays.items() if accuracy >= escalate_accuracy - tolerance]
        cheapest = min(replays[p][1] for p in feasible)
        near = [p for p in feasible if replays[p][1] <= (1 + COST_TIE) * cheapest]
        answer_at, more_at = max(near, key=lambda p: (replays[p][0], -replays[p][1], p[0], p[1]))
    else:  # the most accurate within the budget (the escalation alone when nothing fits)
        feasible = [p for p, (_, cost, _) in replays.items() if cost <= budget * escalate_flops] or [(NEVER, NEVER)]
        answer_at, more_at = max(feasible, key=lambda p: (replays[p][0], -replays[p][1], p[0], p[1]))
    figures = lambda pair: {"accuracy": replays[pair][0], "flops_vs_escalate": replays[pair][1] / escalate_flops,  # noqa: E731
                            "small_answers": replays[pair][2] / len(rows)}
    return {"signal": config.signal, "answer_at": answer_at, "more_at": more_at, "k": config.k, "more": config.more,
            "temperature": config.temperature, "escalate": config.escalate, "problems": len(rows),
            "tolerance": tolerance, "budget": budget, "escalate_accuracy": escalate_accuracy,
            **figures((answer_at, more_at)),
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


def small_is_right_probability(models: dict, problems: list, batch_size: int) -> list[float]:
    """The difficulty model's probability that the small model answers each problem right."""
    import torch

    from ..decoding.prompt import encode_prompt
    from ..evals.harness import prompt_text
    from ..train.difficulty import routing_logits

    judge = models["difficulty"]
    prompts = [encode_prompt(judge.tokenizer, prompt_text(p)) for p in problems]
    with torch.inference_mode():
        return [float(p) for start in range(0, len(prompts), batch_size)
                for p in routing_logits(judge.hf, prompts[start : start + batch_size]).softmax(-1)[:, 0]]


def replay_difficulty(rows: list[dict], answer_at: float) -> tuple[float, float, int]:
    """(accuracy, estimated FLOPs, problems the small model answered) of a difficulty threshold on
    `rows` (the difficulty model's read of the prompt is left out of the FLOPs: one prefill)."""
    correct, cost, answered = 0, 0.0, 0
    for row in rows:
        if row["p_small"] >= answer_at:
            answered += 1
            cost += row["sample_flops"]
            correct += answers_match(row["small_answer"], row["reference"])
        else:
            cost += row["escalate_flops"]
            correct += row["escalate_correct"]
    return correct / len(rows), cost, answered
