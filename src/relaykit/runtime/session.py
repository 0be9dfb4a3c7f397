"""A session: loaded models, one runner (and KV cache) each, and the scheduler that batches every
request of every strategy over them. The one way to run strategies: the command line, the
evaluation harness, calibration, the trainers and the server all go through it."""

from __future__ import annotations

import dataclasses

from ..decoding.result import GenerationResult
from ..decoding.sampler import SamplingConfig
from ..decoding.sequence import Sequence
from ..decoding.stopping import StopConfig
from ..errors import RelaykitError
from ..models.kv import KVPolicy
from .handle import Handle
from .runners import make_runner
from .scheduler import Scheduler
from .scoring import SCORING_SAMPLING, SCORING_STOP, Scorer, Scores

# tokens of recent finished outputs each strategy's drafters may draft from (SuffixDecoding's global
# tree; vLLM keeps up to 10,000 requests): on in the library, off in the server unless asked
RECENT_TOKENS = 16384


class Session:
    """`Session(models, kv=policy)`: role -> loaded model (in-process or an endpoint); `kv` is
    the KV policy of every in-process model (each runner gets a fresh copy; None: full cache);
    `recent_tokens`: the size of each strategy's cache of recent outputs (0: outputs never cross
    requests)."""

    def __init__(self, models: dict, kv: KVPolicy | None = None, remote_workers: int = 8,
                 recent_tokens: int = RECENT_TOKENS):
        endpoints = [role for role, model in models.items() if not model.in_process]
        if endpoints and kv is not None and kv.name != "full":
            raise RelaykitError("KV policies apply to in-process models; a remote engine manages its own cache")
        self.models = dict(models)
        self.kv = kv
        like = next((model for model in self.models.values() if model.in_process), None)
        runners = {role: make_runner(model, role, kv, like) for role, model in self.models.items()}
        self.scheduler = Scheduler(runners, remote_workers, recent_tokens)

    @property
    def runners(self) -> dict:
        return self.scheduler.runners

    def holds(self, strategy) -> bool:
        """Whether every model `strategy` runs on is this session's model for its role."""
        return all(self.models.get(role) is model for role, model in strategy.models.items())

    def submit(self, strategy, prompt: list[int] | Sequence, sampling: SamplingConfig | None = None,
               stop: StopConfig | None = None) -> Handle:
        """Queue one request (the strategy's own sampling and stop settings unless given); it
        joins at the scheduler's next step. Thread-safe."""
        self._check(strategy)
        return self.scheduler.submit(prompt, strategy, sampling or strategy.sampling, stop or strategy.stop_config)

    def submit_n(self, strategy, prompt: list[int], samplings: list[SamplingConfig],
                 stop: StopConfig | None = None) -> list[Handle]:
        """One request per sampling on one prompt, read once by each model (see `Scheduler.submit_n`)."""
        self._check(strategy)
        return self.scheduler.submit_n(prompt, strategy, samplings, stop or strategy.stop_config)

    def generate(self, strategy, prompts: list[list[int]], stop: StopConfig | None = None) -> list[GenerationResult]:
        """Run `strategy` on tokenized prompts, all submitted at once, and wait for them; with a
        seeded sampling, prompt i samples with seed + i."""
        sampling = strategy.sampling
        handles = []
        for i, prompt in enumerate(prompts):
            seeded = sampling if sampling.seed is None else dataclasses.replace(sampling, seed=sampling.seed + i)
            handles.append(self.submit(strategy, prompt, seeded, stop))
        return [handle.result() for handle in handles]

    def score(self, role: str, tokens: list[int], k: int = 1) -> Scores:
        """Queue a scoring request: `Scores.rows()` gives the log-softmax rows [k, V] (float32, no
        temperature) of the `role` model after each of the last k positions of `tokens`. One
        `Logits` ask on a new sequence, batched with the other requests' forwards: the model reads
        `tokens` whole (under a KV policy, the full-cache model's rows). An endpoint's rows hold
        its log-probabilities of its top tokens and of the tokens that follow, -inf elsewhere.
        Thread-safe."""
        if role not in self.models:
            raise RelaykitError(f"no {role} model in this session to score with")
        if not 1 <= k <= len(tokens):
            raise RelaykitError(f"cannot score the last {k} positions of {len(tokens)} tokens")
        handle = self.scheduler.submit(list(tokens), Scorer(role, self.models[role], k), SCORING_SAMPLING,
                                       SCORING_STOP)
        return Scores(handle.scheduler, handle.request)

    def start(self) -> None:
        """Step in a background thread (for servers)."""
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()

    def _check(self, strategy) -> None:
        for role, model in strategy.models.items():
            if self.models.get(role) is not model:
                raise RelaykitError(f"strategy {strategy.name!r} runs on a {role} model this session does not hold")


def generate(strategy, prompts: list[list[int]], stop: StopConfig | None = None,
             kv: KVPolicy | None = None) -> list[GenerationResult]:
    """`strategy` on `prompts` in a session of its own models (one-off runs, tests, benchmarks)."""
    return Session(strategy.models, kv).generate(strategy, prompts, stop)


def sessions_for(strategies: dict, kv: KVPolicy | None = None) -> dict[str, Session]:
    """label -> the session each strategy runs in: strategies whose models agree on every role
    they share run in one session (one runner, one KV cache per model); a strategy with another
    model for a role (RelayLLM's trained small, a merged model) gets a session of its own."""
    groups: list[dict] = []  # role -> model of each future session
    placed: dict[str, int] = {}
    for label, strategy in strategies.items():
        for index, models in enumerate(groups):
            if all(models.get(role, model) is model for role, model in strategy.models.items()):
                models.update(strategy.models)
                placed[label] = index
                break
        else:
            groups.append(dict(strategy.models))
            placed[label] = len(groups) - 1
    sessions = [Session(models, kv) for models in groups]
    return {label: sessions[index] for label, index in placed.items()}
