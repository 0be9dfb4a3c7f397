"""The suffix drafter (SuffixDecoding, Oliaro et al., NeurIPS 2025): drafts from a suffix index of
the sequence's family (the sequence itself, prompt included, and its siblings: the other samples
of the same request) and of the strategy's recent finished outputs. Each draft comes from the
index where it is more probable; the drafts that pay at the model's load are checked
(`paying.pays`)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from ..decoding.sequence import Sequence
from ..decoding.suffix import Proposal, RecentOutputs, SuffixIndex, propose
from ..errors import RelaykitError
from ..vocabulary import LARGE
from .paying import pays


@dataclass
class SuffixConfig:
    # the suffix index's depth: a match plus its drafts (vLLM's suffix_decoding_max_tree_depth: 24)
    depth: int = 24
    spec_factor: float = 1.0  # drafts <= this x the match's length (SuffixDecoding's alpha; vLLM: 1.0)
    min_prob: float = 0.1  # stop once the drafts' empirical probability is below it (vLLM: 0.1)
    k: int = 24  # most drafts one check reads (the depth: no match drafts more)
    fit_load: bool = True  # check only as many drafts as pay at the model's measured load
    recent: bool = True  # also draft from the strategy's recent outputs, where the session keeps them

    def __post_init__(self) -> None:
        if self.depth < 2 or self.k < 1 or self.spec_factor <= 0 or not 0 < self.min_prob <= 1:
            raise RelaykitError("suffix drafting needs depth >= 2, k >= 1, spec_factor > 0 and 0 < min_prob <= 1")


class Siblings:
    """The suffix index of one request family's sequences, kept in step with their truncations,
    and how the family's drafts did. A draft's empirical probability overstates its chance where
    the evidence is thin (one earlier occurrence says 1.0; on the toy world 40-64% of such first
    drafts were kept), so chances are scaled by the drafts accepted over the drafts expected, per
    source (the family's index, the recent outputs) and occurrences of the first draft's match
    (powers of two up to 16). A sibling's prompt is indexed once: later siblings index their last
    `depth` prompt tokens and what follows."""

    def __init__(self, depth: int):
        self.index = SuffixIndex(depth)
        self.truncations: dict[int, int] = {}  # uid -> truncations of the sequence already applied
        self.starts: dict[int, int] = {}  # uid -> the first token of the sequence its document holds
        self.prompts: set[tuple[int, ...]] = set()
        self.outcomes: dict[tuple[str, int], list[float]] = {}  # (source, bucket) -> [expected, accepted]
        self.drafting: weakref.WeakSet = weakref.WeakSet()  # drafters whose loop runs (an ended loop frees its own)
        self.remembered = False  # an output of the family is in the recent outputs

    def sync(self, sequence: Sequence) -> None:
        if sequence.uid not in self.starts:
            prompt = tuple(sequence.tokens[: sequence.prompt_length])
            self.starts[sequence.uid] = max(0, len(prompt) - self.index.depth) if prompt in self.prompts else 0
            self.prompts.add(prompt)
        start = self.starts[sequence.uid]
        cuts = sequence.truncations[self.truncations.get(sequence.uid, 0) :]
        self.index.sync(sequence.uid, sequence.tokens[start:], min(cuts) - start if cuts else None)
        self.truncations[sequence.uid] = len(sequence.truncations)

    def chances(self, source: str, proposal: Proposal) -> list[float]:
        expected, accepted = self.outcomes.get((source, min(proposal.seen, 16).bit_length()), (1.0, 1.0))
        return [min(1.0, p * accepted / expected) for p in proposal.probs]

    def count(self, source: str, proposal: Proposal, checked: int, accepted: int) -> None:
        outcome = self.outcomes.setdefault((source, min(proposal.seen, 16).bit_length()), [1.0, 1.0])
        outcome[0] += sum(proposal.probs[:checked])
        outcome[1] += accepted


def siblings_of(request, config: SuffixConfig) -> Siblings:
    return request.family.setdefault(("suffix", config.depth), Siblings(config.depth))


def recent_outputs(request, config: SuffixConfig) -> RecentOutputs | None:
    """The strategy's recent outputs (None: off, or the session keeps nothing across requests)."""
    kept = request.across_requests() if config.recent else None
    if kept is None:
        return None
    shared, tokens = kept
    return shared.setdefault(("suffix", config.depth), RecentOutputs(tokens, config.depth))


def suffix_proposal(request, sequence: Sequence, config: SuffixConfig, limit: int) -> tuple[Proposal, str]:
    """Up to `limit` drafts for `sequence` from its family's index and the strategy's recent
    outputs, and the source of the first draft ("family" or "recent")."""
    siblings = siblings_of(request, config)
    siblings.sync(sequence)
    cursors = [(siblings.index, siblings.index.ends(sequence.tokens, key=sequence.uid))]
    recent = recent_outputs(request, config)
    if recent is not None and recent.outputs:
        index = recent.index
        cursors.append((index, index.ends(sequence.tokens[-config.depth :])))
    proposal, source = propose(cursors, limit, config.spec_factor, config.min_prob)
    return proposal, ("family", "recent")[source]


def remember(request, sequence: Sequence, config: SuffixConfig) -> None:
    """Keep a finished sequence's output in the strategy's recent outputs (when kept): the first
    of its family to finish (its siblings restate it, and the family's index holds them all)."""
    recent, siblings = recent_outputs(request, config), siblings_of(request, config)
    if recent is not None and sequence.generated and not siblings.remembered:
        recent.add(sequence.generated)
        siblings.remembered = True


class SuffixDrafter:
    """Suffix drafts for `model` in one loop: `propose`, `paying`, `append` the drafts used, then
    say how their check went (`checked`)."""

    def __init__(self, request, config: SuffixConfig, model: str = LARGE):
        self.request, self.config, self.model = request, config, model
        self.siblings = siblings_of(request, config)
        self.siblings.drafting.add(self)
        self.source, self.proposal = "family", Proposal()

    def propose(self, sequence: Sequence, limit: int) -> list[float]:
        """Up to `limit` drafts for `sequence`; returns their chances (see `pays`), none when even
        drafts sure to be accepted would not pay at the load (then no index is read)."""
        limit = min(self.config.k, limit)
        if limit <= 0 or not self.paying([1.0] * limit):
            self.proposal = Proposal()
            return []
        self.proposal, self.source = suffix_proposal(self.request, sequence, self.config, limit)
        return self.siblings.chances(self.source, self.proposal)

    def paying(self, chances: list[float]) -> int:
        """How many of the drafts pay at the model's load (all without `fit_load`); a sample's
        siblings draft as much."""
        if not self.config.fit_load:
            return len(chances)
        return pays(chances, self.request.load(self.model), alike=len(self.siblings.drafting))

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
