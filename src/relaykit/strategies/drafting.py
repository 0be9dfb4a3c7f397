"""Drafters that need no model, and how many drafts pay at the current load.

The suffix drafter (SuffixDecoding, Oliaro et al., NeurIPS 2025) drafts from a suffix index of the
sequence's family (the sequence itself, prompt included, and its siblings: the other samples of
the same request) and from the strategy's cache of recent finished outputs; the proposal expected
to keep more drafts wins. `pays` picks how many of a proposal's drafts to check from their
expected acceptance and the verifier's measured cost at this batch (a check of k drafts feeds k + 1
tokens in every row), so that drafting turns itself down where checking costs more than it saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..decoding.sequence import Sequence
from ..decoding.suffix import Proposal, SuffixIndex, propose
from ..errors import RelaykitError
from ..runtime.load import Load
from ..vocabulary import LARGE


@dataclass
class SuffixConfig:
    # the suffix index's depth: a match plus its drafts (vLLM's suffix_decoding_max_tree_depth: 24)
    depth: int = 24
    spec_factor: float = 1.0  # drafts <= this x the match's length (SuffixDecoding's alpha; vLLM: 1.0)
    min_prob: float = 0.1  # stop once the drafts' empirical probability is below it (vLLM: 0.1)
    k: int = 24  # most drafts one check reads
    fit_load: bool = True  # check only as many drafts as pay at the model's measured load
    recent: bool = True  # also draft from the strategy's recent outputs, where the session keeps them

    def __post_init__(self) -> None:
        if self.depth < 2 or self.k < 1 or self.spec_factor <= 0 or not 0 < self.min_prob <= 1:
            raise RelaykitError("suffix drafting needs depth >= 2, k >= 1, spec_factor > 0 and 0 < min_prob <= 1")


class Siblings:
    """The suffix index of one request family's sequences, kept in step with their truncations,
    and how the family's drafts fared. A draft's empirical probability overstates its chance where
    the evidence is thin (one earlier occurrence says 1.0), so chances are scaled by the drafts
    accepted over the drafts expected, per source (the family's index, the recent outputs) and
    occurrences of the first draft's match (powers of two, up to 16)."""

    def __init__(self, depth: int):
        self.index = SuffixIndex(depth)
        self.truncations: dict[int, int] = {}  # uid -> truncations of the sequence already applied
        self.fared: dict[tuple[str, int], list[float]] = {}  # (source, bucket) -> [expected, accepted]
        self.sequences: dict[int, Sequence] = {}
        self.remembered = False  # an output of the family is in the recent outputs

    def sync(self, sequence: Sequence) -> None:
        cuts = sequence.truncations[self.truncations.get(sequence.uid, 0) :]
        self.index.sync(sequence.uid, sequence.tokens, min(cuts) if cuts else None)
        self.truncations[sequence.uid] = len(sequence.truncations)
        self.sequences[sequence.uid] = sequence

    @property
    def live(self) -> int:
        """The family's sequences still being written."""
        return sum(not sequence.finished for sequence in self.sequences.values())

    def chances(self, source: str, proposal: Proposal) -> list[float]:
        expected, accepted = self.fared.get((source, min(proposal.seen, 16).bit_length()), (1.0, 1.0))
        return [min(1.0, p * accepted / expected) for p in proposal.probs]

    def count(self, source: str, proposal: Proposal, checked: int, accepted: int) -> None:
        fared = self.fared.setdefault((source, min(proposal.seen, 16).bit_length()), [1.0, 1.0])
        fared[0] += sum(proposal.probs[:checked])
        fared[1] += accepted


def siblings_of(request, config: SuffixConfig) -> Siblings:
    return request.family.setdefault(("suffix", config.depth), Siblings(config.depth))


def suffix_proposal(request, sequence: Sequence, config: SuffixConfig, limit: int) -> tuple[Proposal, str]:
    """Up to `limit` drafts for `sequence` from its family's index and the strategy's recent
    outputs (where kept), and the source of the first draft ("family" or "recent")."""
    siblings = siblings_of(request, config)
    siblings.sync(sequence)
    cursors = [(siblings.index, siblings.index.ends(sequence.tokens, key=sequence.uid))]
    recent = request.recent_outputs() if config.recent else None
    if recent is not None and recent.outputs:
        index = recent.index
        cursors.append((index, index.ends(sequence.tokens[-config.depth :])))
    proposal, sources = propose(cursors, limit, config.spec_factor, config.min_prob)
    return proposal, ("family", "recent")[sources[0]] if sources else "family"


def remember(request, sequence: Sequence, config: SuffixConfig) -> None:
    """Keep a finished sequence's output in the strategy's recent outputs (when kept): the first
    of its family to finish (its siblings restate it, and the family's index holds them all)."""
    recent = request.recent_outputs() if config.recent else None
    siblings = siblings_of(request, config)
    if recent is not None and sequence.generated and not siblings.remembered:
        recent.add(sequence.generated)
        siblings.remembered = True


def pays(chances: list[float], load: Load | None, drafter_seconds: float = 0.0, alike: int = 1) -> int:
    """How many drafts to check: `chances[i]` is the chance that the first i + 1 are all accepted,
    `drafter_seconds` what drafting one costs. The count that maximises the tokens kept per second
    of this row's share of a step (`Load.step_seconds`: a forward's fixed cost split over its rows,
    plus its tokens), of the padding it adds to the rows that do not draft `alike` (a sample's
    siblings draft from the same index) and of the loop's wake-up to read the check, against the
    model writing on its own; every draft while the load is not measured."""
    if load is None:
        return len(chances)
    best, best_rate, kept = 0, 1.0 / load.step_seconds(1), 1.0
    for k, chance in enumerate(chances, 1):
        kept += chance
        cost = load.step_seconds(k + 1) + load.padding_seconds(k + 1, alike) + load.wake
        rate = kept / (cost + k * drafter_seconds)
        if rate > best_rate:
            best, best_rate = k, rate
    return best


# a drafter model's drafts accepted before any is measured (one in five rejected)
PRIOR_ACCEPTANCE = 0.8


def rounds_pay(accepted: float, drafted: float, load: Load | None, drafter_seconds: float = 0.0) -> bool:
    """Whether rounds that draft `drafted` tokens and keep `accepted` of them (means so far) give
    more tokens per second than the model writing on its own, at its measured load (`pays`)."""
    if load is None:
        return True
    cost = load.step_seconds(drafted + 1) + load.padding_seconds(round(drafted) + 1) + load.wake
    drafting = (1 + accepted) / (cost + drafted * drafter_seconds)
    return drafting > 1 / load.step_seconds(1)


class Skips:
    """While no draft pays, the model writes on its own for 1, 2, 4, ... `most` tokens between
    proposals: one `Generate` ask, so no check and no wake-up of the loop per token."""

    def __init__(self, most: int = 16):
        self.most, self.skip = most, 0

    def after(self, drafts: int) -> int:
        """Tokens to write without drafts now (0: `drafts` > 0 are checked)."""
        self.skip = 0 if drafts else min(max(1, 2 * self.skip), self.most)
        return self.skip


class SuffixDrafter:
    """Suffix drafts for `model` in one loop: `propose`, then `append` the drafts that are used,
    and say how their check went (`checked`)."""

    def __init__(self, request, config: SuffixConfig, model: str = LARGE):
        self.request, self.config, self.model = request, config, model
        self.siblings = siblings_of(request, config)
        self.source, self.proposal = "family", Proposal()

    def propose(self, sequence: Sequence, limit: int) -> list[float]:
        """Up to `limit` drafts for `sequence`; returns their chances (see `pays`). None when even
        drafts sure to be accepted would not pay at the load (then the index is not even read)."""
        limit = min(self.config.k, limit)
        if self.config.fit_load and not pays([1.0] * limit, self.request.load(self.model), alike=self.siblings.live):
            self.proposal = Proposal()
            return []
        self.proposal, self.source = suffix_proposal(self.request, sequence, self.config, limit)
        return self.siblings.chances(self.source, self.proposal)

    def paying(self, chances: list[float]) -> int:
        """How many of the proposed drafts pay at the model's load (all without `fit_load`)."""
        if not self.config.fit_load:
            return len(chances)
        return pays(chances, self.request.load(self.model), alike=self.siblings.live)

    def append(self, sequence: Sequence, k: int, ends_turn=None) -> bool:
        """Append the first k proposed drafts, none after a token that ends the turn by
        `ends_turn`; whether it ended the drafting."""
        self.proposal = self.proposal.cut(k)
        for token in self.proposal.tokens:
            sequence.append(token, self.model)
            if ends_turn is not None and ends_turn(sequence, len(sequence)) is not None:
                return True
        return False

    def checked(self, drafted: int, accepted: int) -> None:
        """The check of the appended drafts kept `accepted` of the `drafted` it read."""
        self.siblings.count(self.source, self.proposal, drafted, accepted)
