"""Train the toy pair (toy-small, toy-large) on the toy world and measure it.

Loss is on solution tokens only (the question is masked), examples are packed into
rows, the learning rate warms up then follows a cosine, and a share of the steps
uses 2,048-token rows holding one long-variant problem so positions past 1,500 are
trained. toy-large then has a second stage in which the long rows are seen with part of their
context hidden, as a compressed KV cache leaves it (`hidden_context`). Data, order and initial weights are drawn from the seed, and training runs under
`torch.use_deterministic_algorithms` (`ToyTrainConfig.deterministic`, on by default), so a rerun on
the same thread count and PyTorch build gives the same weights bit for bit. Without it, torch.compile's multi-threaded reductions on CPU sum in a
varying order, and toy-small's accuracy is sensitive to that.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from relaykit.toyworld.tasks import Problem, load_split, stream
from relaykit.train.loop import TrainConfig, train
from relaykit.toyworld.tokenizer import build_tokenizer, save_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToyModelConfig:
    """Shape of one Llama model of the pair."""

    layers: int
    hidden: int
    heads: int
    intermediate: int


@dataclass(frozen=True)
class ToyTrainConfig:
    """Optimisation of one model; ``steps`` x ``rows`` x ``row_tokens`` is its token budget."""

    steps: int
    rows: int = 8
    row_tokens: int = 512
    long_row_tokens: int = 2048
    long_every: int = 6  # every n-th step packs 2,048-token rows led by a long-variant problem
    drill_share: float = 0.5  # share of product drills ("What is 47 * 6?") in the training stream
    round_share: float = 0.0  # share of the other short problems from the mixed world's round level
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup: int = 100
    weight_decay: float = 0.1
    bf16: bool = False  # bfloat16 autocast: faster only where the CPU has AMX or AVX512-BF16
    compile: bool = True  # torch.compile the forward: 4-7% less time per step on a 2-core AVX2 CPU
    # torch.use_deterministic_algorithms while training: without it the compiled kernels' sums over
    # CPU threads vary in order, and so do the weights from run to run; with it a step costs the same
    deterministic: bool = True
    # Share of the long rows trained with part of their context hidden, the way a compressed KV cache
    # leaves it: each query sees the prompt, its last HIDDEN_WINDOW tokens and HIDDEN_KEPT of the rest.
    hidden_context: float = 0.0
    worded: bool = False  # train on the worded world (each restatement's joint drawn at random)


# Ranges (drawn per row) of the recent window and of the share of older tokens a query sees in a row
# with hidden context: RPC at c = 4 keeps whole recent lines and scattered older tokens.
HIDDEN_WINDOW = (32, 700)
HIDDEN_KEPT = (0.0, 0.5)


@dataclass(frozen=True)
class ToyPairConfig:
    """The two models and their training budgets."""

    # Two heads of 32, not four of 16: with 16-dimensional heads the small model miscopied numbers
    # (RelayGen's answer hand-off lost 6-9 points); with 32 it copies and still fails the products.
    # An MLP of 128 and product drills in 35% of its problems, not 50%: with 50% it memorised 72% of
    # the 540 products (40.5% of the test problems right); with 35%, 27% (12%), and it still copies.
    # Its accuracy is not smooth in the recipe (2,400 steps at 50% gave 84.5%): measure every change.
    small: ToyModelConfig = ToyModelConfig(layers=2, hidden=64, heads=2, intermediate=128)
    # Ten narrow layers, not six of 128: the same cost per training step, but 4.6x the small model's
    # decode time per token at batch 1 instead of 3.2x (a forward at this size is mostly per-layer overhead).
    large: ToyModelConfig = ToyModelConfig(layers=10, hidden=96, heads=3, intermediate=384)
    small_train: ToyTrainConfig = field(default_factory=lambda: ToyTrainConfig(steps=3000, lr=3e-3, drill_share=0.35))
    # Then a second stage (issue 18): 2,000 steps in which 90% of the problems come from the mixed
    # world's round level (chains of round numbers) and none are drills, so that toy-small has an easy
    # level: 97.8% of it on toy:mixed:dev (toy-large 97.2%) while toy:test moves from 12% to 14.5%. With
    # 60% round problems and the usual drills it learnt the whole table instead (34.5% on toy:test).
    small_refine: ToyTrainConfig = field(default_factory=lambda: ToyTrainConfig(
        steps=2000, lr=1e-3, warmup=50, drill_share=0.0, round_share=0.9))
    # Three product drills in four problems: toy-large must learn the 540-entry table (both steps of
    # every chain use it), the rest of each solution is copying. Its loss is near 0.01 by step 1,600.
    large_train: ToyTrainConfig = field(default_factory=lambda: ToyTrainConfig(steps=2200, drill_share=0.75))
    # Then 300 steps with hidden context on every long row (every other step). Trained on full contexts
    # only, toy-large lost 15% of the long problems under RPC at c = 4: with only the recent lines left it
    # miscounted the last check rounds. Song et al. (2025) report about 1 point lost by a real reasoning model.
    # With hidden context on half the long rows, 4% were lost (50 problems); on every long row, none.
    large_refine: ToyTrainConfig = field(default_factory=lambda: ToyTrainConfig(
        steps=300, lr=4e-4, warmup=20, long_every=2, drill_share=0.75, hidden_context=1.0, compile=False))


# The worded pair (issue 20: a pair whose models may disagree and both be right): the shipped pair
# fine-tuned on the worded world, with the drill shares of their first stages and no long rows.
# Both learn the three joints as near-equal choices in these steps: where the small model's joint is
# not the large model's top one, the large model ranks it at most ~1 logit lower, where the digits
# it miscopies are ~10 lower (benchmarks/bench_pair_disagreements.py).
WORDED_LARGE = ToyTrainConfig(steps=200, lr=4e-4, warmup=20, long_every=0, drill_share=0.75, compile=False, worded=True)
WORDED_SMALL = ToyTrainConfig(steps=400, lr=1e-3, warmup=20, long_every=0, drill_share=0.35, compile=False, worded=True)


def build_model(shape: ToyModelConfig, tokenizer) -> LlamaForCausalLM:
    """A fresh Llama model of ``shape`` for the toy tokenizer."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def encode(tokenizer, problem: Problem) -> tuple[list[int], list[int]]:
    """Token ids of prompt + solution + eos, and labels with the prompt masked (-100)."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": problem.question}], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target = tokenizer(problem.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + target, [-100] * len(prompt_ids) + target


class Packer:
    """Packs encoded problems into fixed-length rows (padding at the end of a row); a row may be
    led by one problem of `long` (the long variant)."""

    def __init__(self, tokenizer, short: Iterator[Problem], long: Iterator[Problem] | None = None):
        self.tokenizer = tokenizer
        self.short = short
        self.long = long
        self.pending: tuple[list[int], list[int]] | None = None

    def _next_short(self) -> tuple[list[int], list[int]]:
        item, self.pending = self.pending or encode(self.tokenizer, next(self.short)), None
        return item

    def row(self, length: int, lead_long: bool) -> tuple[list[int], list[int]]:
        ids, labels = encode(self.tokenizer, next(self.long)) if lead_long else ([], [])
        while True:
            item = self._next_short()
            if len(ids) + len(item[0]) > length:
                self.pending = item
                break
            ids, labels = ids + item[0], labels + item[1]
        pad = length - len(ids)
        return ids[:length] + [self.tokenizer.pad_token_id] * pad, labels[:length] + [-100] * pad

    def batch(self, rows: int, length: int, lead_long: bool) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.row(length, lead_long) for _ in range(rows)]
        return torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])


def hidden_context_mask(labels: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """A [rows, 1, T, T] boolean attention mask: causal, and on about ``share`` of the rows each
    query sees only the row's first prompt, a recent window and a random part of the older tokens."""
    rows, length = labels.shape
    distance = torch.arange(length)[:, None] - torch.arange(length)[None]
    masks = (distance >= 0).expand(rows, length, length).clone()
    for row in range(rows):
        if float(torch.rand((), generator=generator)) >= share:
            continue
        window = int(torch.randint(*HIDDEN_WINDOW, (), generator=generator))
        kept = HIDDEN_KEPT[0] + (HIDDEN_KEPT[1] - HIDDEN_KEPT[0]) * float(torch.rand((), generator=generator))
        seen = torch.rand(length, generator=generator) < kept
        seen[: int((labels[row] != -100).nonzero()[0])] = True
        masks[row] &= seen | (distance < window)
    return masks[:, None]


