"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): the small model drafts k
tokens, the large model scores them in one forward, and rejection sampling keeps the output
distributed exactly as the large model's. Greedy: the output equals large-only greedy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..decoding.sequence import Sequence
from ..errors import RelaykitError
from ..runtime.asks import LOW_CONFIDENCE, Draft, Generate, Logits
from ..vocabulary import LARGE, SMALL
from .base import Strategy, register
from .drafting import SuffixConfig, SuffixDrafter, remember
from .paying import Rounds, Skips, rounds_pay


@dataclass
class SpeculativeConfig:
    k: int = 4  # draft length; Leviathan et al. 2023 evaluate gamma in 1..10, with 3-7 typical
    adaptive: bool = False  # grow k after a fully accepted round, shrink it after a poor one
    max_k: int = 16
    # stop drafting once the draft token has probability below this (0 = never); HF assisted
    # generation's assistant_confidence_threshold defaults to 0.4
    draft_confidence: float = 0.0
    fit_load: bool = True  # draft only as many tokens as pay at the measured acceptance and load
    suffix: bool = False  # also draft from the suffix index (the sequence, its siblings or beams) where it pays

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.max_k:
            raise RelaykitError(f"speculative k must be in 1..{self.max_k}, got {self.k}")


def verify(sampler, drafts: list[int], draft_probs, target) -> tuple[int, int]:
    """Accepted draft count and the large model's next token (a correction or a bonus).

    Greedy: `target` lists the large model's argmax at the d draft positions and after them.
    Sampling: `target` [d+1, V] holds its distributions there and `draft_probs` [d, V] the small
    model's (None: each draft was proposed with certainty, q = 1, as a lookup proposes); a draft is
    kept with probability min(1, p/q), else the token comes from (p - q)+.
    """
    if sampler.greedy:
        accepted = 0
        while accepted < len(drafts) and drafts[accepted] == target[accepted]:
            accepted += 1
        return accepted, target[accepted]
    coins = sampler.uniform(len(drafts)).tolist()
    for i, token in enumerate(drafts):
        p, q = float(target[i, token]), 1.0 if draft_probs is None else float(draft_probs[i, token])
        if coins[i] * q > p:
            if draft_probs is None:  # (p - q)+ with q one-hot: p without the draft
                residual = target[i].clone()
                residual[token] = 0.0
            else:
                residual = (target[i] - draft_probs[i]).clamp(min=0)
            if residual.sum() <= 0:
                residual = target[i]
            return i, int(sampler.draw(residual / residual.sum()))
    return len(drafts), int(sampler.draw(target[len(drafts)]))


@dataclass(frozen=True)
class Cut:
    """Where a check cut tokens another model wrote: their `index`, the large model's `token`
    there, the `rejected` one and the large model's `margin` (logits) of its top over it."""

    index: int
    token: int
    rejected: int
    margin: float


def lenient_cut(request, logits: torch.Tensor, tokens: list[int], threshold: float | list[float]) -> Cut | None:
    """The lenient check of tokens another model wrote (`logits` [n, V]: the large model's before
    each of the n `tokens`): the first token the large model ranks below its own top one by at least
    `threshold` logits (one, or one per token; 0: any disagreement, as greedy speculative decoding),
    with the large model's token there (sampled without the rejected one); None when every token
    stays."""
    chosen = torch.tensor(tokens, device=logits.device)
    top = logits.max(-1)
    margin = top.values - logits.gather(-1, chosen[:, None])[:, 0]
    disagreements = ((margin >= torch.as_tensor(threshold, device=margin.device)) & (top.indices != chosen)).nonzero()
    if not len(disagreements):
        return None
    i = int(disagreements[0])
    if request.sampler.greedy:
        token = int(top.indices[i])
    else:
        token = request.sample(logits[i].index_fill(0, chosen[i : i + 1], float("-inf")))
    return Cut(i, token, tokens[i], float(margin[i]))


def draft(request, sequence: Sequence, k: int, draft_confidence: float = 0.0,
          ends_turn: Callable[[Sequence, int], Any] | None = None, drafter: str = SMALL):
    """The `drafter` model drafts up to k tokens (use with `yield from`), fewer once a draft is below
    `draft_confidence` or `ends_turn` (a turn's rule) says the turn would end after it. Returns the
    drafts' distributions when sampling (else []) and whether `ends_turn` ended the drafting (it
    said no to every other draft). Greedy drafts run in the runtime (one `Draft` ask); sampled
    ones come back token by token, since the check needs their distributions."""
    sampler, draft_probs = request.sampler, list[torch.Tensor]()
    if sampler.greedy:
        drafted = yield Draft(drafter, sequence, k, ends_turn, min_confidence=draft_confidence)
        return draft_probs, drafted.ended_by is not None and drafted.ended_by is not LOW_CONFIDENCE
    for _ in range(k):
        logits = (yield Logits(drafter, sequence))[-1]
        probs = sampler.probs(logits)
        draft_probs.append(probs)
        sequence.append(int(sampler.draw(probs)), drafter)
        if ends_turn is not None and ends_turn(sequence, len(sequence)) is not None:
            return draft_probs, True
        if draft_confidence and float(logits.softmax(-1).max()) < draft_confidence:
            break
    return draft_probs, False


