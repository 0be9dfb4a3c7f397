"""A step verifier for search (a process reward model, Lightman et al. 2023; Math-Shepherd labels
every step after the first wrong one wrong): a small causal LM that, at the end of each step (the
token holding its line break) and at the answer's last token, predicts "+" for a step on a right
path and "-" otherwise. Its data are toy training solutions and copies with one number changed
(a wrong product, a miscopied value), the change carried into every later line that repeats it,
as a small model's own mistakes run on."""

from __future__ import annotations

import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..decoding.prompt import encode_prompt
from ..models.loading import Model
from ..toyworld import Problem, load_split
from ..verdicts import verdict_ids
from .loop import TrainConfig, finish_run, new_run, train
from .sft import pad

NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class VerifierTrainConfig:
    seed: int = 0
    problems: int = 4000  # training problems; each gives its solution and `wrong_copies` changed copies
    wrong_copies: int = 2  # changed copies of each solution
    batch: int = 16  # examples per step
    train: TrainConfig = TrainConfig(steps=1500, lr=1e-3, warmup=20, weight_decay=0.1)


def corrupt(solution: str, rng: random.Random) -> tuple[str, int]:
    """The solution with one number of one thinking line changed, and that line's index; later
    lines repeat the changed number where they repeated the original."""
    lines = solution.split("\n")
    candidates = [i for i, line in enumerate(lines[:-1]) if NUMBER.search(line) and i > 0]
    index = rng.choice(candidates)
    numbers = list(NUMBER.finditer(lines[index]))
    match = rng.choice(numbers)
    old = match.group()
    while True:
        digits = list(old)
        position = rng.randrange(len(digits))
        digits[position] = str(rng.randrange(10))
        new = "".join(digits)
        if new != old and not (len(new) > 1 and new[0] == "0"):
            break
    line = lines[index]
    lines[index] = line[: match.start()] + new + line[match.end() :]
    for later in range(index + 1, len(lines)):
        lines[later] = re.sub(rf"(?<!\d){old}(?!\d)", new, lines[later])
    return "\n".join(lines), index


def labelled(tokenizer, problem: Problem, solution: str,
             wrong_from: int | None) -> tuple[list[int], list[int], list[bool]]:
    """(ids, positions, verdicts): the prompt and solution, the index of each step's last token
    (its line break, and the answer's last token) and whether the path is right up to there."""
    ids = encode_prompt(tokenizer, problem.question)
    positions, verdicts = [], []
    lines = solution.split("\n")
    for index, line in enumerate(lines):
        text = line + ("\n" if index < len(lines) - 1 else "")
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
        positions.append(len(ids) - 1)
        verdicts.append(wrong_from is None or index < wrong_from)
    return ids, positions, verdicts


def verifier_examples(tokenizer, problems: list[Problem], copies: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    examples = []
    for problem in problems:
        examples.append(labelled(tokenizer, problem, problem.solution, None))
        for _ in range(copies):
            examples.append(labelled(tokenizer, problem, *corrupt(problem.solution, rng)))
    return examples


def verifier_loss(model, batch: list[tuple], good: int, bad: int) -> tuple[torch.Tensor, dict]:
    """Cross-entropy of "+"/"-" at every step end of the batch."""
    logits = model(input_ids=pad([e[0] for e in batch], 0)).logits
    rows = torch.tensor([b for b, e in enumerate(batch) for _ in e[1]])
    columns = torch.tensor([p for e in batch for p in e[1]])
    target = torch.tensor([0 if v else 1 for e in batch for v in e[2]])
    chosen = logits[rows, columns][:, [good, bad]].float()
    loss = F.cross_entropy(chosen, target)
    accuracy = float((chosen.argmax(-1) == target).float().mean())
    return loss, {"step_accuracy": accuracy}


def train_verifier(base: Model, out: str | Path, cfg: VerifierTrainConfig | None = None) -> dict:
    """Fine-tune `base` (in place) into a step verifier; writes it, `train_log.jsonl` and
    `report.json` to `out`."""
    cfg = cfg or VerifierTrainConfig()
    out, log_path = new_run(out)
    torch.manual_seed(cfg.seed)
    began = time.perf_counter()
    good, bad = verdict_ids(base.tokenizer)
    examples = verifier_examples(base.tokenizer, load_split("train", cfg.problems), cfg.wrong_copies, cfg.seed)
    order = random.Random(cfg.seed)
    model = base.hf
    records = train(model, cfg.train, lambda step: order.sample(examples, cfg.batch),
                    lambda batch: verifier_loss(model, batch, good, bad), "verifier", log_path)
    held_out = verifier_examples(base.tokenizer, load_split("dev", 200), cfg.wrong_copies, cfg.seed + 1)
    with torch.no_grad():
        _, figures = verifier_loss(model, held_out, good, bad)
    report = {"config": asdict(cfg), "threads": torch.get_num_threads(), "minutes": (time.perf_counter() - began) / 60,
              "final_loss": sum(r["loss"] for r in records[-20:]) / len(records[-20:]),
              "dev_step_accuracy": figures["step_accuracy"]}
    return finish_run(model, base.source, out, report)
