"""Run several strategies on the same problems in one process and measure them the same way."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from tqdm import tqdm

from ..answers import answers_match, extract_answer
from ..decoding.prompt import encode_prompt
from ..decoding.stopping import StopConfig
from ..decoding.usage import acceptance
from ..models.kv import KVPolicy
from ..runtime.session import sessions_for
from ..strategies.base import Strategy
from .datasets import EvalProblem
from .overthinking import efficiency

LENGTH_FLAG = 0.05  # a report flags a strategy whose answers stopped at the token budget on more problems than this
# appended to benchmark prompts that do not already ask for a boxed answer (Qwen/DeepSeek style)
BOXED_INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."


@dataclass
class EvalSettings:
    batch_size: int = 8
    raw: bool = False  # skip the chat template
    progress: bool = True


def prompt_text(problem: EvalProblem) -> str:
    if problem.source.startswith("toy") or "boxed" in problem.prompt:
        return problem.prompt
    return problem.prompt + BOXED_INSTRUCTION


def _records(strategy: Strategy, problems: list[EvalProblem], results: list, wall: float) -> dict:
    """Accuracy, cost and per-problem records of one strategy's results on the problems."""
    tokenizer = strategy.tokenizer
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    records = []
    for problem, result in zip(problems, results):
        prediction = extract_answer(result.text)
        records.append(
            {
                "id": problem.id,
                "domain": problem.domain,
                "level": problem.level,
                "prediction": prediction,
                "reference": problem.reference,
                "correct": answers_match(prediction, problem.reference),
                "text": result.text,
                "segments": [list(s) for s in result.segments(tokenizer)],
                "tokens": len(result.token_ids),
                "tokens_by": {w: result.tokens_by(w) for w in set(result.provenance)},
                "usage": {role: usage.to_dict() for role, usage in result.usage.items()},
                "events": [event.to_dict() for event in result.events],
                "finish_reason": str(result.finish_reason) if result.finish_reason else None,
            }
        )
        measured = efficiency(result.text, problem.reference, count)
        if measured is not None:  # overthinking (Chen et al. 2024), on traces with a <think> part
            records[-1]["outcome_efficiency"], records[-1]["process_efficiency"] = measured
        calls = [{"position": e.position, **e.detail} for e in result.events if e.reason == "call" and e.detail]
        if calls:  # RelayLLM: where the small model called, N requested, tokens the large model wrote
            records[-1]["calls"] = calls
    tokens = sum(r["tokens"] for r in records)
    large_tokens = sum(r["tokens_by"].get("large", 0) for r in records)
    writers = sorted({w for r in records for w in r["tokens_by"]})
    roles = sorted({role for r in records for role in r["usage"]})
    flops = sum(u["flops"] for r in records for u in r["usage"].values())
    return {
        "accuracy": sum(r["correct"] for r in records) / max(len(records), 1),
        "large_token_share": large_tokens / max(tokens, 1),
        "flops": flops,
        # each model's share of the written tokens and of the FLOPs (FusionRoute's experts, ...)
        "token_share": {w: sum(r["tokens_by"].get(w, 0) for r in records) / max(tokens, 1) for w in writers},
        "flops_share": {m: sum(r["usage"].get(m, {}).get("flops", 0) for r in records) / (flops or 1) for m in roles},
        "wall_seconds": wall,
        "tokens": tokens,
        # every token any model wrote, discarded samples, drafts and probes included
        "tokens_generated": sum(u["decode_tokens"] for r in records for u in r["usage"].values()),
        "tokens_per_second": tokens / wall if wall else 0.0,
        "switches_per_problem": sum(1 for r in records for e in r["events"] if e["direction"]) / max(len(records), 1),
        # samples a test-time strategy drew (self-consistency's vote says how many), 1 for the others
        "samples_per_problem": sum(max([(e["detail"] or {}).get("samples", 1) for e in r["events"]] or [1])
                                   for r in records) / max(len(records), 1),
        "outcome_efficiency": _mean([r["outcome_efficiency"] for r in records if "outcome_efficiency" in r]),
        "process_efficiency": _mean([r["process_efficiency"] for r in records if "process_efficiency" in r]),
        "speedup_vs_large": None,
        # answers cut by the token budget rather than finished: a strategy above LENGTH_FLAG is flagged
        "length_stops": sum(r["finish_reason"] == "length" for r in records) / max(len(records), 1),
        **{f"by_{group}": _by(records, group) for group in ("domain", "level") if any(r[group] for r in records)},
        **({"endpoints": endpoints} if (endpoints := _endpoints(records)) else {}),
        **({"acceptance": drafts} if (drafts := _acceptance(results)) else {}),
        "problems": records,
    }


