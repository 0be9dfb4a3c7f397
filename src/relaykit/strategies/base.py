"""Strategies: a method's loop for one sequence, batched by the runtime. Registered by name;
each has a typed config."""

from __future__ import annotations

import sys
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from ..decoding.result import GenerationResult
from ..decoding.sampler import SamplingConfig
from ..decoding.stopping import StopConfig
from ..errors import RelaykitError
from ..models.loading import check_same_tokenizer
from ..options import config_from_dict, options_from_text, split_variant
from ..registry import import_all, registrar
from ..runtime.asks import Ask
from ..runtime.request import Context
from ..tuned import Settings
from ..vocabulary import EXPERTS, LARGE, expert_roles

STRATEGIES: dict[str, type] = {}
register = registrar(STRATEGIES)  # @register(name): a strategy by that name


def reads(kind: str, default: Any) -> Any:
    """A config field that names something read before the strategy is built (`relaykit.resolve`):
    "strategy" (an inner NAME[...]), "cues", "thresholds", "classifier" or "model" (a checkpoint)."""
    return field(default=default, metadata={"reads": kind})


@dataclass
class NoOptions:
    """This strategy has no options of its own."""


class Strategy:
    """A generation method over named models ("large", "small", ...).

    Subclasses set `roles` (the models they need), `Config` (a dataclass of their options) and
    write `run(request)`: a generator that extends `request.sequence` until it is finished by
    yielding asks (`relaykit.runtime.asks`) and receiving their answers. A `Session`'s scheduler
    batches the asks of every request. A strategy does no I/O: files its options name are read
    before it is built (`relaykit.resolve`).
    """

    name = "?"
    roles: tuple[str, ...] = (LARGE,)
    Config: type = NoOptions
    in_demo = True  # `relaykit demo` runs it
    one_entry_per_expert = False  # `--strategy NAME` without name=...: one entry per loaded expert
    tunes: tuple[str, ...] = ()  # options `relaykit calibrate settings` measures per pair (a bare name runs them)
    tuning_required = False  # a bare name needs tuned settings: a default rule could lose the answer
    settings: Settings | None = None  # the options it was built with and where they came from (set by the api)

    def __init__(
        self,
        models: dict,
        config=None,
        sampling: SamplingConfig | None = None,
        stop: StopConfig | None = None,
    ):
        missing = [r for r in self.roles if r not in models]
        if missing:
            raise RelaykitError(f"strategy {self.name!r} needs a {' and a '.join(missing)} model")
        for role in self.roles[1:]:
            check_same_tokenizer(models[self.roles[0]], models[role])
        self.models = {role: models[role] for role in self.roles}
        self.config = config if config is not None else self.Config()
        self.sampling = sampling or SamplingConfig()
        self.stop_config = stop or StopConfig()
        self.tokenizer = self.models[self.roles[0]].tokenizer
        self.eos_token_ids = self.models[self.roles[0]].eos_token_ids
        refusal = self.logits_refusal(self.config, self.models)
        if refusal:
            raise RelaykitError(refusal)

    @classmethod
    def logits_refusal(cls, config, models: dict) -> str | None:
        """Why `models` cannot give the logits this strategy asks for with `config` (None: they
        can): an endpoint where it reads a whole distribution, or one that scores no tokens
        (probed here; an endpoint that does not answer raises)."""
        def expand(roles) -> list[str]:  # EXPERTS: every expert loaded
            return [r for role in roles for r in (expert_roles(models) if role == EXPERTS else [role])]

        needed = [role for role in expand(cls.needs_logits(config)) if role in models]
        whole = set(expand(cls.needs_whole_distribution(config)))
        for role in needed:
            if role in whole and not models[role].in_process:
                return (f"strategy {cls.name!r} reads the {role} model's whole next-token distribution, which an "
                        "endpoint gives only as its top log-probabilities: load it in-process")
        refusals = [refusal for role in needed if (refusal := models[role].scoring_refusal())]
        if refusals:
            runs = ", ".join(n for n, other in sorted(load_all().items()) if other.runs_over_endpoints())
            return f"strategy {cls.name!r} asks for logits, but {refusals[0]}; over any endpoint these run: {runs}"
        return None

    @classmethod
    def roles_of(cls, config) -> tuple[str, ...]:
        """The models this strategy needs with `config` (a composite's depend on its inner)."""
        return cls.roles

    @classmethod
    def needs_logits(cls, config) -> tuple[str, ...]:
        """Roles that this strategy, with `config`, asks for logits (in-process models, or endpoints
        whose API scores tokens)."""
        return cls.roles

    @classmethod
    def needs_whole_distribution(cls, config) -> tuple[str, ...]:
        """Roles whose whole next-token distribution this strategy reads (mixes, or reads at tokens
        of its choosing), which an endpoint's top log-probabilities do not give; a strategy that
        reads only the top tokens and the tokens that follow says which roles it reads so."""
        return cls.needs_logits(config)

    @classmethod
    def runs_over_endpoints(cls) -> bool:
        """Whether the strategy with its default options runs on any endpoint (text only)."""
        return not cls.needs_logits(cls.Config())

    def holdback(self) -> int | None:
        """How many of its newest tokens a running request may still cut (streaming waits for
        them); None: the output is known only at the end."""
        return 0

    def run(self, request: Context) -> Generator[Ask, Any, GenerationResult | None]:
        """The method's loop for one sequence: yields asks, receives their answers, and returns
        None (the request's sequence is the output) or a child's `GenerationResult`."""
        raise NotImplementedError


def load_all() -> dict[str, type[Strategy]]:
    """Every strategy, by name (each module of this package registers its own)."""
    import_all(sys.modules[__package__])
    return STRATEGIES


def get_strategy(name: str) -> type[Strategy]:
    load_all()
    if name not in STRATEGIES:
        raise RelaykitError(f"unknown strategy {name!r}; available: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]


class Variant(str):
    """A composite's inner strategy as written (`NAME[option=value ...]`), with its class and its
    options read (files included). It compares, prints and serialises as its text."""

    cls: type[Strategy]
    config: Any

    def __new__(cls, text: str, strategy: type[Strategy], config: Any) -> "Variant":
        variant = super().__new__(cls, text.strip())
        variant.cls, variant.config = strategy, config
        return variant

    def __reduce__(self):
        return Variant, (str(self), self.cls, self.config)

    def build(self, models: dict, sampling: SamplingConfig | None = None, stop: StopConfig | None = None) -> Strategy:
        return self.cls(models, self.config, sampling, stop)


def parse_variant(text: str) -> tuple[type[Strategy], dict]:
    """`relaygen[cues=none speculative=4]` -> (the relaygen class, {"cues": "none", "speculative": 4})."""
    name, options = split_variant(text)
    cls = get_strategy(name)
    return cls, options_from_text(cls, options) if options is not None else {}


def variant_of(spec: str | Variant) -> Variant:
    """A composite's inner strategy: as written (`NAME[...]`), or as the resolver read it."""
    if isinstance(spec, Variant):
        return spec
    cls, options = parse_variant(spec)
    return Variant(spec, cls, config_from_dict(cls, options))
