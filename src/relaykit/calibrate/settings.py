"""Tuned settings per pair (`relaykit calibrate settings`): each strategy with speed settings runs
every candidate setting beside the large model alone, on the same calibration problems in one run
(`evaluate` interleaves them chunk by chunk, so a slow spell of the machine falls on all alike).
Kept: the fastest by wall time whose accuracy is the large model's (compute by difficulty: up to one
point below); within 3% of the fastest, the one with the fewest FLOPs. A strategy none of whose candidates qualifies is
stored as refused, so that its bare name says so instead of losing the answer. Every candidate's
figures are written beside the choice."""

from __future__ import annotations

import dataclasses
import time

from ..decoding.stopping import StopConfig
from ..evals.datasets import load_dataset, token_budget
from ..evals.harness import EvalSettings, evaluate
from ..options import variant_text
from ..strategies.adaptive import AdaptiveConfig
from ..strategies.base import get_strategy
from .adaptive import calibrate_adaptive

# The candidates of each strategy: the config's defaults first, then the settings the papers and
# our measurements suggest (benchmarks/RESULTS.md: speculative decoding's best on a CPU drafts long
# runs cut by the draft's confidence; lookup's reference checks 10 drafts)
SPECULATIVE = [dict(k=4, max_k=16, adaptive=False, draft_confidence=0.0),
               dict(k=32, max_k=32, adaptive=False, draft_confidence=0.8),
               dict(k=128, max_k=128, adaptive=False, draft_confidence=0.8),
               dict(k=128, max_k=128, adaptive=False, draft_confidence=0.6)]
RELAYGEN = [dict(speculative=0, draft_confidence=0.0), dict(speculative=32, draft_confidence=0.8),
            dict(speculative=128, draft_confidence=0.8)]
LOOKUP = [dict(k=5), dict(k=3), dict(k=10)]
FIXED_CANDIDATES = {"speculative": SPECULATIVE, "relaygen": RELAYGEN, "lookup": LOOKUP}
EXIT_THRESHOLDS = (0.95, 0.99, 0.9)  # DEER's 0.95 first: on a tie the paper's default stays
LIMIT = 40  # calibration problems per strategy
BATCH_SIZE = 1  # speed-ups at one request at a time (latency), as speculative methods are used
# The workloads a strategy is for, on the toy world, as (dataset, problems, batch size): compute by
# difficulty needs problems of several levels (its thresholds are chosen on the same 300, as the
# shipped adaptive calibration was), early exit long thinking (1,600 tokens a problem, batched);
# other pairs calibrate every strategy on --dataset
TOY_WORKLOADS = {"adaptive": ("toy:mixed:calibration", 300, 8), "early-exit": ("toy:long:calibration", 100, 8)}
# Accuracy a setting may lose against the large model alone on the calibration problems. Compute by
# difficulty hands whole problems to the small model, so any useful threshold trades some answers
# (Snell et al. 2024 allocate compute under a budget): one point, 3 of 300 toy problems. The others
# write the large model's text (speculative, lookup, RelayGen's checked segments) or must not lose
# it (early exit: on 100 calibration problems threshold 0.9 lost one that 0.95 kept, and one of 60
# unseen ones too)
TOLERANCE = {"adaptive": 0.01}
TIE = 0.03  # speed-ups this close to the fastest count as a tie (a run's noise), broken by fewer FLOPs


@dataclasses.dataclass
class SettingsCalibration:
    dataset: str = "toy:calibration"
    limit: int | None = None  # problems per workload (None: LIMIT, or a toy workload's own)
    batch_size: int | None = None  # None: BATCH_SIZE, or a toy workload's own
    tolerance: float | None = None  # accuracy a setting may lose against the large model alone (None: TOLERANCE)
    strategies: tuple[str, ...] = ("speculative", "relaygen", "lookup", "adaptive", "early-exit")
    workloads: dict = dataclasses.field(default_factory=dict)  # strategy -> dataset, instead of `dataset`
    # strategy -> options every candidate runs with (RelayGen's cues)
    fixed: dict = dataclasses.field(default_factory=dict)


def workload(name: str, calibration: SettingsCalibration) -> tuple[str, int, int]:
    """The dataset strategy `name` is calibrated on, how many of its problems, at what batch size."""
    dataset, limit, batch_size = calibration.dataset, LIMIT, BATCH_SIZE
    if name in calibration.workloads:
        dataset = calibration.workloads[name]
    elif calibration.dataset.startswith("toy:") and name in TOY_WORKLOADS:
        dataset, limit, batch_size = TOY_WORKLOADS[name]
    return dataset, calibration.limit or limit, calibration.batch_size or batch_size


