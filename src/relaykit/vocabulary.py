"""The words every layer shares: the roles models play, why a generation ends, what an event
records. String enums, so they compare equal to (and serialise as) their plain text."""

from __future__ import annotations

from enum import Enum

LARGE, SMALL = "large", "small"  # the pair that shares a generation
VERIFIER, PROBER, DIFFICULTY = "verifier", "prober", "difficulty"  # helpers of test-time strategies
ROUTER, BASE = "router", "base"  # FusionRoute's router; the model its experts were fine-tuned from
EXPERT_PREFIX = "expert:"
EXPERTS = "expert:*"  # stands for every loaded expert model (roles "expert:NAME")


def expert_role(name: str) -> str:
    return f"{EXPERT_PREFIX}{name}"


def expert_roles(models: dict) -> list[str]:
    """The roles of the expert models in `models` ("expert:NAME"), in name order."""
    return sorted(role for role in models if role.startswith(EXPERT_PREFIX) and role != EXPERTS)


class FinishReason(str, Enum):
    """Why a sequence stopped growing."""

    STOP = "stop"  # end of sequence, a stop string or a stop token
    LENGTH = "length"  # the token budget
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class EventKind(str, Enum):
    """What a recorded moment of a generation was."""

    CUE = "cue"  # RelayGen: a switch cue hands the sentence to the small model
    SENTENCE_END = "sentence end"
    SEGMENT_END = "segment end"
    REFLECTION = "reflection"
    ANSWER = "answer"  # the thinking ended: the answer's writer takes over
    BUDGET = "budget"  # the thinking budget closed the thinking
    CHECK = "check"  # the large model rejected a small segment
    CALL = "call"  # RelayLLM: the small model calls the large one
    CALL_END = "call end"
    MARGIN = "margin"
    RANDOM = "random"
    ROUTE = "route"
    VOTE = "vote"
    RERANK = "rerank"
    SEARCH = "search"
    ADAPTIVE = "adaptive"
    EARLY_EXIT = "early exit"

    def __str__(self) -> str:
        return self.value
