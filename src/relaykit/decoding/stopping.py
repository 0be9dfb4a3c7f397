"""When a generation stops: stop token ids, stop strings, a token budget."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..vocabulary import FinishReason
from .sequence import Sequence


@dataclass
class StopConfig:
    max_new_tokens: int = 256
    stop_strings: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)  # the tokenizer's eos is added
    ignore_eos: bool = False  # run to max_new_tokens (benchmarks)


class StopChecker:
    """Checks a sequence after each appended token; finishes it when a condition is met."""

    def __init__(self, config: StopConfig, tokenizer, eos_token_ids: list[int]):
        self.config = config
        self.tokenizer = tokenizer
        self.stop_ids = set(config.stop_token_ids) | (set() if config.ignore_eos else set(eos_token_ids))
        self.stop_strings = [s for s in config.stop_strings if s]
        # enough tokens to contain the longest stop string, whatever the tokenization
        self.tail_tokens = 2 * max((len(s) for s in self.stop_strings), default=0) + 4

    def remaining(self, seq: Sequence) -> int:
        return self.config.max_new_tokens - (len(seq) - seq.prompt_length)

    def check(self, seq: Sequence, count: int = 1) -> bool:
        """Check the last `count` appended tokens in order; at the first that ends the generation,
        cut the sequence after it, mark it finished and return True."""
        for end in range(len(seq) - count + 1, len(seq) + 1):
            reason = self._reason(seq, end)
            if reason:
                seq.truncate(end)
                seq.finish(reason)
                return True
        return False

    def _reason(self, seq: Sequence, end: int) -> FinishReason | None:
        if end > seq.prompt_length and seq.tokens[end - 1] in self.stop_ids:
            return FinishReason.STOP
        if self.stop_strings and self._ends_with_stop_string(seq, end):
            return FinishReason.STOP
        if end - seq.prompt_length >= self.config.max_new_tokens:
            return FinishReason.LENGTH
        return None

    def _ends_with_stop_string(self, seq: Sequence, end: int) -> bool:
        tail = seq.tokens[max(seq.prompt_length, end - self.tail_tokens) : end]
        text = self.tokenizer.decode(tail, skip_special_tokens=False)
        # only a stop string completed by the newest token counts, so it is reported once
        previous = self.tokenizer.decode(tail[:-1], skip_special_tokens=False)
        return any(s in text and s not in previous for s in self.stop_strings)