def tolerance(name: str, calibration: SettingsCalibration) -> float:
    return calibration.tolerance if calibration.tolerance is not None else TOLERANCE.get(name, 0.0)


def candidates(name: str, models: dict, problems: list, calibration: SettingsCalibration, budget: int,
               progress) -> list[dict]:
    """The settings of strategy `name` to try on `models`."""
    if name in FIXED_CANDIDATES:
        return FIXED_CANDIDATES[name]
    if name == "early-exit":
        probes = ["prober", "large"] if "prober" in models else ["large"]
        return [dict(probe_model=probe, threshold=t) for probe in probes for t in EXIT_THRESHOLDS]
    if name == "adaptive":  # thresholds from calibrate_adaptive, per signal and escalation
        found = []  # a difficulty model reads the prompt once; without one, the small model's samples
        routes = ([("difficulty", "large"), ("difficulty", "relaygen")] if "difficulty" in models
                  else [("samples", "relaygen")])
        for signal, escalate in routes:
            progress(f"adaptive thresholds: signal={signal} escalate={escalate}")
            config = AdaptiveConfig(signal=signal, escalate=escalate)
            chosen = calibrate_adaptive(models, problems, config, tolerance(name, calibration), budget, 8)
            found.append(dict(signal=signal, escalate=escalate, answer_at=chosen["answer_at"],
                              more_at=chosen["more_at"], calibration="none"))
        return found
    raise ValueError(f"no candidates for {name}")


def losses(large: dict, entry: dict) -> int:
    """Problems the large model alone answers right and a strategy wrong (its accuracy nets them
    against the problems it gets right where the large model does not)."""
    return sum(a["correct"] and not b["correct"] for a, b in zip(large["problems"], entry["problems"]))


def calibrate_settings(models: dict, calibration: SettingsCalibration, progress=print) -> dict:
    """Strategy name -> its entry for the settings file: the chosen options and figures, every
    candidate's figures; or "refused" with the reason."""
    from ..api import build_strategies

    chosen = {}
    for name in calibration.strategies:
        cls = get_strategy(name)
        if any(role not in models for role in cls.roles):
            continue
        started = time.perf_counter()
        dataset, limit, batch_size = workload(name, calibration)
        problems = load_dataset(dataset, limit)
        budget = token_budget(dataset)
        options = candidates(name, models, problems, calibration, budget, progress)
        labels = {variant_text(name, {**calibration.fixed.get(name, {}), **o}): o for o in options}
        strategies = build_strategies(["large", *labels], models, stop=StopConfig(max_new_tokens=budget))
        progress(f"{name}: {len(options)} settings on {len(problems)} problems of {dataset}")
        results = evaluate(strategies, problems, dataset, EvalSettings(batch_size=batch_size))["strategies"]
        large = results["large"]
        figures = {text: {"accuracy": results[text]["accuracy"], "losses": losses(large, results[text]),
                          "speedup_vs_large": results[text]["speedup_vs_large"],
                          "flops_vs_large": results[text]["flops"] / large["flops"]} for text in labels}
        allowed = tolerance(name, calibration)
        kept = [text for text in labels if figures[text]["accuracy"] >= large["accuracy"] - allowed]
        entry = {"dataset": dataset, "problems": len(problems), "batch_size": batch_size, "tolerance": allowed,
                 "seconds": round(time.perf_counter() - started), "large_accuracy": large["accuracy"],
                 "candidates": [{"options": labels[text], **figures[text]} for text in labels]}
        if kept:
            fastest = max(figures[text]["speedup_vs_large"] for text in kept)
            ties = [text for text in kept if figures[text]["speedup_vs_large"] >= (1 - TIE) * fastest]
            best = min(ties, key=lambda text: figures[text]["flops_vs_large"])
            entry = {"options": labels[best], **figures[best], **entry}
        else:
            entry = {"refused": f"every setting tried lost accuracy against the large model alone on {dataset}",
                     **entry}
        chosen[name] = entry
        progress(f"{name}: " + (variant_text(name, entry["options"]) + f" {entry['speedup_vs_large']:.2f}x, "
                                f"{entry['flops_vs_large']:.2f}x FLOPs" if "options" in entry else "refused"))
    return chosen