def _compiled(model: LlamaForCausalLM):
    """``torch.compile(model)``, or the model itself on a CPU without a C++ compiler (Inductor's
    CPU backend needs one)."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    if on_cpu and not any(shutil.which(c) for c in (os.environ.get("CXX"), "g++", "clang++") if c):
        log.warning("no C++ compiler found: training without torch.compile (a few percent slower)")
        return model
    return torch.compile(model)


def train_model(model: LlamaForCausalLM, tokenizer, cfg: ToyTrainConfig, seed: int, name: str) -> float:
    """Train ``model`` in place on the toy training stream with `relaykit.train`'s loop; returns
    the mean loss of the last 50 steps."""
    torch.manual_seed(seed)
    short = stream("train", seed, drill_share=cfg.drill_share, round_share=cfg.round_share, worded=cfg.worded)
    packer = Packer(tokenizer, short, stream("train", seed, long=True, worded=cfg.worded))
    long_rows = max(1, cfg.rows * cfg.row_tokens // cfg.long_row_tokens)
    device = next(model.parameters()).device
    forward = _compiled(model) if cfg.compile else model
    generator = torch.Generator().manual_seed(seed)  # hidden-context masks

    def batch_at(step: int):
        lead_long = cfg.long_every > 0 and step % cfg.long_every == cfg.long_every - 1
        if lead_long:
            ids, labels = packer.batch(long_rows, cfg.long_row_tokens, lead_long=True)
        else:
            ids, labels = packer.batch(cfg.rows, cfg.row_tokens, lead_long=False)
        hidden = lead_long and cfg.hidden_context > 0
        mask = hidden_context_mask(labels, cfg.hidden_context, generator).to(device) if hidden else None
        return ids.to(device), labels.to(device), mask

    def loss_of(batch):
        ids, labels, mask = batch
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            return forward(input_ids=ids, labels=labels, attention_mask=mask).loss, {}

    loop = TrainConfig(steps=cfg.steps, lr=cfg.lr, min_lr_ratio=cfg.min_lr_ratio, warmup=cfg.warmup,
                       weight_decay=cfg.weight_decay, deterministic=cfg.deterministic, log_every=50)
    records = train(model, loop, batch_at, loss_of, name)
    return sum(r["loss"] for r in records[-50:]) / len(records[-50:])


def save_checkpoint(model: LlamaForCausalLM, tokenizer, folder: Path) -> None:
    """Write an ordinary HF checkpoint folder (safetensors, tokenizer, generation config)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=256,
    )
    model.save_pretrained(str(folder), safe_serialization=True)
    save_tokenizer(tokenizer, folder)


