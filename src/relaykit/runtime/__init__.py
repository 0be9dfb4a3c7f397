"""The runtime: a session of loaded models whose scheduler batches every request step by step,
and the asks that a strategy's per-sequence loop yields to it."""

from .asks import Fork, Generate, Generated, Logits, Run
from .handle import Handle
from .request import Request
from .scheduler import Scheduler
from .session import Session

__all__ = ["Fork", "Generate", "Generated", "Handle", "Logits", "Request", "Run", "Scheduler", "Session"]
