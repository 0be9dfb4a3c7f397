"""FusionRoute training (Xiong et al. 2026): domain experts fine-tuned from one base, then a router's
SFT (language-modelling loss + a routing loss on informative tokens) and complemented DPO (CDPO).

On the toy world: the experts are the shipped toy-large fine-tuned on one operation each (`add`,
`sub`: skills toy-large never saw); the router is the shipped toy-small (16x fewer parameters than
an expert) with a routing head. Training data is the domain-expert world's train split (`add`,
`sub` and `mixed` problems, whose two steps need different experts).

The SFT loss reads the fused distribution softmax(router logits + sum_i w_i expert_i logits) with
w = softmax(routing weights): soft routing while training, so the routing head also learns from the
language-modelling loss (and is not left untrained by the "no routing loss" ablation); inference
takes the arg-max expert. The routing loss is the cross-entropy of the routing weights towards the
expert that gives the reference token the highest probability, on the tokens where the experts'
arg-max predictions disagree. CDPO is DPO on the fused log-probabilities with the experts frozen and
each token's expert fixed to the one the SFT router chose, so only the router learns; a routing
term keeps those choices on the informative tokens (CDPO moves the body the routing head reads).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..errors import RelaykitError
from ..models.router import make_router, save_router
from ..toyworld.tasks import EXPERT_DOMAINS, OPERATIONS, expert_stream
from .dpo import dpo_loss
from .loop import TrainConfig, copy_tokenizer_files, save_model, train
from .sft import pad
from .toy.compile import compiled
from .toy.packing import Packer


@dataclass(frozen=True)
class FusionRouteTrainConfig:
    seed: int = 0
    rows: int = 8  # packed rows of `row_tokens` per step (experts and router SFT)
    row_tokens: int = 512
    expert_steps: int = 400  # fine-tuning steps per expert
    expert_lr: float = 5e-4  # a quarter of toy-large's pretraining peak (ours)
    drill_share: float = 0.5  # share of single-step drills in an expert's data (ours)
    router_steps: int = 400  # router SFT steps
    router_lr: float = 2e-3
    # routing loss weight beside the LM loss (ours): at 1 the routing head had learnt nothing after 226
    # steps (the LM loss dominates the shared body's updates); at 10 it routes every informative token
    # right by step 120 of 200
    routing_weight: float = 10.0
    cdpo_questions: int = 512  # training questions sampled for preference pairs
    cdpo_samples: int = 4  # solutions per question (at temperature 1.0)
    # passes over the pairs: with 150 steps over 50 pairs (24 passes) CDPO overfitted and, moving the
    # shared body, broke the routing (99.7% -> 37.9% on toy:domains:test)
    cdpo_epochs: int = 2
    cdpo_lr: float = 2e-4
    cdpo_batch: int = 8  # pairs per step
    beta: float = 0.1  # DPO's KL strength (Rafailov et al. 2023 use 0.1)
    classifier_steps: int = 200  # the query-level routing baseline's prompt classifier


def _packer(tokenizer, domains: tuple[str, ...], seed: int, drill_share: float):
    return Packer(tokenizer, expert_stream("train", seed, domains, drill_share))


def _load(folder: str | Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32),
            AutoTokenizer.from_pretrained(str(folder)))


def train_expert(base: str | Path, domain: str, out: str | Path, cfg: FusionRouteTrainConfig, log_path=None) -> float:
    """Fine-tune the base model on one domain's problems and drills; returns the last 20 steps'
    mean loss. The checkpoint's config records its domain and base."""
    if domain not in OPERATIONS:
        raise RelaykitError(f"no expert domain {domain!r}; choose from {', '.join(OPERATIONS)}")
    torch.manual_seed(cfg.seed)
    model, tokenizer = _load(base)
    packer = _packer(tokenizer, (domain,), cfg.seed, cfg.drill_share)
    forward = compiled(model)

    def batch_at(step):
        return packer.batch(cfg.rows, cfg.row_tokens, lead_long=False)

    def loss_of(batch):
        ids, labels = batch
        return forward(input_ids=ids, labels=labels).loss, {}

    loop = TrainConfig(steps=cfg.expert_steps, lr=cfg.expert_lr, warmup=20, weight_decay=0.1, log_every=20)
    records = train(model, loop, batch_at, loss_of, f"expert {domain}", log_path)
    model.config.relaykit_expert = {"domain": domain, "base": Path(base).name}
    save_model(model, base, out)
    return sum(r["loss"] for r in records[-20:]) / len(records[-20:])


