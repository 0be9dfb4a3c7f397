"""Suffix decoding (SuffixDecoding, Oliaro et al., NeurIPS 2025): one model, no drafter model.
Drafts come from a suffix index of the sequence (prompt included), its siblings (the other
samples of the same request: best-of-N, self-consistency, beams, a server's n choices) and the
strategy's recent outputs; the model checks them in one forward, as `lookup` does. The draft
length follows the match's frequencies, and only as many drafts are checked as pay at the
model's measured load (`paying.pays`). Greedy: the output is the model's greedy output.
Sampling: a draft is kept with the model's probability of it, else the token is drawn without
it, so the output is distributed as the model's."""

from __future__ import annotations

from ..runtime.asks import Generate
from ..vocabulary import LARGE
from .base import register
from .drafting import SuffixConfig, SuffixDrafter, remember
from .lookup import ContextDrafts
from .paying import Skips
from .speculative import check_drafts


@register("suffix")
class Suffix(ContextDrafts):
    """The model alone, checking drafts from its family's and its recent outputs' suffix index."""

    Config = SuffixConfig

    def run(self, request):
        sequence, drafter, skips = request.sequence, SuffixDrafter(request, self.config), Skips()
        while not sequence.finished:
            start, room = len(sequence), request.remaining()
            if room <= 0:
                break
            k = drafter.paying(drafter.propose(sequence, room - 1))
            skip = skips.after(k)
            if skip:
                yield Generate(LARGE, sequence, min(skip, room))
                continue
            drafter.append(sequence, k)
            _, accepted, drafted, _ = yield from check_drafts(request, sequence, start, [])
            drafter.checked(drafted, accepted)
            request.finish_if_done(sequence, len(sequence) - start)
        remember(request, sequence, self.config)
