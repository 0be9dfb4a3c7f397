"""Step-level search (search-and-learn, Beeching et al. 2024; Snell et al. 2024): a writer model
samples reasoning steps (a step ends at a line break), a scorer rates each new step, and the best
beams are kept and branched again.

- `beam-search`: n beams; after each step the best n // beam_width are kept and each is forked
  into beam_width beams.
- `dvts` (diverse verifier tree search): n // beam_width independent subtrees of beam_width beams;
  each keeps its best beam and forks it beam_width ways, so the subtrees stay apart.

Beams share their prefix's KV rows (fork); pruned beams are dropped at once. The scorer is a
step verifier's P("+") at the step's end (`verifier`, `relaykit train verifier`; search-and-learn
scores with a PRM) or the large model's mean log-probability of the step (`likelihood`). The
answer is the finished beam with the best last-step score (search-and-learn's "last").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..decoding.sequence import Sequence
from ..errors import RelaykitError
from ..runtime.asks import Drop, Fork, Generate, Run
from ..text import decoder
from ..verdicts import verdict_ids
from ..vocabulary import EventKind, FinishReason
from .base import Strategy, register
from .best_of_n import likelihood, verified
from .drafting import SuffixConfig, SuffixDrafter
from .paying import Skips
from .speculative import check_drafts


@dataclass
class TreeSearchConfig:
    n: int = 8  # beams (search-and-learn: 4 to 256)
    beam_width: int = 4  # beams forked from each kept one (search-and-learn: 4)
    writer: str = "small"  # the model that writes the steps
    step_end: str = "\n"  # a step ends at a token holding this; "" = the whole answer is one step
    max_steps: int = 64  # steps per beam at most (search-and-learn: 40)
    scorer: Literal["verifier", "likelihood"] = "verifier"  # verifier or likelihood (the large model's)
    suffix: bool = False  # also draft from the suffix index (the sequence, its siblings or beams) where it pays

    def __post_init__(self) -> None:
        if self.scorer not in ("verifier", "likelihood"):
            raise RelaykitError(f"scorer must be verifier or likelihood, got {self.scorer!r}")
        if self.beam_width < 1 or self.n < self.beam_width or self.n % self.beam_width:
            raise RelaykitError(f"n must be a multiple of beam-width >= 1, got n={self.n} beam-width={self.beam_width}")


class StepWriter(Strategy):
    """Writes one step on its sequence (a child of a search); with `suffix`, checking drafts from
    the suffix index of the search's beams."""

    def __init__(self, models: dict, writer: str, step_end: str, suffix: SuffixConfig | None = None, **kwargs):
        self.roles = (writer,)
        super().__init__(models, **kwargs)
        self.writer, self.step_end, self.decode = writer, step_end, decoder(self.tokenizer)
        self.suffix = suffix

    @classmethod
    def needs_logits(cls, config) -> tuple[str, ...]:
        return ()

    def _ends_step(self, sequence: Sequence, end: int) -> bool | None:
        return True if self.step_end in self.decode(sequence.tokens[end - 1 : end]) else None

    def run(self, request):
        ends = self._ends_step if self.step_end else None
        if self.suffix is None:
            yield Generate(self.writer, request.sequence, request.remaining(), ends)
            return
        sequence, drafter, skips = request.sequence, SuffixDrafter(request, self.suffix, self.writer), Skips()
        while not sequence.finished:
            start, room = len(sequence), request.remaining()
            if room <= 0:
                return
            k = drafter.paying(drafter.propose(sequence, room - 1))
            if skips.after(k):
                if (yield Generate(self.writer, sequence, min(skips.skip, room), ends)).ended_by is not None:
                    return
                continue
            drafter.append(sequence, k, ends)
            first, accepted, drafted, _ = yield from check_drafts(request, sequence, start, [], verifier=self.writer)
            drafter.checked(drafted, accepted)
            if request.settle(sequence, first, ends) is not None:
                return


class TreeSearch(Strategy):
    """Subclasses set `subtrees(n, beam_width)`: how many independent groups the beams form."""

    Config = TreeSearchConfig
    in_demo = False

    def __init__(self, models: dict, config=None, *args, **kwargs):
        config = config if config is not None else TreeSearchConfig()
        self.roles = self.roles_of(config)
        super().__init__(models, config, *args, **kwargs)
        self.steps = StepWriter(self.models, config.writer, config.step_end,
                                SuffixConfig(recent=False) if config.suffix else None, sampling=self.sampling,
                                stop=self.stop_config)
        if config.scorer == "verifier":
            self.verdicts = verdict_ids(self.models["verifier"].tokenizer)

    @classmethod
    def roles_of(cls, config) -> tuple[str, ...]:
        return tuple(dict.fromkeys((config.writer, scorer_role(config))))

    @classmethod
    def needs_logits(cls, config) -> tuple[str, ...]:
        return tuple(dict.fromkeys((scorer_role(config), *((config.writer,) if config.suffix else ()))))

    def holdback(self) -> None:
        return None  # the chosen beam is known only at the end

    def groups(self) -> int:
        raise NotImplementedError

    def run(self, request):
        cfg = self.config
        groups = self.groups()
        per_group = cfg.n // groups
        keep = per_group // cfg.beam_width  # beams kept per group after each step
        beams: list[list[Sequence]] = []
        for _ in range(groups):
            beams.append((yield Fork(request.sequence, per_group, self.roles)))
        scores: dict[int, float] = {}
        done: list[Sequence] = []
        for _ in range(cfg.max_steps):
            active = [b for group in beams for b in group]
            if not active:
                break
            starts = {b.uid: len(b) for b in active}
            yield Run([(self.steps, b) for b in active], keep=True)
            for beam in active:
                scores[beam.uid] = yield from self._score(beam, starts[beam.uid])
            next_beams = []
            for group in beams:
                ranked = sorted(group, key=lambda b: -scores[b.uid])
                kept, pruned = ranked[:keep], ranked[keep:]
                for beam in pruned:
                    yield Drop(beam)
                grown = []
                for beam in kept:
                    if beam.finished:
                        done.append(beam)
                        continue
                    branches = (yield Fork(beam, cfg.beam_width - 1, self.roles)) if cfg.beam_width > 1 else []
                    grown += [beam, *branches]
                next_beams.append(grown)
            beams = next_beams
        done += [b for group in beams for b in group]
        best = max(done, key=lambda b: scores.get(b.uid, float("-inf")))
        sequence = request.sequence
        for token, writer in zip(best.tokens[len(sequence) :], best.writers[len(sequence) :]):
            sequence.append(token, writer)
        request.event(EventKind.SEARCH, cue=f"{scores.get(best.uid, float('nan')):.3f}", detail={"samples": cfg.n})
        sequence.finish(best.finish_reason or FinishReason.STOP)

    def _score(self, beam: Sequence, start: int):
        """The newest step's score (tokens from `start`)."""
        if len(beam) <= start:
            return float("-inf")
        if self.config.scorer == "likelihood":
            return (yield from likelihood(beam, len(beam) - start))
        return (yield from verified(beam, self.verdicts, self.eos_token_ids))


def scorer_role(config: TreeSearchConfig) -> str:
    return "large" if config.scorer == "likelihood" else "verifier"


@register("beam-search")
class BeamSearch(TreeSearch):
    def groups(self) -> int:
        return 1


@register("dvts")
class DVTS(TreeSearch):
    def groups(self) -> int:
        return self.config.n // self.config.beam_width
