"""What a forward of an in-process model costs now: fitted over its recent forwards, so that a
strategy drafting for it can tell whether checking k more tokens in every row pays at this batch."""

from __future__ import annotations


class Load:
    """seconds = fixed + per_token x padded tokens, fitted by least squares over recent forwards
    (weights decaying by `decay` a forward); `rows`: the rows of the latest forward; `wake`: the
    seconds a request's loop takes to read its logits and ask again (a check of drafts), which a
    request that lets the model write on its own (`Generate`) does not spend per token."""

    def __init__(self, prior_fixed_tokens: float = 48.0, decay: float = 0.98):
        self.prior_fixed_tokens = prior_fixed_tokens  # a forward's fixed cost in tokens until measured
        self.decay = decay
        self.rows = 1
        self.longest = 1  # the longest feed of the latest forward: shorter ones are padded to it
        self.fixed = 0.0
        self.per_token = 0.0
        self.wake = 0.0
        self._sums = [0.0] * 5  # weight, tokens, seconds, tokens^2, tokens x seconds

    @property
    def measured(self) -> bool:
        return self.per_token > 0

    def observe(self, tokens: int, rows: int, seconds: float) -> None:
        """One forward of `rows` rows padded to `tokens` tokens in all."""
        self.rows, self.longest = rows, max(1, tokens // max(rows, 1))
        sums = [s * self.decay for s in self._sums]
        for i, value in enumerate((1.0, tokens, seconds, tokens * tokens, tokens * seconds)):
            sums[i] += value
        self._sums = sums
        weight, t, s, tt, ts = sums
        spread = tt - t * t / weight
        if spread > 1e-9 * max(tt, 1.0):
            slope = (ts - t * s / weight) / spread
            if slope > 0:
                self.per_token = slope
                self.fixed = max(0.0, (s - slope * t) / weight)
                return
        # one feed size seen so far: split its cost by the prior
        self.per_token = s / (t + self.prior_fixed_tokens * weight)
        self.fixed = self.per_token * self.prior_fixed_tokens

    def woke(self, seconds: float) -> None:
        """A step's loops took `seconds` each to read their logits."""
        self.wake = seconds if not self.wake else self.wake + (1 - self.decay) * 5 * (seconds - self.wake)

    def step_seconds(self, tokens_per_row: float, rows: int | None = None) -> float:
        """A step's seconds per row when every one of `rows` rows (default: the latest forward's)
        feeds `tokens_per_row` tokens."""
        return self.fixed / max(rows or self.rows, 1) + self.per_token * tokens_per_row

    def padding_seconds(self, tokens: int) -> float:
        """What one row feeding `tokens` costs the other rows of the latest forward: they are padded
        to it beyond the longest feed, or it runs apart at a forward's fixed cost."""
        return min(self.per_token * (self.rows - 1) * max(0, tokens - self.longest), self.fixed)
