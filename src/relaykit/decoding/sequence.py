"""A token sequence shared by several models, with per-token provenance and visibility."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from ..vocabulary import FinishReason

PROMPT = "prompt"
_uids = itertools.count()


class Sequence:
    """Token ids, which model wrote each one (provenance), and tokens hidden from some models.

    A sequence only grows at the end or is truncated; runners rely on this to catch up
    incrementally and to roll back their KV cache automatically after a truncation. `uid` is
    unique in the process and stable; runners key their rows by it. Tokens before `final` have
    been streamed to a client and may no longer be truncated.
    """

    def __init__(self, prompt_ids: Iterable[int], hidden_from: Iterable[str] = ()):
        self.uid = next(_uids)
        self.tokens: list[int] = [int(t) for t in prompt_ids]
        if not self.tokens:
            raise ValueError("a sequence needs at least one prompt token")
        self.writers: list[str] = [PROMPT] * len(self.tokens)
        hidden = frozenset(hidden_from)
        self.hidden: list[frozenset[str]] = [hidden] * len(self.tokens)
        self.prompt_length = len(self.tokens)
        self.final = self.prompt_length
        self.truncations: list[int] = []  # lengths cut back to, in order; runners replay these
        self.finished = False
        self.finish_reason: FinishReason | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def append(self, token: int, writer: str, hidden_from: Iterable[str] = ()) -> None:
        self.tokens.append(int(token))
        self.writers.append(writer)
        self.hidden.append(frozenset(hidden_from))

    def extend(self, tokens: Iterable[int], writer: str, hidden_from: Iterable[str] = ()) -> None:
        for token in tokens:
            self.append(token, writer, hidden_from)

    def hide(self, start: int, end: int, model: str) -> None:
        """Hide tokens [start, end) from `model`; only tokens it has not read yet (runners catch
        up on visibility as they read)."""
        for index in range(start, end):
            self.hidden[index] = self.hidden[index] | {model}

    def truncate(self, length: int) -> None:
        """Keep the first `length` tokens (never fewer than the prompt or the streamed tokens)."""
        if length < self.final:
            raise ValueError(f"cannot truncate to {length} tokens: the first {self.final} are final")
        if length >= len(self.tokens):
            return
        self.truncations.append(length)
        del self.tokens[length:], self.writers[length:], self.hidden[length:]

    def fork(self) -> "Sequence":
        """A new sequence (new uid) with the same tokens; it grows on its own from here. Runners
        that have read this sequence copy its KV row instead of reading the tokens again."""
        child = object.__new__(Sequence)
        child.__dict__.update(self.__dict__)
        child.uid = next(_uids)
        child.tokens, child.writers, child.hidden = list(self.tokens), list(self.writers), list(self.hidden)
        child.truncations = []
        return child

    def visible_to(self, model: str, start: int = 0) -> list[int]:
        """Tokens from index `start` on that `model` may read."""
        return [t for t, h in zip(self.tokens[start:], self.hidden[start:]) if model not in h]

    def is_visible(self, index: int, model: str) -> bool:
        return model not in self.hidden[index]

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.prompt_length :]

    @property
    def generated_writers(self) -> list[str]:
        return self.writers[self.prompt_length :]

    def finish(self, reason: FinishReason) -> None:
        self.finished = True
        self.finish_reason = reason

    def reopen(self) -> None:
        """Undo `finish`: a strategy cut back the tokens that finished the sequence."""
        self.finished, self.finish_reason = False, None
