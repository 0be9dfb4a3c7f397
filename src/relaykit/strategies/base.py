"""Strategies: short loops over runners. Registered by name; each has a typed config."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..decoding.result import GenerationResult, make_result
from ..decoding.sampler import Sampler, SamplingConfig
from ..decoding.sequence import Sequence
from ..decoding.stopping import StopChecker, StopConfig
from ..errors import RelaykitError
from ..models.kv import KVPolicy
from ..models.loading import Model, check_same_tokenizer
from ..models.runner import Runner

STRATEGIES: dict[str, type["Strategy"]] = {}


def register(name: str):
    """Class decorator: make a strategy available under `name`."""

    def wrap(cls):
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return wrap


@dataclass
class NoOptions:
    """This strategy has no options of its own."""


class Strategy:
    """A generation method over named models ("large", "small", ...).

    Subclasses set `roles` (the models they need), `Config` (a dataclass of their options)
    and implement `run(sequences)`, which extends every sequence until it is finished.
    """

    name = "?"
    roles: tuple[str, ...] = ("large",)
    Config: type = NoOptions
    batched = True  # whether several prompts may run in one batch

    def __init__(
        self,
        models: dict[str, Model],
        config=None,
        sampling: SamplingConfig | None = None,
        stop: StopConfig | None = None,
        kv_policy: KVPolicy | None = None,
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
        self.kv_policy = kv_policy
        self.tokenizer = self.models[self.roles[0]].tokenizer
        self.runners = {role: Runner(model, role, self._policy()) for role, model in self.models.items()}

    def _policy(self) -> KVPolicy | None:
        return self.kv_policy.fresh() if self.kv_policy is not None else None

    def generate(self, prompts: list[list[int]], stop: StopConfig | None = None) -> list[GenerationResult]:
        """Generate for a batch of tokenized prompts (`stop` overrides the strategy's own)."""
        self.sampler = Sampler(self.sampling)
        eos = self.models[self.roles[0]].eos_token_ids
        self.stop = StopChecker(stop or self.stop_config, self.tokenizer, eos)
        for runner in self.runners.values():
            runner.reset()
        sequences = [Sequence(p) for p in prompts]
        self.events: dict[int, list[dict]] = {id(s): [] for s in sequences}
        started = time.perf_counter()
        self.run(sequences)
        seconds = time.perf_counter() - started
        return [make_result(s, self.tokenizer, self._usage_of(s), seconds, self.events[id(s)]) for s in sequences]

    def _usage_of(self, sequence: Sequence) -> dict[str, dict]:
        return {role: runner.usage_of(sequence).to_dict() for role, runner in self.runners.items()}

    def run(self, sequences: list[Sequence]) -> None:
        raise NotImplementedError

    def finish_if_done(self, sequence: Sequence, appended: int = 1) -> bool:
        """Apply the stop conditions to the newest tokens; release finished sequences."""
        done = self.stop.check(sequence, appended)
        if done:
            for runner in self.runners.values():
                runner.release(sequence)
        return done


def load_all() -> dict[str, type[Strategy]]:
    """Import every module of this package, so that each strategy registers itself."""
    import importlib
    import pkgutil

    from .. import strategies

    for module in pkgutil.iter_modules(strategies.__path__):
        importlib.import_module(f"{strategies.__name__}.{module.name}")
    return STRATEGIES


def get_strategy(name: str) -> type[Strategy]:
    load_all()

    if name not in STRATEGIES:
        raise RelaykitError(f"unknown strategy {name!r}; available: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]
