"""What a forward of an in-process model costs now: fitted over its recent forwards, so that a
strategy drafting for it can tell whether checking k more tokens in every row pays at this batch."""

from __future__ import annotations


class Load:
    """seconds = fixed + per_token x padded tokens, fitted by least squares over recent forwards
    (weights decaying by `decay` a forward); `rows`: the rows fed at the latest step, `feed` their
    median feed (a longer one pads the others, or runs apart); `wake`: the seconds a request's loop
    takes to read its logits and ask again (a check of drafts), which a request that lets the model
    write on its own (`Generate`) does not spend per token."""

    # weight of the newest wake-up measured (ours: a few steps' memory, as the fit's `decay` gives forwards)
    WAKE_WEIGHT = 0.1

    def __init__(self, prior_fixed_tokens: float = 48.0, decay: float = 0.98):
        # a forward's fixed cost in tokens until two feed sizes are seen (`LocalRunner.overhead_tokens`,
        # measured on the toy pair); `decay`: the fit's memory, about 50 forwards (ours)
        self.prior_fixed_tokens = prior_fixed_tokens
        self.decay = decay
        self.rows = 1
        self.feed = 1
        self.peers: dict = {}  # top strategy -> its rows at the latest step
        self.fixed = 0.0
        self.per_token = 0.0
        self.wake = 0.0
        self._sums = [0.0] * 5  # weight, tokens, seconds, tokens^2, tokens x seconds

    @property
    def measured(self) -> bool:
        return self.per_token > 0

    def stepped(self, feeds: list[int]) -> None:
        """A step fed these numbers of tokens to its rows (in one forward or a few)."""
        if feeds:
            self.rows, self.feed = len(feeds), sorted(feeds)[len(feeds) // 2]

    def stepped_by(self, peers: dict) -> None:
        """The rows of each top strategy at a step (requests of one strategy tend to feed alike)."""
        self.peers = peers

    def observe(self, tokens: int, seconds: float) -> None:
        """One forward of `tokens` tokens in all, padding included."""
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
        self.wake = seconds if not self.wake else self.wake + self.WAKE_WEIGHT * (seconds - self.wake)

    def step_seconds(self, tokens_per_row: float, rows: int | None = None) -> float:
        """A step's seconds per row when every one of `rows` rows (default: the latest step's) feeds
        `tokens_per_row` tokens."""
        return self.fixed / max(rows or self.rows, 1) + self.per_token * tokens_per_row

    def padding_seconds(self, tokens: int, alike: int = 1) -> float:
        """What one row feeding `tokens` costs the other rows of a step, `alike` rows (itself
        included) feeding as many: the others are padded to it beyond the median feed, or these
        run apart at a forward's fixed cost."""
        others = max(0, self.rows - max(alike, 1))
        return min(self.per_token * others * max(0, tokens - self.feed), self.fixed)