def _endpoints(records: list[dict]) -> dict:
    """Per model behind an endpoint, per problem: its requests, the tokens they carried and the
    positions scored, kilobytes both ways and seconds waited."""
    roles = sorted({role for r in records for role, u in r["usage"].items() if u.get("requests")})
    n = max(len(records), 1)
    total = lambda role, key: sum(r["usage"].get(role, {}).get(key, 0) for r in records)  # noqa: E731
    return {role: {"requests": total(role, "requests") / n, "tokens_sent": total(role, "tokens_sent") / n,
                   "tokens_scored": total(role, "tokens_scored") / n,
                   "kilobytes": (total(role, "bytes_sent") + total(role, "bytes_received")) / n / 1000,
                   "seconds": total(role, "seconds") / n} for role in roles}


def _acceptance(results: list) -> dict:
    """Per model that checked drafts, over the problems: see `relaykit.decoding.usage.acceptance`."""
    roles = sorted({role for result in results for role, usage in result.usage.items() if usage.checks})
    return {role: acceptance([result.usage[role] for result in results if role in result.usage]) for role in roles}


def _by(records: list[dict], group: str) -> dict:
    """Accuracy and problem count per domain or level (toy problems have them)."""
    names = sorted({r[group] for r in records if r[group]})
    return {g: {"accuracy": _mean([float(r["correct"]) for r in records if r[group] == g]),
                "problems": sum(r[group] == g for r in records)} for g in names}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def evaluate(strategies: dict[str, Strategy], problems: list[EvalProblem], dataset: str, settings: EvalSettings,
             kv: KVPolicy | None = None) -> dict:
    """Every strategy on the same problems in this process, in sessions that share their models'
    runners (`sessions_for`; `kv`: the KV policy of every in-process model); speed-ups are against
    the `large` strategy (the large model alone) of the same run. The strategies take turns chunk
    by chunk (`batch_size` problems each), so a slower or faster spell of a shared machine falls on
    all of them alike; each strategy's wall time is the sum of its own turns."""
    sessions = sessions_for(strategies, kv)
    prompts = {
        name: [encode_prompt(s.tokenizer, prompt_text(p), raw=settings.raw) for p in problems]
        for name, s in strategies.items()
    }
    for name, strategy in strategies.items():  # warm-up: first calls are not the method's cost
        sessions[name].generate(strategy, prompts[name][:1], StopConfig(max_new_tokens=2))
    outputs = {name: [] for name in strategies}
    walls = dict.fromkeys(strategies, 0.0)
    bar = tqdm(total=len(problems) * len(strategies), desc="eval", unit="problem", disable=not settings.progress,
               leave=False)
    for chunk in range(0, len(problems), settings.batch_size):
        end = min(chunk + settings.batch_size, len(problems))
        for name, strategy in strategies.items():
            started = time.perf_counter()
            outputs[name] += sessions[name].generate(strategy, prompts[name][chunk:end])
            walls[name] += time.perf_counter() - started
            bar.set_postfix_str(name)
            bar.update(end - chunk)
    bar.close()
    models = {role: model.describe() for s in strategies.values() for role, model in s.models.items()}
    results = {"dataset": dataset, "n_problems": len(problems), "models": models, "strategies": {}}
    for name, strategy in strategies.items():
        entry = results["strategies"][name] = _records(strategy, problems, outputs[name], walls[name])
        entry["max_new_tokens"] = strategy.stop_config.max_new_tokens
        entry["settings"] = asdict(strategy.settings) if strategy.settings else None
        entry["cut_by_length"] = entry["length_stops"] > LENGTH_FLAG
    baseline = results["strategies"].get("large")
    if baseline:
        for entry in results["strategies"].values():
            entry["speedup_vs_large"] = (baseline["wall_seconds"] / entry["wall_seconds"] if entry["wall_seconds"]
                                         else None)
    curves = n_curves(strategies, results["strategies"])
    if curves:
        results["curves"] = curves
    return results


def n_curves(strategies: dict[str, Strategy], entries: dict) -> dict:
    """Variants of one strategy that differ only in their `n` (samples, beams): family label ->
    its points in order of n (n, the variant's label, accuracy, FLOPs, tokens generated, samples drawn)."""
    families: dict[str, list] = {}
    for label, strategy in strategies.items():
        config = strategy.config
        if not hasattr(config, "n"):
            continue
        others = {k: v for k, v in asdict(config).items() if k != "n"}
        key = f"{strategy.name}[n=N {' '.join(f'{k}={v}' for k, v in sorted(others.items()))}]"
        entry = entries[label]
        families.setdefault(key, []).append({"n": config.n, "strategy": label, "accuracy": entry["accuracy"],
                                             "flops": entry["flops"], "tokens_generated": entry["tokens_generated"],
                                             "samples_per_problem": entry["samples_per_problem"]})
    return {key: sorted(points, key=lambda p: p["n"]) for key, points in families.items()
            if len({p["n"] for p in points}) > 1}
