"""A difficulty signal for `adaptive`: the small model with a routing head that reads a question and
predicts whether the small model's own greedy answer to it will be right. RouteLLM (Ong et al.
2024) routes queries between a strong and a weak model with a learned predictor of that kind; here
the predictor is the weak model itself, so the signal costs one prefill of the prompt by it.

The labels are one small model's greedy answers on the mixed toy world's training problems, so a
difficulty model goes with the small model it was trained from: retrain it when that one changes.
Sample agreement, `adaptive`'s other signal, fails where the small model's wrong answers are
memorised rather than guessed: its samples then agree on them (benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..answers import answers_match, extract_answer
from ..decoding.prompt import encode_prompt
from ..decoding.stopping import StopConfig
from ..models.loading import Model
from ..models.router import make_router, save_router
from ..runtime.session import Session
from ..strategies.adaptive import ROUTES
from ..strategies.base import get_strategy
from ..toyworld.tasks import load_mixed_split
from .loop import TrainConfig, copy_tokenizer_files, new_run, train
from .sft import pad


@dataclass(frozen=True)
class DifficultyTrainConfig:
    seed: int = 0
    problems: int = 6000  # toy:mixed training problems, labelled by the small model's greedy answers
    held_out: int = 300  # toy:mixed:dev problems, labelled the same way, to report the head's accuracy
    batch: int = 32  # examples per step (and problems per labelling batch)
    max_new_tokens: int = 320  # the small model's budget when labelling
    train: TrainConfig = TrainConfig(steps=1500, lr=1e-3, warmup=20, weight_decay=0.1)


def small_is_right(small: Model, problems: list, prompts: list[list[int]], cfg: DifficultyTrainConfig,
                   what: str) -> list[bool]:
    """Whether the small model's greedy answer to each problem (its prompt encoded) is right
    (batched, with a progress bar)."""
    strategy = get_strategy("small")({"small": small}, stop=StopConfig(max_new_tokens=cfg.max_new_tokens))
    session = Session(strategy.models)
    results = []
    for start in tqdm(range(0, len(prompts), cfg.batch), desc=f"label {what}", unit="batch", mininterval=5):
        results += session.generate(strategy, prompts[start : start + cfg.batch])
    return [answers_match(extract_answer(r.text), p.answer) for r, p in zip(results, problems)]


def routing_logits(model, prompts: list[list[int]]) -> torch.Tensor:
    """The routing head's outputs [B, len(ROUTES)] at each prompt's last token."""
    ids = pad(prompts, 0)
    mask = pad([[1] * len(p) for p in prompts], 0)
    out = model(input_ids=ids, attention_mask=mask).logits
    last = torch.tensor([len(p) - 1 for p in prompts])
    return out[torch.arange(len(prompts)), last, -len(ROUTES) :].float()


def train_difficulty(base: Model, out: str | Path, cfg: DifficultyTrainConfig | None = None) -> dict:
    """Label problems with `base`'s greedy answers, then fine-tune `base` (in place) into a difficulty
    model (a router over `ROUTES`); writes it, `train_log.jsonl` and `report.json` to `out`."""
    cfg = cfg or DifficultyTrainConfig()
    out, log_path = new_run(out)
    torch.manual_seed(cfg.seed)
    began = time.perf_counter()
    problems, held_out = load_mixed_split("train", cfg.problems), load_mixed_split("dev", cfg.held_out)
    prompts, held_prompts = ([encode_prompt(base.tokenizer, p.question) for p in chosen]
                             for chosen in (problems, held_out))
    labels = torch.tensor([0 if right else 1
                           for right in small_is_right(base, problems, prompts, cfg, "training problems")])
    held_labels = torch.tensor([0 if right else 1
                                for right in small_is_right(base, held_out, held_prompts, cfg, "held-out problems")])
    model = base.hf
    make_router(model, list(ROUTES))
    order = random.Random(cfg.seed)

    def batch(step: int):
        picked = order.sample(range(len(prompts)), min(cfg.batch, len(prompts)))
        return [prompts[i] for i in picked], labels[picked]

    def loss_of(batch):
        chosen, wanted = batch
        return F.cross_entropy(routing_logits(model, chosen), wanted), {}

    records = train(model, cfg.train, batch, loss_of, "difficulty", log_path)
    with torch.no_grad():
        predicted = torch.cat([routing_logits(model, held_prompts[i : i + cfg.batch]).argmax(-1)
                               for i in range(0, len(held_prompts), cfg.batch)])
    levels = sorted({p.level for p in problems})
    report = {"config": asdict(cfg), "threads": torch.get_num_threads(), "minutes": (time.perf_counter() - began) / 60,
              "final_loss": sum(r["loss"] for r in records[-20:]) / len(records[-20:]),
              "small_right_train": float((labels == 0).float().mean()),
              "small_right_by_level": {level: sum(int(y) == 0 for p, y in zip(problems, labels) if p.level == level)
                                       / sum(p.level == level for p in problems) for level in levels},
              "held_out_accuracy": float((predicted == held_labels).float().mean()),
              "held_out_small_right": float((held_labels == 0).float().mean())}
    save_router(model, out)
    copy_tokenizer_files(base.source, out)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