def _load(model_dir: str | Path):
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    return model, tokenizer


@torch.no_grad()
def teacher_forced(model, tokenizer, problems: list[Problem], batch: int = 32) -> tuple[float, float]:
    """(share of problems whose whole solution is top-1 under teacher forcing, share of
    solution tokens whose top-1 prediction differs from the reference)."""
    exact, wrong, total = 0, 0, 0
    for start in range(0, len(problems), batch):
        encoded = [encode(tokenizer, p) for p in problems[start : start + batch]]
        width = max(len(ids) for ids, _ in encoded)
        ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i, _ in encoded])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in encoded])
        predicted = model(input_ids=ids).logits[:, :-1].argmax(-1)
        target = labels[:, 1:].clone()
        target[target == tokenizer.eos_token_id] = -100  # solution tokens only
        mask = target != -100
        miss = (predicted != target) & mask
        exact += int((miss.sum(1) == 0).sum())
        wrong += int(miss.sum())
        total += int(mask.sum())
    return exact / len(problems), wrong / total


def evaluate(model_dir: str | Path, n: int = 200, long: bool = False) -> float:
    """Greedy accuracy of a checkpoint on the first ``n`` toy test problems (or their long
    variant), measured by relaykit's evaluation harness."""
    from relaykit import api
    from relaykit.decoding.stopping import StopConfig

    models = api.load_models({"large": str(model_dir)})
    strategy = api.build_strategy("single", models, stop=StopConfig(max_new_tokens=2400 if long else 320))
    results, _ = api.evaluate_strategies({"single": strategy}, "toy:long:test" if long else "toy:test", limit=n, batch_size=16)
    return results["strategies"]["single"]["accuracy"]


