"""Train a small model to call a large one (RelayLLM, Huang et al. 2026) in two stages.

1. Warm-up SFT: on training problems, the reference solution with `<call>N</call>` inserted
   before each span where the small model's top-1 departs from the reference (teacher forcing);
   the span itself is the large model's (no loss), everything else the small model's (loss,
   commands included). With `critical_only` (ours) a span is kept only when the departure would
   change the answer: the large model, continuing greedily from the reference before the span with
   the small model's token in its place, answers wrong. A harmless slip (a check counter off by
   one, a first product miscopied where only the second is the answer) then costs no call.
2. GRPO: rollouts are real `relayllm` generations with real calls to the large model, batched on
   the scheduler (8 per prompt at temperature 1.0); the reward is decided per question over its
   group (`relayllm_rewards`); the large model's tokens carry no loss.

`calls=False` trains the no-call baseline: GRPO of the plain small model, reward 1 when right.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..answers import answers_match, extract_answer
from ..decoding.prompt import encode_prompt
from ..decoding.sampler import SamplingConfig
from ..decoding.stopping import StopConfig
from ..models.loading import Model
from ..runtime.session import Session
from ..strategies.base import get_strategy
from ..strategies.relayllm import RelayLLMConfig
from ..toyworld import Problem, load_split
from .grpo import GRPOConfig, group_advantages, grpo_loss
from .loop import TrainConfig, finish_run, new_run, train
from .sft import pad, sft_loss


@dataclass(frozen=True)
class RelayLLMTrainConfig:
    seed: int = 0
    calls: bool = True  # False: the no-call baseline (GRPO of the small model alone, no warm-up)
    warmup_problems: int = 4000  # training problems turned into warm-up examples
    sft_batch: int = 16  # examples per SFT step
    sft: TrainConfig = TrainConfig(steps=1500, lr=1e-3, warmup=20, weight_decay=0.1)
    merge_gap: int = 1  # departures this close join one span (one call)
    # rounds of warm-up: each finds the hard spans with the model as the previous round left it (the
    # first with the untrained small model), then trains `sft` steps on them (ours)
    warmup_rounds: int = 2
    # a span inside a number runs to the number's end (the small model's next digit follows a wrong one)
    whole_numbers: bool = True
    # keep only the spans whose departure makes the large model's continuation answer wrong (ours;
    # a third of the shipped warm-up's large tokens went to check counters and harmless copies)
    critical_only: bool = True
    grpo: TrainConfig = TrainConfig(steps=60, lr=2e-4, warmup=5, min_lr_ratio=1.0)
    grpo_method: GRPOConfig = field(default_factory=GRPOConfig)
    prompts_per_step: int = 8  # questions per GRPO step (x `grpo_method.group` rollouts)
    max_new_tokens: int = 320
    strategy: RelayLLMConfig = field(default_factory=RelayLLMConfig)


# warm-up data


@torch.no_grad()
def departures(small, examples: list[tuple[list[int], int]], commands: list[int],
               batch: int = 32) -> list[dict[int, int]]:
    """For each (ids, answer start): {t: the small model's top-1 after ids[:t]} for each t >= start
    where that is not ids[t] (teacher forcing), command tokens left out of the top-1: a model that
    already calls there is asked what it would write itself."""
    out = []
    for first in range(0, len(examples), batch):
        chunk = examples[first : first + batch]
        ids = pad([e[0] for e in chunk], 0)
        logits = small(input_ids=ids).logits[:, :-1]
        logits[..., commands] = float("-inf")
        predicted = logits.argmax(-1).tolist()
        for row, (tokens, start) in enumerate(chunk):
            out.append({t: predicted[row][t - 1] for t in range(start, len(tokens))
                        if predicted[row][t - 1] != tokens[t]})
    return out


def critical(large: Model, examples: list[tuple[list[int], int]], answers: list[str],
             slips: list[list[tuple[int, int]]], window: int = 128) -> list[list[bool]]:
    """For each example's slips (index t, the small model's token there): whether the large model,
    continuing greedily from ids[:t] + [token] (at most twice the reference's rest), reaches a
    wrong answer. Run in one session, `window` continuations at a time."""
    strategy = get_strategy("large")({"large": large}, None)
    session = Session({"large": large})
    jobs = [(e, t, token) for e, slip in enumerate(slips) for t, token in slip]
    wrong: list[bool] = []
    for first in tqdm(range(0, len(jobs), window), desc="critical spans", unit="window", mininterval=10):
        handles = []
        for e, t, token in jobs[first : first + window]:
            tokens = examples[e][0]
            stop = StopConfig(max_new_tokens=2 * (len(tokens) - t) + 8)
            handles.append(session.submit(strategy, tokens[:t] + [token], stop=stop))
        for (e, t, token), result in zip(jobs[first : first + window], [handle.result() for handle in handles]):
            tokens, start = examples[e]
            text = large.tokenizer.decode(tokens[start:t] + [token]) + result.text
            wrong.append(not answers_match(extract_answer(text), answers[e]))
    out, taken = [], 0
    for slip in slips:
        out.append(wrong[taken : taken + len(slip)])
        taken += len(slip)
    return out


def spans(points: list[int], merge_gap: int) -> list[tuple[int, int]]:
    """Sorted indices grouped into [first, last] spans; gaps of up to `merge_gap` tokens join."""
    out: list[list[int]] = []
    for p in points:
        if out and p - out[-1][1] <= merge_gap + 1:
            out[-1][1] = p
        else:
            out.append([p, p])
    return [(a, b) for a, b in out]


def to_number_end(tokens: list[int], hard: list[tuple[int, int]], is_digit) -> list[tuple[int, int]]:
    """Each span that ends on a digit runs on to the last digit of its number (spans that meet join)."""
    out: list[tuple[int, int]] = []
    for first, last in hard:
        while is_digit(tokens[last]) and last + 1 < len(tokens) and is_digit(tokens[last + 1]):
            last += 1
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(last, out[-1][1]))
        else:
            out.append((first, last))
    return out


def with_calls(tokens: list[int], start: int, hard: list[tuple[int, int]], call_ids) -> tuple[list[int], list[bool]]:
    """The example with `<call>N</call>` before each hard span; mask[t]: token t is the small
    model's to learn (the answer's tokens outside spans, and the commands)."""
    ids, mask = list(tokens[:start]), [False] * start
    cursor = start
    for first, last in hard:
        ids += tokens[cursor:first]
        mask += [True] * (first - cursor)
        command = call_ids(last - first + 1)
        ids += command + tokens[first : last + 1]
        mask += [True] * len(command) + [False] * (last - first + 1)
        cursor = last + 1
    ids += tokens[cursor:]
    mask += [True] * (len(tokens) - cursor)
    return ids, mask


def warmup_examples(small: Model, problems: list[Problem], merge_gap: int, whole_numbers: bool,
                    large: Model | None = None) -> tuple[list, list, dict]:
    """Warm-up (ids, mask) pairs for `problems`, and figures of the hard spans found; with `large`,
    only the spans whose first slip is `critical`."""
    tokenizer = small.tokenizer
    encoded = []
    for problem in problems:
        prompt = encode_prompt(tokenizer, problem.question)
        answer = tokenizer(problem.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        encoded.append((prompt + answer, len(prompt)))

    def call_ids(n):
        return tokenizer(f"<call>{n}</call>", add_special_tokens=False)["input_ids"]

    ids, masks, n_spans, n_hard, n_answer = [], [], 0, 0, 0
    commands = tokenizer.convert_tokens_to_ids(["<call>", "</call>"])
    slips = departures(small.hf, encoded, commands)
    found = [spans(list(points), merge_gap) for points in slips]
    n_found = sum(map(len, found))
    if large is not None:
        verdicts = critical(large, encoded, [p.answer for p in problems],
                            [[(a, slip[a]) for a, _ in hard] for hard, slip in zip(found, slips)])
        found = [[span for span, keep in zip(hard, kept) if keep] for hard, kept in zip(found, verdicts)]
    for (tokens, start), hard in zip(encoded, found):
        if whole_numbers:
            hard = to_number_end(tokens, hard, lambda t: tokenizer.decode([t]).isdigit())
        example, mask = with_calls(tokens, start, hard, call_ids)
        ids.append(example)
        masks.append(mask)
        n_spans += len(hard)
        n_hard += sum(b - a + 1 for a, b in hard)
        n_answer += len(tokens) - start
    figures = {"examples": len(ids), "spans_found_per_example": n_found / len(ids),
               "calls_per_example": n_spans / len(ids), "large_token_share": n_hard / n_answer}
    return ids, masks, figures


# rewards


def relayllm_rewards(correct: list[bool], call_ratios: list[float]) -> list[float]:
    """RelayLLM's reward for one question's group of rollouts. call_ratio: tokens requested from
    the large model over response tokens (0: no call).
    - some rollout is right without a call: right without 1.5, right with 1 - ratio, wrong 0;
    - else some rollout is right with a call: right 1 - ratio, wrong without a call -1, wrong with 0;
    - else: calling scores its ratio, not calling 0."""
    called = [r > 0 for r in call_ratios]
    if any(c and not k for c, k in zip(correct, called)):
        return [(1.5 if not k else 1 - r) if c else 0.0 for c, k, r in zip(correct, called, call_ratios)]
    if any(correct):
        return [1 - r if c else (0.0 if k else -1.0) for c, k, r in zip(correct, called, call_ratios)]
    return [r if k else 0.0 for k, r in zip(called, call_ratios)]


def call_ratio(result) -> float:
    """Tokens requested from the large model over the response's tokens, at most 1."""
    requested = sum(e.detail["requested"] for e in result.events if e.reason == "call" and e.detail)
    return min(1.0, requested / max(len(result.token_ids), 1))


