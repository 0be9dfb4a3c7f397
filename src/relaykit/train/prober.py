"""An answer prober for early exit (DEER probes the answer at reasoning transitions): a small
causal LM that reads a question and the thinking cut after any sentence, then `</think>The answer
is`, and writes the final answer. Where the thinking so far holds the answer it learns to copy it;
where it does not yet, the answer is a product the prober rarely knows, so its probability spreads
and the confidence threshold keeps the reasoning going.

Why not the reasoning model itself, as DEER does: the toy's large model has only seen `</think>`
after its final restatement line, and elsewhere answers confidently wrong (it copies the first
product; see benchmarks/RESULTS.md). A real reasoning model trained on varied traces is its own
prober (`early-exit[probe_model=large]`)."""

from __future__ import annotations

import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..decoding.prompt import encode_prompt
from ..models.loading import Model
from ..strategies.early_exit import EarlyExitConfig
from ..text import THINK_END
from ..toyworld import Problem, load_split
from .loop import TrainConfig, finish_run, new_run, train
from .sft import sft_loss

INDUCER = EarlyExitConfig.probe  # early exit's default probe
SENTENCE_END = re.compile(r"\n|\.(?= )")


@dataclass(frozen=True)
class ProberTrainConfig:
    seed: int = 0
    problems: int = 4000  # training problems, each cut after every thinking line
    long_problems: int = 400  # long-variant problems (56-60 check rounds), cut at their first `long_cuts` places
    long_cuts: int = 24
    batch: int = 16  # examples per step
    train: TrainConfig = TrainConfig(steps=1500, lr=1e-3, warmup=20, weight_decay=0.1)


def cuts(problem: Problem, max_cuts: int | None = None) -> list[tuple[str, str]]:
    """(the thinking cut where a transition may start, then the inducer; the answer text): after
    each line break, and after each full stop inside a line (a cue such as " Wait" carries its
    space), the first `max_cuts` of them."""
    thinking = problem.solution.split(THINK_END)[0]
    ends = [m.end() for m in SENTENCE_END.finditer(thinking)][:max_cuts]
    return [(thinking[:end] + INDUCER, f" {problem.answer}.") for end in ends]


def prober_examples(tokenizer, problems: list[tuple[Problem, int | None]]) -> list[tuple[list[int], list[bool]]]:
    """(ids, loss mask) pairs: the loss is on the answer text only."""
    examples = []
    for problem, max_cuts in problems:
        prompt = encode_prompt(tokenizer, problem.question)
        for cut, answer in cuts(problem, max_cuts):
            before = prompt + tokenizer(cut, add_special_tokens=False)["input_ids"]
            answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
            examples.append((before + answer_ids, [False] * len(before) + [True] * len(answer_ids)))
    return examples


def train_prober(base: Model, out: str | Path, cfg: ProberTrainConfig | None = None) -> dict:
    """Fine-tune `base` (in place) into an answer prober; writes it, `train_log.jsonl` and
    `report.json` to `out`."""
    cfg = cfg or ProberTrainConfig()
    out, log_path = new_run(out)
    torch.manual_seed(cfg.seed)
    began = time.perf_counter()
    problems = [(p, None) for p in load_split("train", cfg.problems)]
    problems += [(p, cfg.long_cuts) for p in load_split("train", cfg.long_problems, long=True)]
    examples = prober_examples(base.tokenizer, problems)
    order = random.Random(cfg.seed)
    model = base.hf

    def batch(step: int):
        picked = order.sample(examples, cfg.batch)
        return [e[0] for e in picked], [e[1] for e in picked]

    records = train(model, cfg.train, batch, lambda b: sft_loss(model, *b), "prober", log_path)
    report = {"config": asdict(cfg), "threads": torch.get_num_threads(), "examples": len(examples),
              "minutes": (time.perf_counter() - began) / 60,
              "final_loss": sum(r["loss"] for r in records[-20:]) / len(records[-20:])}
    return finish_run(model, base.source, out, report)
