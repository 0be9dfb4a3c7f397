"""Strategies: a method's loop for one sequence, batched by the runtime. Registered by name;
each has a typed config."""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from dataclasses import dataclass

from ..decoding.result import GenerationResult
from ..decoding.sampler import SamplingConfig
from ..decoding.stopping import StopConfig
from ..errors import RelaykitError
from ..models.kv import KVPolicy
from ..models.loading import check_same_tokenizer
from ..models.remote import RemoteModel
from ..tuned import Settings

STRATEGIES: dict[str, type["Strategy"]] = {}
EXPERTS = "expert:*"  # a role that stands for every loaded expert model (roles "expert:NAME")


def expert_roles(models: dict) -> list[str]:
    """The roles of the expert models in `models` ("expert:NAME"), in name order."""
    return sorted(role for role in models if role.startswith("expert:") and role != EXPERTS)


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

    Subclasses set `roles` (the models they need), `Config` (a dataclass of their options) and
    write `run(request)`: a generator that extends `request.sequence` until it is finished by
    yielding asks (`relaykit.runtime.asks`) and receiving their answers. The scheduler batches
    the asks of every request; `generate` is a thin user of it.
    """

    name = "?"
    roles: tuple[str, ...] = ("large",)
    Config: type = NoOptions
    in_demo = True  # `relaykit demo` runs it
    one_entry_per_expert = False  # `--strategy NAME` without name=...: one entry per loaded expert
    shipped_models: dict[str, str] = {}  # role -> shipped checkpoint it uses on the shipped pair (e.g. a trained small)
    tunes: tuple[str, ...] = ()  # options `relaykit calibrate settings` measures per pair (a bare name runs them)
    tuning_required = False  # a bare name needs tuned settings: a default rule could lose the answer
    settings: Settings | None = None  # the options it was built with and where they came from (set by the api)

    def __init__(
        self,
        models: dict,
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
        self.eos_token_ids = self.models[self.roles[0]].eos_token_ids
        needed = [r for role in self.needs_logits(self.config) for r in (expert_roles(self.models) if role == EXPERTS else [role])]
        remote = [role for role in needed if isinstance(self.models[role], RemoteModel)]
        if remote:
            runs = ", ".join(n for n, cls in sorted(load_all().items()) if cls.runs_over_endpoints())
            raise RelaykitError(
                f"strategy {self.name!r} needs in-process models: it asks the {' and '.join(remote)} model for "
                f"logits, which an OpenAI-compatible endpoint does not give; over an endpoint these run: {runs}"
            )
        if kv_policy is not None and kv_policy.name != "full" and any(isinstance(m, RemoteModel) for m in self.models.values()):
            raise RelaykitError("KV policies apply to in-process models; a remote engine manages its own cache")
        self._scheduler = None

    @classmethod
    def roles_of(cls, config) -> tuple[str, ...]:
        """The models this strategy needs with `config` (a composite's depend on its inner)."""
        return cls.roles

    @classmethod
    def needs_logits(cls, config) -> tuple[str, ...]:
        """Roles that this strategy, with `config`, asks for logits (they must be in-process)."""
        return cls.roles

    @classmethod
    def runs_over_endpoints(cls) -> bool:
        """Whether the strategy with its default options runs on models behind endpoints."""
        return not cls.needs_logits(cls.Config())

    def holdback(self) -> int | None:
        """How many of its newest tokens a running request may still cut (streaming waits for
        them); None: the output is known only at the end."""
        return 0

    def run(self, request) -> Generator:
        raise NotImplementedError

    @property
    def scheduler(self):
        """This strategy's own scheduler (created on first use) for `generate`."""
        if self._scheduler is None:
            from ..runtime.scheduler import Scheduler

            self._scheduler = Scheduler(self.models, self.kv_policy)
        return self._scheduler

    @property
    def runners(self) -> dict:
        return self.scheduler.runners

    def generate(self, prompts: list[list[int]], stop: StopConfig | None = None) -> list[GenerationResult]:
        """Generate for tokenized prompts, all submitted at once (`stop` overrides the strategy's
        own); with a seed, prompt i samples with seed + i."""
        sampling = self.sampling
        handles = []
        for i, prompt in enumerate(prompts):
            seeded = sampling if sampling.seed is None else dataclasses.replace(sampling, seed=sampling.seed + i)
            handles.append(self.scheduler.submit(prompt, self, seeded, stop or self.stop_config))
        return self.scheduler.run(handles)


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
