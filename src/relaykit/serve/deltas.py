"""Text deltas for streaming: decode the tokens so far incrementally, send only what can no longer
change, and end the text before the first stop string (OpenAI leaves the stop string out)."""

from __future__ import annotations

CONTEXT_TOKENS = 5  # tokens decoded again before new ones, so that spaces and merges come out right


class TextDeltas:
    """Turns a choice's tokens, as they arrive, into the text pieces to send."""

    def __init__(self, tokenizer, stop_strings: list[str]):
        self.tokenizer = tokenizer
        self.stop_strings = stop_strings
        self.hold = max((len(s) for s in stop_strings), default=1) - 1  # a stop string may be forming there
        self.tokens: list[int] = []
        self.decoded = ""  # the text of the first `read` tokens
        self.read = 0
        self.searched = 0  # characters of `decoded` searched for stop strings
        self.stop_at = 0  # where the text ends, once stopped
        self.sent = 0  # characters sent
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the text
        self.cut = ""  # the text left out from the stop string on (its last token may run past it)

    def _decode(self, final: bool = False) -> None:
        """Extend `decoded` with the new tokens' text: the text of the last few read tokens plus
        the new ones, less that of the read ones alone (an incomplete character waits unless `final`)."""
        start = max(0, self.read - CONTEXT_TOKENS)
        before = self.tokenizer.decode(self.tokens[start : self.read], skip_special_tokens=True)
        after = self.tokenizer.decode(self.tokens[start:], skip_special_tokens=True)
        if after.endswith("\ufffd") and not final:
            return
        if after.startswith(before):
            self.decoded += after[len(before) :]
        else:  # a merge changed earlier text: decode it all again
            self.decoded = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        self.read = len(self.tokens)

    def text(self) -> str:
        """The whole text so far, cut before the first stop string (searched for only in the text
        new since the last search, and the few characters before it that a stop string may span)."""
        if not self.stopped:
            start = max(0, self.searched - self.hold)
            found = [(self.decoded.find(s, start), -len(s), s) for s in self.stop_strings]
            cuts = [match for match in found if match[0] >= 0]
            self.searched = len(self.decoded)
            if cuts:
                self.stop_at, _, self.matched = min(cuts)
                self.stopped, self.cut = True, self.decoded[self.stop_at :]
        return self.decoded[: self.stop_at] if self.stopped else self.decoded

    def add(self, tokens: list[int]) -> str:
        """The new text that is safe to send after `tokens`."""
        if self.stopped:
            return ""
        self.tokens += tokens
        self._decode()
        text = self.text()
        end = len(text) if self.stopped else len(text) - self.hold
        return self._send(text, end)

    def finish(self) -> str:
        """Everything not sent yet."""
        if not self.stopped:
            self._decode(final=True)
        text = self.text()
        return self._send(text, len(text))

    def _send(self, text: str, end: int) -> str:
        if end <= self.sent:
            return ""
        piece, self.sent = text[self.sent : end], end
        return piece
