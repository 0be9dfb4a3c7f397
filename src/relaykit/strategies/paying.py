"""Whether drafting pays at a model's measured load (`runtime/load.py`): a check of k drafts feeds
this row k + 1 tokens, wakes its loop to read the logits, and pads the rows that do not draft as
much; the model writing on its own feeds one token and wakes nothing. Speculation thus turns
itself down where checking costs more than it saves (vLLM's dynamic speculation sets k to 0 at
high batch sizes; here it is measured per row)."""

from __future__ import annotations

from ..runtime.load import Load

# a drafter model's drafts accepted before any is measured, and the drafts of that prior round (ours)
PRIOR_ACCEPTANCE, PRIOR_DRAFTS = 0.8, 8


class Rounds:
    """A drafter model's rounds so far, after one prior round of up to `PRIOR_DRAFTS` of its `k`
    drafts kept at `PRIOR_ACCEPTANCE`: the drafts written and kept per round."""

    def __init__(self, k: int):
        self.count, self.drafted_total = 1, float(min(k, PRIOR_DRAFTS))
        self.kept_total = PRIOR_ACCEPTANCE * self.drafted_total

    @property
    def kept(self) -> float:
        return self.kept_total / self.count

    @property
    def drafted(self) -> float:
        return self.drafted_total / self.count

    def add(self, accepted: int, drafted: int) -> None:
        self.count += 1
        self.kept_total += accepted
        self.drafted_total += drafted


def pays(chances: list[float], load: Load | None, drafter_seconds: float = 0.0, alike: int = 1) -> int:
    """How many drafts to check: `chances[i]` is the chance that the first i + 1 are all accepted,
    `drafter_seconds` what drafting one costs, `alike` the rows that draft as much (siblings draft
    from one index). The count that keeps the most tokens per second of this row's cost, against
    the model writing on its own; every draft while the load is not measured."""
    if load is None:
        return len(chances)
    best, best_rate, kept = 0, 1.0 / load.step_seconds(1), 1.0
    for k, chance in enumerate(chances, 1):
        kept += chance
        rate = kept / (_check_seconds(load, k, alike) + k * drafter_seconds)
        if rate > best_rate:
            best, best_rate = k, rate
    return best


def rounds_pay(kept: float, drafted: float, load: Load | None, drafter_seconds: float = 0.0, alike: int = 1) -> bool:
    """Whether rounds that draft `drafted` tokens and keep `kept` of them (means so far) give more
    tokens per second than the model writing on its own (see `pays`)."""
    if load is None:
        return True
    cost = _check_seconds(load, round(drafted), alike) + drafted * drafter_seconds
    return (1 + kept) / cost > 1 / load.step_seconds(1)


def _check_seconds(load: Load, drafts: int, alike: int = 1) -> float:
    return load.step_seconds(drafts + 1) + load.padding_seconds(drafts + 1, alike) + load.wake


class Skips:
    """While no draft pays, the model writes on its own for 1, 2, 4, ... `most` tokens between
    proposals: one `Generate` ask, so no check and no wake-up of the loop per token; after `patience`
    proposals in a row at `most` found nothing worth checking, for the rest of the turn (a proposal
    reads its index, whose upkeep is then the only cost left). Ours: 16 and 8."""

    def __init__(self, most: int = 16, patience: int = 8):
        self.most, self.patience, self.skip, self.idle = most, patience, 0, 0

    def after(self, drafts: int) -> int:
        """Tokens to write without drafts now (0: `drafts` > 0 are checked)."""
        if drafts:
            self.skip = self.idle = 0
        else:
            self.idle += self.skip == self.most
            self.skip = min(max(1, 2 * self.skip), self.most) if self.idle < self.patience else 1 << 30
        return self.skip
