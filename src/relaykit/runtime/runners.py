"""What the scheduler asks of a runner: one model with what it has read of each sequence.

An in-process runner (`batched`) answers every waiting ask of a step in one forward; an endpoint
runner answers one ask at a time (a completion or a scoring request) in a worker thread. Both keep
the usage of each sequence and free it on `release`.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ..decoding.sampler import SamplingConfig
from ..decoding.sequence import Sequence
from ..decoding.usage import Usage
from ..models.kv import KVPolicy
from .asks import Generate, Generated, Logits
from .load import Load
from .local_runner import LocalRunner
from .remote_runner import RemoteRunner
from .request import Request


class Runner(Protocol):
    name: str  # the role the model plays: provenance tag of its tokens and key of its usage
    usage: Usage  # everything this model did
    batched: bool  # answers a step's asks in one forward (`score`), else one at a time (`generate`)

    @property
    def kv_bytes(self) -> int: ...

    def refuses(self, ask: Logits | Generate) -> str | None:
        """Why this runner cannot answer `ask` (None: it can)."""

    def refuses_sampling(self, sampling: SamplingConfig) -> str | None: ...

    def prefill(self, sequences: list[Sequence]) -> None: ...

    def fork(self, parent: Sequence, children: list[Sequence]) -> None: ...

    def release(self, sequence: Sequence) -> Usage: ...

    def compact(self) -> None: ...


class BatchedRunner(Runner, Protocol):
    load: Load  # what a forward costs now

    def score(self, sequences: list[Sequence], k: int | list[int]) -> torch.Tensor:
        """Logits [B, K, V] after the last k visible positions of each sequence."""


class ThreadedRunner(Runner, Protocol):
    def answer(self, request: Request, ask: Logits | Generate) -> Generated | torch.Tensor:
        """`Generated` for a `Generate`; logits [k, V] for a `Logits` ask."""


def make_runner(model, role: str, policy: KVPolicy | None = None, like=None) -> BatchedRunner | ThreadedRunner:
    """The runner of a loaded model: in-process with a fresh copy of the KV policy, or an endpoint's
    (whose logits match the in-process model `like` in width and device)."""
    if model.in_process:
        return LocalRunner(model, role, policy.fresh() if policy is not None else None)
    return RemoteRunner(model, role, like)