@torch.no_grad()
def decode_speed(model_dir: str | Path, new_tokens: int = 200) -> float:
    """Tokens per second of greedy HF generate at batch 1 (forced to ``new_tokens``)."""
    model, tokenizer = _load(model_dir)
    problem = load_split("test", 1)[0]
    ids = tokenizer.apply_chat_template([{"role": "user", "content": problem.question}], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    kwargs = dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    model.generate(ids, max_new_tokens=8, do_sample=False)  # warm-up
    start = time.perf_counter()
    model.generate(ids, **kwargs)
    return new_tokens / (time.perf_counter() - start)


def measure(small_dir: str | Path, large_dir: str | Path, n: int = 200, n_long: int = 30) -> dict:
    """The pair's properties: accuracies, parameter ratio, decode-speed ratio, hard-token share."""
    torch.set_num_threads(1)
    small, tokenizer = _load(small_dir)
    large, _ = _load(large_dir)
    test = load_split("test", n)
    small_params, large_params = (sum(p.numel() for p in m.parameters()) for m in (small, large))
    exact_small, hard_share = teacher_forced(small, tokenizer, test)
    exact_large, large_miss = teacher_forced(large, tokenizer, test)
    return {
        "accuracy_large": evaluate(large_dir, n),
        "accuracy_small": evaluate(small_dir, n),
        "accuracy_large_long": evaluate(large_dir, n_long, long=True),
        "teacher_forced_exact_large": exact_large,
        "teacher_forced_exact_small": exact_small,
        "params_small": small_params,
        "params_large": large_params,
        "param_ratio": large_params / small_params,
        "decode_speed_ratio": decode_speed(small_dir) / decode_speed(large_dir),
        "hard_token_share": hard_share,
        "large_token_miss_share": large_miss,
    }


def _train_one(name: str, shape: ToyModelConfig | None, stages: list[ToyTrainConfig], seed: int, folder: Path,
               start: str | Path | None = None) -> tuple[float, float]:
    """Build (or load ``start``), train through ``stages`` (stage i draws from seed + i) and save one
    model; returns (final loss, minutes)."""
    random.seed(seed)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    model = build_model(shape, tokenizer) if start is None else _load(start)[0]
    began = time.perf_counter()
    for i, cfg in enumerate(stages):
        loss = train_model(model, tokenizer, cfg, seed + i, name if i == 0 else f"{name} stage {i + 1}")
    save_checkpoint(model, tokenizer, folder)
    return loss, (time.perf_counter() - began) / 60


def train_toy(out_dir: str, seed: int = 0, pair: ToyPairConfig | None = None, measure_n: int = 200,
              refine_large: str | Path | None = None, refine_small: str | Path | None = None) -> dict:
    """Train toy-small then toy-large from ``seed`` into ``out_dir``/toy-small and toy-large, each
    on every CPU thread torch uses (``torch.set_num_threads``). With ``refine_large`` or
    ``refine_small`` (a checkpoint of that model), only that model's second stage runs and nothing
    is measured.

    Returns the training minutes of each model and the pair's measured properties.
    """
    pair = pair or ToyPairConfig()
    out = Path(out_dir)
    report: dict = {"seed": seed, "threads": torch.get_num_threads(), "config": asdict(pair)}
    jobs = {"toy-small": (pair.small, [pair.small_train, pair.small_refine]),
            "toy-large": (pair.large, [pair.large_train, pair.large_refine])}
    start = refine_large or refine_small
    if start:
        # stage 2 alone draws from seed + 1, as it does after stage 1
        name = "toy-large" if refine_large else "toy-small"
        jobs, measure_n = {name: (jobs[name][0], jobs[name][1][1:])}, 0
    for name, (shape, stages) in jobs.items():
        loss, minutes = _train_one(name, shape, stages, seed + (1 if start else 0), out / name, start)
        report[f"{name}_final_loss"], report[f"{name}_train_minutes"] = loss, minutes
        log.info("%s: %.1f min, loss %.4f", name, minutes, loss)
    if measure_n:
        report.update(measure(out / "toy-small", out / "toy-large", n=measure_n))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def train_worded(out_dir: str, large: str | Path, small: str | Path, seed: int = 0) -> dict:
    """Fine-tune a toy pair on the worded world into ``out_dir``/toy-large and toy-small."""
    report: dict = {"seed": seed, "threads": torch.get_num_threads(), "from": {"large": str(large), "small": str(small)},
                    "config": {"large": asdict(WORDED_LARGE), "small": asdict(WORDED_SMALL)}}
    for name, start, cfg in (("toy-large", large, WORDED_LARGE), ("toy-small", small, WORDED_SMALL)):
        loss, minutes = _train_one(f"{name} (worded)", None, [cfg], seed, Path(out_dir) / name, start)
        report[f"{name}_final_loss"], report[f"{name}_train_minutes"] = loss, minutes
    (Path(out_dir) / "report.json").write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    """``python -m relaykit.toyworld.train OUT_DIR [--seed N]``: train and measure the pair."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure-n", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(json.dumps(train_toy(args.out_dir, args.seed, measure_n=args.measure_n), indent=2))


if __name__ == "__main__":
    main()
