"""Scoring: a model's log-probabilities at the last positions of a token sequence, asked as a tiny
request of the scheduler, so that it batches with every other request's forward on that model."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import torch

from ..decoding.sampler import SamplingConfig
from ..decoding.stopping import StopConfig
from ..errors import RelaykitError
from .asks import Logits
from .handle import Handle
from .request import Context

# an endpoint returns its most log-probabilities per position for a sampling request
# (`RemoteRunner.logits`); an in-process model gives every row whole either way
SCORING_SAMPLING = SamplingConfig(temperature=1.0)
SCORING_STOP = StopConfig(max_new_tokens=0)


class Scorer:
    """The strategy of one scoring request: one `Logits` ask of `role` for the last `k`
    positions of the request's sequence; it keeps the rows' log-softmax."""

    name = "score"

    def __init__(self, role: str, model, k: int):
        self.roles = (role,)
        self.models = {role: model}
        self.tokenizer = model.tokenizer
        self.eos_token_ids = model.eos_token_ids
        self.k = k
        self.rows: torch.Tensor | None = None

    def holdback(self) -> int | None:
        return None  # it writes nothing to stream

    def run(self, request: Context) -> Generator[Logits, Any, None]:
        logits = yield Logits(self.roles[0], request.sequence, self.k)
        model = self.models[self.roles[0]]
        # an endpoint's rows are its log-probabilities already (-inf past its top tokens)
        self.rows = logits.float().log_softmax(-1) if model.in_process else logits.float()


class Scores(Handle):
    """A submitted scoring request: wait for its rows, or cancel it. Its result (`result()`)
    carries the usage of the scoring forward."""

    def rows(self) -> torch.Tensor:
        """Log-softmax rows [k, V] (float32, on the model's device); row i predicts the token after
        position n - k + i of the n scored tokens."""
        self.result()
        rows = self.request.strategy.rows
        if rows is None:
            raise RelaykitError("the scoring request was cancelled")
        return rows
