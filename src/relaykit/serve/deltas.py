"""Text deltas for streaming: decode the tokens so far, send only what can no longer change, and
end the text before the first stop string (OpenAI leaves the stop string out)."""

from __future__ import annotations


class TextDeltas:
    """Turns a choice's tokens, as they arrive, into the text pieces to send."""

    def __init__(self, tokenizer, stop_strings: list[str]):
        self.tokenizer = tokenizer
        self.stop_strings = stop_strings
        self.hold = max((len(s) for s in stop_strings), default=1) - 1  # a stop string may be forming there
        self.tokens: list[int] = []
        self.sent = 0  # characters sent
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the text
        self.cut = ""  # the text left out from the stop string on (its last token may run past it)

    def text(self) -> str:
        """The whole text so far, cut before the first stop string."""
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cuts = [(text.find(s), -len(s), s) for s in self.stop_strings if s in text]
        if cuts:
            cut, _, self.matched = min(cuts)
            self.stopped, self.cut = True, text[cut:]
            return text[:cut]
        return text

    def add(self, tokens: list[int]) -> str:
        """The new text that is safe to send after `tokens`."""
        if self.stopped:
            return ""
        self.tokens += tokens
        text = self.text()
        end = len(text) if self.stopped else len(text) - self.hold
        if not self.stopped and text.endswith("\ufffd"):  # an incomplete multi-byte character
            end = min(end, len(text) - 1)
        return self._send(text, end)

    def finish(self) -> str:
        """Everything not sent yet."""
        text = self.text()
        return self._send(text, len(text))

    def _send(self, text: str, end: int) -> str:
        if end <= self.sent:
            return ""
        piece, self.sent = text[self.sent : end], end
        return piece