def fuse(router_out: torch.Tensor, expert_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-time fusion: router logits + the routing-weighted sum of the experts' logits.
    `router_out` [..., V + E] (a router's head), `expert_logits` [..., E, V]; returns the fused
    logits [..., V] and the routing weights [..., E]."""
    count = expert_logits.shape[-2]
    weights = router_out[..., -count:]
    mix = (weights.softmax(-1)[..., None] * expert_logits).sum(-2)
    return router_out[..., :-count] + mix, weights


def router_sft_loss(router, experts: list, ids: torch.Tensor, labels: torch.Tensor,
                    routing_weight: float) -> tuple[torch.Tensor, dict]:
    """LM loss on the fused distribution + `routing_weight` x the routing loss on informative
    tokens (the experts' arg-max predictions disagree): cross-entropy towards the expert that gives
    the reference token the highest probability."""
    with torch.no_grad():
        expert_logits = torch.stack([expert(input_ids=ids).logits[:, :-1].float() for expert in experts], -2)
    fused, weights = fuse(router(input_ids=ids).logits[:, :-1].float(), expert_logits)
    target = labels[:, 1:]
    mask = target != -100
    lm = F.cross_entropy(fused[mask], target[mask])
    predicted = expert_logits.argmax(-1)  # [B, T, E]
    informative = (predicted != predicted[..., :1]).any(-1) & mask
    reference = expert_logits.log_softmax(-1).gather(
        -1, target.clamp(min=0)[..., None, None].expand(*target.shape, len(experts), 1))[..., 0]
    best = reference.argmax(-1)
    routing = F.cross_entropy(weights[informative], best[informative]) if informative.any() else lm.new_zeros(())
    routed = ((weights[informative].argmax(-1) == best[informative]).float().mean() if informative.any()
              else lm.new_zeros(()))
    return lm + routing_weight * routing, {"lm": lm.item(), "routing": routing.item(),
                                           "informative": float(informative.sum()), "routed_right": routed.item()}


def train_router(router_base: str | Path, experts: dict[str, str | Path], out: str | Path, cfg: FusionRouteTrainConfig,
                 routing_loss: bool = True, log_path=None) -> float:
    """A router from `router_base` (any causal LM sharing the experts' tokenizer) by SFT on the
    domain-expert world's mixture; returns the last 20 steps' mean loss."""
    torch.manual_seed(cfg.seed)
    router, tokenizer = _load(router_base)
    make_router(router, list(experts))
    frozen = [_load(folder)[0].eval().requires_grad_(False) for folder in experts.values()]
    packer = _packer(tokenizer, EXPERT_DOMAINS, cfg.seed + 1, cfg.drill_share)

    def batch_at(step):
        return packer.batch(cfg.rows, cfg.row_tokens, lead_long=False)

    def loss_of(batch):
        return router_sft_loss(router, frozen, *batch, cfg.routing_weight if routing_loss else 0.0)

    name = "router SFT" + ("" if routing_loss else " (no routing loss)")
    loop = TrainConfig(steps=cfg.router_steps, lr=cfg.router_lr, warmup=20, weight_decay=0.1, log_every=20)
    records = train(router, loop, batch_at, loss_of, name, log_path)
    save_router(router, out)
    copy_tokenizer_files(router_base, out)
    return sum(r["loss"] for r in records[-20:]) / len(records[-20:])


@dataclass
class Pair:
    """A preference pair for one question: token ids (prompt + solution) of a right and a wrong
    sampled solution, and per solution token the expert that wrote it (the SFT router's choice)."""

    chosen: list[int]
    rejected: list[int]
    prompt_length: int
    chosen_experts: list[int]
    rejected_experts: list[int]


def sample_pairs(router_dir: str | Path, experts: dict[str, str | Path],
                 cfg: FusionRouteTrainConfig) -> tuple[list[Pair], dict]:
    """Solutions of training questions sampled by `fusionroute` (temperature 1.0) on the
    scheduler; per question, right and wrong ones are paired."""
    from .. import api
    from ..answers import answers_match, extract_answer
    from ..decoding.prompt import encode_prompt
    from ..runtime.session import Session
    from ..toyworld.tasks import _take
    from ..vocabulary import EXPERTS

    models = api.load_models({"router": str(router_dir), EXPERTS: {k: str(v) for k, v in experts.items()}})
    sampling, stop = api.sampling_and_stop(temperature=1.0, seed=cfg.seed, max_new_tokens=320)
    strategy = api.build_strategy("fusionroute", models, sampling=sampling, stop=stop)
    questions = _take(expert_stream("train", cfg.seed + 2), cfg.cdpo_questions)
    prompts = [encode_prompt(strategy.tokenizer, q.question) for q in questions for _ in range(cfg.cdpo_samples)]
    results = Session(strategy.models).generate(strategy, prompts)
    index = {role: i for i, role in enumerate(strategy.experts)}
    pairs, right = [], 0
    for q, question in enumerate(questions):
        mine = results[q * cfg.cdpo_samples : (q + 1) * cfg.cdpo_samples]
        good = [r for r in mine if answers_match(extract_answer(r.text), question.answer)]
        bad = [r for r in mine if r not in good]
        right += len(good)
        prompt = prompts[q * cfg.cdpo_samples]
        for chosen, rejected in zip(good, bad):
            pairs.append(Pair(prompt + chosen.token_ids, prompt + rejected.token_ids, len(prompt),
                              [index[w] for w in chosen.provenance], [index[w] for w in rejected.provenance]))
    return pairs, {"sampled": len(results), "sampled_right": right / max(len(results), 1), "pairs": len(pairs)}


@torch.no_grad()
def _expert_view(frozen: list, ids: list[int], start: int, chosen: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """At each solution token: the logits of the expert that wrote it [L, V], and whether the
    experts' arg-max predictions disagree there (an informative token) [L]."""
    tokens = torch.tensor([ids])
    logits = torch.stack([expert(input_ids=tokens).logits[0, start - 1 : len(ids) - 1].float() for expert in frozen])
    predicted = logits.argmax(-1)
    return logits[torch.tensor(chosen), torch.arange(len(chosen))], (predicted != predicted[:1]).any(0)


def router_outputs(router, sequences: list[list[int]]) -> torch.Tensor:
    """The router's head over right-padded sequences: [B, T, V + E]."""
    return router(input_ids=pad(sequences, 0)).logits.float()


def fused_logprobs(out: torch.Tensor, sequences: list[list[int]], starts: list[int],
                   expert_logits: list[torch.Tensor]) -> torch.Tensor:
    """Summed log-probability of each sequence's solution under softmax(the chosen expert's logits
    + the router's logits), from the router's outputs `out`: the CDPO policy (gradients reach only
    the router)."""
    totals = []
    for row, (ids, start, experts) in enumerate(zip(sequences, starts, expert_logits)):
        vocab = experts.shape[-1]
        fused = (out[row, start - 1 : len(ids) - 1, :vocab] + experts).log_softmax(-1)
        totals.append(fused.gather(-1, torch.tensor(ids[start:])[:, None]).sum())
    return torch.stack(totals)


def kept_routing_loss(out: torch.Tensor, sequences: list[list[int]], starts: list[int], routes: list[torch.Tensor],
                      informative: list[torch.Tensor], count: int) -> torch.Tensor:
    """Cross-entropy of the routing weights (the last `count` outputs) towards the experts the SFT
    router chose, on the informative tokens: CDPO moves the router's body, which the routing head
    reads."""
    weights = torch.cat([out[row, start - 1 : len(ids) - 1, -count:][mask]
                         for row, (ids, start, mask) in enumerate(zip(sequences, starts, informative))])
    targets = torch.cat([route[mask] for route, mask in zip(routes, informative)])
    return F.cross_entropy(weights, targets) if len(targets) else out.new_zeros(())


@dataclass
class Prepared:
    """A pair with what CDPO needs of the frozen experts and the SFT router (chosen, rejected)."""

    sequences: tuple[list[int], list[int]]
    start: int
    expert_logits: tuple[torch.Tensor, torch.Tensor]
    routes: tuple[torch.Tensor, torch.Tensor]
    informative: tuple[torch.Tensor, torch.Tensor]
    reference: torch.Tensor  # [2]: the SFT router's fused log-probabilities


def train_cdpo(router_dir: str | Path, experts: dict[str, str | Path], out: str | Path, cfg: FusionRouteTrainConfig,
               routing_weight: float, log_path=None) -> dict:
    """Complemented DPO from an SFT router: pairs sampled from it, experts frozen, the reference is
    the SFT router itself; `routing_weight` x `kept_routing_loss` keeps its routing."""
    from ..models.loading import load_model

    pairs, report = sample_pairs(router_dir, experts, cfg)
    if not pairs:
        raise RelaykitError("CDPO found no question with both a right and a wrong sampled solution")
    frozen = [_load(folder)[0].eval().requires_grad_(False) for folder in experts.values()]
    router = load_model(str(router_dir)).hf.train().requires_grad_(True)
    reference = load_model(str(router_dir)).hf.eval().requires_grad_(False)
    prepared = []
    for pair in pairs:
        views = [_expert_view(frozen, ids, pair.prompt_length, chosen)
                 for ids, chosen in ((pair.chosen, pair.chosen_experts), (pair.rejected, pair.rejected_experts))]
        sequences = (pair.chosen, pair.rejected)
        with torch.no_grad():
            ref = fused_logprobs(router_outputs(reference, list(sequences)), list(sequences), [pair.prompt_length] * 2,
                                 [v[0] for v in views])
        prepared.append(Prepared(sequences, pair.prompt_length, (views[0][0], views[1][0]),
                                 (torch.tensor(pair.chosen_experts), torch.tensor(pair.rejected_experts)),
                                 (views[0][1], views[1][1]), ref))
    order = random.Random(cfg.seed).sample(range(len(prepared)), len(prepared))
    steps = max(1, cfg.cdpo_epochs * len(prepared) // cfg.cdpo_batch)

    def batch_at(step):
        return [prepared[order[(step * cfg.cdpo_batch + i) % len(order)]] for i in range(cfg.cdpo_batch)]

    def loss_of(batch):
        sequences = [p.sequences[0] for p in batch] + [p.sequences[1] for p in batch]
        starts = [p.start for p in batch] * 2
        outputs = router_outputs(router, sequences)
        policy = fused_logprobs(outputs, sequences, starts,
                                [p.expert_logits[0] for p in batch] + [p.expert_logits[1] for p in batch])
        ref = torch.stack([p.reference for p in batch])
        n = len(batch)
        preference = dpo_loss(policy[:n], policy[n:], ref[:, 0], ref[:, 1], cfg.beta)
        routing = kept_routing_loss(outputs, sequences, starts,
                                    [p.routes[0] for p in batch] + [p.routes[1] for p in batch],
                                    [p.informative[0] for p in batch] + [p.informative[1] for p in batch], len(experts))
        won = ((policy[:n] - ref[:, 0]) > (policy[n:] - ref[:, 1])).float().mean()
        return preference + routing_weight * routing, {"dpo": preference.item(), "routing": routing.item(),
                                                       "reward_accuracy": won.item()}

    loop = TrainConfig(steps=steps, lr=cfg.cdpo_lr, warmup=max(1, steps // 10), log_every=5)
    records = train(router, loop, batch_at, loss_of, "router CDPO", log_path)
    save_router(router, out)
    copy_tokenizer_files(router_dir, out)
    report.update(cdpo_steps=steps, cdpo_final_dpo_loss=sum(r["dpo"] for r in records[-5:]) / len(records[-5:]))
    return report


def train_query_classifier(tokenizer, names: list[str], out: str | Path, cfg: FusionRouteTrainConfig) -> float:
    """The query-level routing baseline's classifier: a linear map from the prompt's token counts
    to the expert of its domain, trained on single-domain training questions; returns its
    accuracy on them."""
    from ..decoding.prompt import encode_prompt
    from ..toyworld.tasks import _take

    torch.manual_seed(cfg.seed)
    questions = _take(expert_stream("train", cfg.seed + 3, tuple(names)), 2000)
    counts = torch.stack([torch.bincount(torch.tensor(encode_prompt(tokenizer, q.question)),
                                         minlength=len(tokenizer)).float()
                          for q in questions])
    labels = torch.tensor([names.index(q.domain) for q in questions])
    linear = torch.nn.Linear(len(tokenizer), len(names))
    optimizer = torch.optim.Adam(linear.parameters(), lr=0.05)
    for _ in range(cfg.classifier_steps):
        loss = F.cross_entropy(linear(counts), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_file({"weight": linear.weight.detach().contiguous(), "bias": linear.bias.detach().contiguous()}, str(out),
              metadata={"experts": ",".join(names)})
    return float((linear(counts).argmax(-1) == labels).float().mean())


def train_fusionroute(out_dir: str | Path, cfg: FusionRouteTrainConfig, base: str | Path, router_base: str | Path,
                      resume: bool = False) -> dict:
    """Everything FusionRoute ships, into `out_dir`: expert-NAME per domain, router-sft (SFT),
    router (SFT + CDPO), router-no-routing-loss (the ablation's SFT + CDPO), the query classifier
    and report.json (minutes and figures of every stage). With `resume`, a stage whose output
    exists is not run again (and has no minutes in the report)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "train_log.jsonl"
    report: dict = {"config": asdict(cfg), "threads": torch.get_num_threads()}
    began = time.perf_counter()

    def stage(name, output: Path, work):
        if resume and output.exists():
            report[name] = "reused"
            return
        started = time.perf_counter()
        report[name] = work()
        report[f"{name}_minutes"] = (time.perf_counter() - started) / 60

    experts = {domain: out / f"expert-{domain}" for domain in OPERATIONS}
    for domain, folder in experts.items():
        stage(f"expert_{domain}_loss", folder,
              lambda domain=domain, folder=folder: train_expert(base, domain, folder, cfg, log))
    stage("router_sft_loss", out / "router-sft",
          lambda: train_router(router_base, experts, out / "router-sft", cfg, True, log))
    stage("router_cdpo", out / "router",
          lambda: train_cdpo(out / "router-sft", experts, out / "router", cfg, cfg.routing_weight, log))
    ablation = out / "router-no-routing-loss-sft"
    stage("ablation_sft_loss", ablation, lambda: train_router(router_base, experts, ablation, cfg, False, log))
    stage("ablation_cdpo", out / "router-no-routing-loss",
          lambda: train_cdpo(ablation, experts, out / "router-no-routing-loss", cfg, 0.0, log))
    classifier = out / "query-classifier.safetensors"
    stage("query_classifier_accuracy", classifier,
          lambda: train_query_classifier(_load(router_base)[1], list(experts), classifier, cfg))
    report["minutes"] = (time.perf_counter() - began) / 60
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
