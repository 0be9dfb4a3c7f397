"""The runtime: a scheduler that batches every request step by step, and the asks that a
strategy's per-sequence loop yields to it."""

from .asks import Fork, Generate, Generated, Logits, Run
from .scheduler import Handle, Request, Scheduler

__all__ = ["Fork", "Generate", "Generated", "Handle", "Logits", "Request", "Run", "Scheduler"]
