"""What FusionRoute is measured against (Xiong et al. 2026 compare with each): one domain expert
alone, logit averaging over every expert, query-level routing (one expert per problem, chosen by a
classifier on the prompt) and model merging (weight averaging; task arithmetic, Ilharco et al. 2023).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from ..errors import RelaykitError
from ..models.merging import merge
from ..runtime.asks import Generate, Logits
from ..vocabulary import BASE, EXPERTS, expert_role, expert_roles
from .base import Strategy, reads, register
from .single import Single


def _named(models: dict, name: str) -> str:
    role = expert_role(name)
    if role not in models:
        loaded = ", ".join(r.split(":", 1)[1] for r in expert_roles(models)) or "none"
        raise RelaykitError(f"no expert {name!r} (loaded experts: {loaded}; --expert NAME=PATH adds one)")
    return role


def _all_experts(models: dict, strategy: str) -> tuple[str, ...]:
    roles = tuple(expert_roles(models))
    if not roles:
        raise RelaykitError(f"strategy {strategy!r} needs expert models (--expert NAME=PATH)")
    return roles


@dataclass
class ExpertConfig:
    name: str = ""  # the expert that writes ("" in `--strategy expert`: every expert, one entry each)


@register("expert")
class ExpertAlone(Single):
    """One domain expert writes everything."""

    roles: tuple[str, ...] = (EXPERTS,)
    Config = ExpertConfig
    in_demo = False
    one_entry_per_expert = True

    def __init__(self, models: dict, config=None, *args, **kwargs):
        name = (config or ExpertConfig()).name
        if not name:
            raise RelaykitError("strategy 'expert' needs name=NAME (expert[name=add]); "
                                "`--strategy expert` runs each expert")
        self.roles = (_named(models, name),)
        super().__init__(models, config, *args, **kwargs)

    @classmethod
    def roles_of(cls, config) -> tuple[str, ...]:
        return (expert_role(config.name),) if config.name else (EXPERTS,)


@register("logit-average")
class LogitAverage(Strategy):
    """Every expert reads every token; the next token comes from the mean of their logits. The
    token is credited to the expert that gave it the highest probability."""

    roles: tuple[str, ...] = (EXPERTS,)
    in_demo = False

    def __init__(self, models: dict, *args, **kwargs):
        self.roles = _all_experts(models, "logit-average")
        super().__init__(models, *args, **kwargs)

    def run(self, request):
        sequence = request.sequence
        while not sequence.finished:
            logits = []
            for role in self.roles:
                logits.append((yield Logits(role, sequence))[-1])
            logits = torch.stack(logits)
            token = request.sample(logits.mean(0))
            sequence.append(token, self.roles[int(logits.log_softmax(-1)[:, token].argmax())])
            request.finish_if_done(sequence)


class Classifier(NamedTuple):
    """A linear prompt classifier over token counts: one row of `weight` [experts, vocabulary]
    and one `bias` per expert, named in `experts`."""

    weight: torch.Tensor
    bias: torch.Tensor
    experts: list[str]
    source: str


@dataclass
class QueryRouteConfig:
    # prompt classifier (safetensors: `weight` [experts, vocabulary], `bias`, expert names in the
    # metadata); "" on the shipped experts: the shipped one (relaykit train fusionroute writes it)
    classifier: str | Classifier = reads("classifier", "")


@register("query-route")
class QueryRoute(Strategy):
    """Query-level routing: a linear classifier on the prompt's token counts picks one expert,
    which writes the whole answer."""

    roles: tuple[str, ...] = (EXPERTS,)
    Config = QueryRouteConfig
    in_demo = False

    def __init__(self, models: dict, config=None, *args, **kwargs):
        config = config or QueryRouteConfig()
        classifier = config.classifier
        if not isinstance(classifier, Classifier):
            raise RelaykitError("query-route needs classifier=PATH, read by relaykit.resolve "
                                "(the shipped experts have one by default)")
        self.weight, self.bias, names = classifier.weight, classifier.bias, classifier.experts
        self.roles = tuple(_named(models, name) for name in names)
        if not self.roles:
            raise RelaykitError(f"{classifier.source} names no experts in its metadata")
        super().__init__(models, config, *args, **kwargs)
        if self.weight.shape != (len(names), len(self.tokenizer)):
            raise RelaykitError(f"{classifier.source}: a weight of shape {tuple(self.weight.shape)} does not fit "
                                f"{len(names)} experts and a vocabulary of {len(self.tokenizer)}")

    @classmethod
    def needs_logits(cls, config) -> tuple[str, ...]:
        return ()

    def choose(self, prompt: list[int]) -> str:
        counts = torch.bincount(torch.tensor(prompt), minlength=self.weight.shape[1]).float()
        return self.roles[int((self.weight @ counts + self.bias).argmax())]

    def run(self, request):
        sequence = request.sequence
        yield Generate(self.choose(sequence.tokens[: sequence.prompt_length]), sequence, request.remaining())


@dataclass
class MergedConfig:
    # average: mean of the experts' weights; task-arithmetic: base + scale x sum of (expert - base)
    method: Literal["average", "task-arithmetic"] = "average"
    scale: float = 1.0  # task arithmetic's lambda (Ilharco et al. 2023 tune it on validation data)

    def __post_init__(self) -> None:
        if self.method not in ("average", "task-arithmetic"):
            raise RelaykitError(f"merged: method must be average or task-arithmetic, got {self.method!r}")


@register("merged")
class Merged(Single):
    """One model merged from the experts' weights (they must share the base's shape) writes
    everything."""

    roles: tuple[str, ...] = (BASE, EXPERTS)
    Config = MergedConfig
    in_demo = False

    def __init__(self, models: dict, config=None, *args, **kwargs):
        config = config or MergedConfig()
        self.roles = (BASE, *_all_experts(models, "merged"))
        super().__init__(models, config, *args, **kwargs)
        self.models = {"merged": merge([models[r] for r in self.roles[1:]], models[BASE], config.method, config.scale)}
        self.roles = ("merged",)