# GRPO


class Rollouts:
    """Each GRPO step's batch: `prompts_per_step` training questions, `group` sampled rollouts
    each, generated together in one session; rewards decided per question."""

    def __init__(self, models: dict, cfg: RelayLLMTrainConfig):
        self.cfg = cfg
        name = "relayllm" if cfg.calls else "small"
        options = cfg.strategy if cfg.calls else None
        self.strategy = get_strategy(name)(models, options, stop=StopConfig(max_new_tokens=cfg.max_new_tokens))
        self.session = Session(models)
        self.tokenizer = models["small"].tokenizer
        self.problems = load_split("train", cfg.prompts_per_step * cfg.grpo.steps
                                   + cfg.warmup_problems)[cfg.warmup_problems :]

    def __call__(self, step: int) -> dict:
        cfg, group = self.cfg, self.cfg.grpo_method.group
        chosen = self.problems[step * cfg.prompts_per_step : (step + 1) * cfg.prompts_per_step]
        handles = []
        for i, problem in enumerate(chosen):
            seeds = [cfg.seed * 1_000_003 + (step * cfg.prompts_per_step + i) * group + j for j in range(group)]
            samplings = [SamplingConfig(temperature=cfg.grpo_method.temperature, seed=s) for s in seeds]
            handles += self.session.submit_n(self.strategy, encode_prompt(self.tokenizer, problem.question), samplings)
        results = [handle.result() for handle in handles]
        ids, masks, rewards, correct, ratios = [], [], [], [], []
        for i, problem in enumerate(chosen):
            mine = results[i * group : (i + 1) * group]
            right = [answers_match(extract_answer(r.text), problem.answer) for r in mine]
            ratio = [call_ratio(r) for r in mine] if cfg.calls else [0.0] * group
            rewards += relayllm_rewards(right, ratio) if cfg.calls else [float(c) for c in right]
            correct += right
            ratios += ratio
        for handle, result in zip(handles, results):
            prompt = handle.request.sequence.tokens[: handle.request.sequence.prompt_length]
            ids.append(prompt + result.token_ids)
            masks.append([False] * len(prompt) + [w == "small" for w in result.provenance])
        large = sum(r.tokens_by("large") for r in results) / max(sum(len(r.token_ids) for r in results), 1)
        figures = {"reward": sum(rewards) / len(rewards), "accuracy": sum(correct) / len(correct),
                   "call_ratio": sum(ratios) / len(ratios), "large_token_share": large}
        return {"ids": ids, "masks": masks, "advantages": group_advantages(rewards, group), "figures": figures}