def check_drafts(request, sequence: Sequence, start: int, draft_probs: list, checked_from: int | None = None,
                 threshold: float | list[float] = 0.0, verifier: str = LARGE):
    """The `verifier` model scores the drafts from `start` in one forward (use with `yield from`); the
    accepted drafts plus its own token stay. `draft_probs`: the drafts' distributions when sampling
    ([]: proposed with certainty, see `verify`). With `checked_from`, the tokens from there to the
    drafts (written by the small model on its own) are read in the same forward and pass the
    lenient check (`lenient_cut` at `threshold`) first; a cut there ends the round.
    Returns (index of the first token added, drafts accepted, drafts written, the check's cut)."""
    sampler, drafts = request.sampler, sequence.tokens[start:]
    head = start if checked_from is None else checked_from
    target_logits = yield Logits(verifier, sequence, len(sequence) - head + 1)
    if head < start:
        cut = lenient_cut(request, target_logits[: start - head], sequence.tokens[head:start], threshold)
        if cut is not None:  # the drafts were not looked at: no check of them is counted
            sequence.truncate(head + cut.index)
            sequence.append(cut.token, verifier)
            return head + cut.index, 0, len(drafts), cut
        target_logits = target_logits[start - head :]
    target = target_logits.argmax(-1).tolist() if sampler.greedy else sampler.probs(target_logits)
    accepted, token = verify(sampler, drafts, torch.stack(draft_probs) if draft_probs else None, target)
    if drafts:
        request.count_check(verifier, len(drafts), accepted)
    sequence.truncate(start + accepted)
    sequence.append(token, verifier)
    return start, accepted, len(drafts), None


def speculative_round(request, sequence: Sequence, k: int, draft_confidence: float = 0.0):
    """One round on one sequence (use with `yield from`): `draft`, then `check_drafts`.
    Returns (index of the first token added, drafts accepted, drafts written, None)."""
    start = len(sequence)
    draft_probs, _ = yield from draft(request, sequence, k, draft_confidence)
    return (yield from check_drafts(request, sequence, start, draft_probs))


@register("speculative")
class Speculative(Strategy):
    roles = (LARGE, SMALL)
    Config = SpeculativeConfig
    tunes = ("k", "max_k", "adaptive", "draft_confidence")

    @classmethod
    def needs_whole_distribution(cls, config) -> tuple[str, ...]:
        # the small model drafts from its whole distribution; the large model's greedy check reads its
        # top token, a sampled one the drafted token's probability and the top tokens
        return (SMALL,)

    def holdback(self) -> int:
        return max(self.config.max_k if self.config.adaptive else self.config.k,
                   SuffixConfig.k if self.config.suffix else 0)

    def run(self, request):
        sequence, config, k = request.sequence, self.config, self.config.k
        suffix = SuffixDrafter(request, SuffixConfig(fit_load=config.fit_load)) if config.suffix else None
        skips = Skips()
        rounds = Rounds(k)  # the small model's
        while not sequence.finished:
            start, room = len(sequence), request.remaining()
            if room <= 0:
                break
            limit = min(k, room - 1)
            if config.fit_load:
                large, small = request.load(LARGE), request.load(SMALL)
                drafting = small.step_seconds(1, large.rows) if small and large else 0.0
                if not rounds_pay(rounds.kept, rounds.drafted, large, drafting, request.peers(LARGE)):
                    limit = 0
            from_suffix = 0  # suffix drafts used instead of the small model's
            if suffix is not None:
                chances = suffix.propose(sequence, room - 1)
                paying = suffix.paying(chances)
                from_suffix = paying if sum(chances[:paying]) > (rounds.kept if limit else 0) else 0
            if skips.after(limit or from_suffix):
                yield Generate(LARGE, sequence, min(skips.skip, room))
                continue
            if suffix is not None and from_suffix:
                suffix.append(sequence, from_suffix)
                first, accepted, drafted, _ = yield from check_drafts(request, sequence, start, [])
                suffix.checked(drafted, accepted)
            else:
                first, accepted, drafted, _ = yield from speculative_round(request, sequence, limit,
                                                                           config.draft_confidence)
                rounds.add(accepted, drafted)
                if config.adaptive and drafted:
                    rate = accepted / drafted
                    k = min(k + 1, config.max_k) if rate == 1.0 else max(1, k - 1) if rate < 0.5 else k
            request.finish_if_done(sequence, len(sequence) - first)
        if suffix is not None:
            remember(request, sequence, suffix.config)