def train_relayllm(large: Model, small: Model, out: str | Path, cfg: RelayLLMTrainConfig | None = None) -> dict:
    """Warm-up SFT then GRPO of `small` (in place) with `large` answering its calls; writes the
    checkpoint, `train_log.jsonl` and `report.json` to `out`. Returns the report."""
    cfg = cfg or RelayLLMTrainConfig()
    out, log_path = new_run(out)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    policy = small.hf
    report: dict = {"config": asdict(cfg), "threads": torch.get_num_threads()}
    if cfg.calls and cfg.sft.steps:
        began = time.perf_counter()
        problems = load_split("train", cfg.warmup_problems)
        order = random.Random(cfg.seed)
        report["warmup_rounds"] = []
        for round_ in range(cfg.warmup_rounds):
            ids, masks, figures = warmup_examples(small, problems, cfg.merge_gap, cfg.whole_numbers,
                                                  large if cfg.critical_only else None)

            def sft_batch(step: int, ids=ids, masks=masks):
                picked = order.sample(range(len(ids)), cfg.sft_batch)
                return [ids[i] for i in picked], [masks[i] for i in picked]

            records = train(policy, cfg.sft, sft_batch, lambda b: sft_loss(policy, *b), f"warm-up {round_ + 1}",
                            log_path)
            figures["final_loss"] = sum(r["loss"] for r in records[-20:]) / len(records[-20:])
            report["warmup_rounds"].append(figures)
        report["warmup_minutes"] = (time.perf_counter() - began) / 60
    if cfg.grpo.steps:
        began = time.perf_counter()
        reference = copy.deepcopy(policy).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
        rollouts = Rollouts({"large": large, "small": small}, cfg)
        records = train(policy, cfg.grpo, rollouts,
                        lambda b: _grpo_step(policy, reference, b, cfg.grpo_method), "grpo", log_path)
        report["grpo_minutes"] = (time.perf_counter() - began) / 60
        last = records[-10:]
        report["grpo_last_10_steps"] = {k: sum(r[k] for r in last) / len(last)
                                        for k in ("reward", "accuracy", "call_ratio", "large_token_share")}
    return finish_run(small.hf, small.source, out, report)


def _grpo_step(policy, reference, batch: dict, method: GRPOConfig) -> tuple[torch.Tensor, dict]:
    loss, figures = grpo_loss(policy, reference, batch["ids"], batch["masks"], batch["advantages"], None, method)
    return loss, {**figures, **batch["figures"]}
