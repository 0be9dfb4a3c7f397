"""Text matching for segment hand-offs: cues at word boundaries, sentence ends that are not
decimal points, the end of thinking, and the decoded tail of a token sequence.

A match "completes" at the character that decides it; a hand-off fires when that character
arrives, so "now" never fires inside "know" and "3." is no sentence end until a space follows.
"""

from __future__ import annotations

import functools
import re
from typing import Callable, NamedTuple

from .errors import RelaykitError

THINK_END = "</think>"
WORD_END = re.compile(r"\w$")  # a cue ending in a word character completes at the next character
# A sentence ends at . ! or ? (closing quotes/brackets allowed) followed by white space, or at a
# blank line. Requiring the white space keeps "3.5" in one sentence.
SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s|\n[ \t]*\n")
# RelayGen's candidate switch cues (discourse markers), each also with a comma and in lower case.
CUE_WORDS = (
    "Wait", "So", "Therefore", "Thus", "Now", "Alternatively", "Similarly", "Also", "Hence", "Again",
    "Specifically", "Oh", "Ah",
)
CANDIDATE_CUES = [variant for word in CUE_WORDS for variant in (word, word + ",", word.lower(), word.lower() + ",")]


def cue_pattern(cues: list[str]) -> re.Pattern | None:
    """One regex for `cues`, longest first, each bounded by non-word characters on both sides;
    a cue ending in a word character needs the next character to be seen (so "Now" is not "Nowhere")."""
    if not cues:
        return None
    parts = []
    for cue in sorted(set(cues), key=len, reverse=True):
        left = r"(?<!\w)" if re.match(r"\w", cue) else ""
        right = r"(?=\W)" if WORD_END.search(cue) else ""
        parts.append(left + re.escape(cue) + right)
    return re.compile("|".join(parts))


def _completion(match: re.Match) -> int:
    """Index just after the character that decides a cue match."""
    return match.end() + (1 if WORD_END.search(match.group()) else 0)


def find_cue(text: str, pattern: re.Pattern | None, since: int, start: int = 0) -> str | None:
    """The cue occurring in text[start:] whose match completes after index `since`, if any."""
    if pattern is None:
        return None
    found = None
    for match in pattern.finditer(text, start):
        if _completion(match) > since:
            found = match.group()
    return found


def cue_regions(text: str, pattern: re.Pattern) -> list[tuple[str, int, int]]:
    """(cue, start, end) for every cue occurrence: the region a small model would write, from the
    match's completion to the end of the first sentence end after it (or the end of the text)."""
    regions = []
    for match in pattern.finditer(text):
        start = _completion(match)
        end = SENTENCE_END.search(text, start)
        regions.append((match.group(), start, end.end() if end else len(text)))
    return regions


def ends_sentence(text: str, since: int, start: int = 0) -> bool:
    """Whether a sentence end in text[start:] completes after index `since`."""
    return any(m.end() > since for m in SENTENCE_END.finditer(text, start))


def ends_thinking(text: str, since: int) -> bool:
    """Whether `</think>` completes after index `since`."""
    return text.find(THINK_END, max(0, since - len(THINK_END) + 1)) >= 0


class Tail(NamedTuple):
    """The decoded end of a sequence: `text`, where the newest token's text begins (`new_from`) and
    where the current turn's text begins (`turn_from`, 0 when the turn began before the window)."""

    text: str
    new_from: int
    turn_from: int


PIECES_MAX_VOCAB = 512  # vocabularies small enough to check every pair of tokens for `decoder`'s pieces


def decoder(tokenizer) -> Callable[[list[int]], str]:
    """`tokenizer.decode(ids, skip_special_tokens=False)`, calling a fast tokenizer's backend directly
    when that gives the same text (no clean-up of spaces): the wrapper costs 3x the decoding. Where
    every token's text is the same whatever its neighbours (checked on every pair of a small
    vocabulary, as the toy tokenizer's), it joins the tokens' texts instead: a rule asked after
    every forward finds the tokenizer's tables out of the CPU's caches, and a join costs a third."""
    backend = getattr(tokenizer, "_tokenizer", None)
    cleans_up = getattr(tokenizer, "clean_up_tokenization_spaces", True) is not False
    if backend is None or not hasattr(backend, "decode") or cleans_up:
        return lambda ids: tokenizer.decode(ids, skip_special_tokens=False)
    decode = functools.partial(backend.decode, skip_special_tokens=False)
    size = backend.get_vocab_size(with_added_tokens=True)
    if size <= PIECES_MAX_VOCAB:
        pieces = [decode([token]) for token in range(size)]
        if all(decode([a, b]) == pieces[a] + pieces[b] for a in range(size) for b in range(size)):

            def join(ids: list[int]) -> str:
                try:
                    return "".join([pieces[token] for token in ids])
                except IndexError:  # an id past the tokenizer's (a model's padded vocabulary)
                    return decode(ids)

            return join
    return decode


def decode_tail(decode: Callable[[list[int]], str], tokens: list[int], end: int, turn_start: int, floor: int,
                window: int) -> Tail:
    """Decode (with `decode`, see `decoder`) the last `window` tokens before `end`, with one token of
    context before the turn when it starts in the window, so that a word boundary at its start is
    visible. `floor`: the first index allowed. Every rule reads only the last few characters, so a
    long turn is not decoded whole for each of its tokens."""
    start = end - window
    if start == turn_start:  # the turn starts at the window's edge: one token of context before it
        start -= 1
    start = max(floor, start)

    def text(stop: int) -> str:
        return decode(tokens[start:stop]) if stop > start else ""

    return Tail(text(end), len(text(end - 1)), len(text(turn_start)) if turn_start > start else 0)


def parse_cues(spec: str | list[str] | None) -> list[str]:
    """Cues from a list or a "|"-separated string ("Wait|So|Therefore,"); None or "all": every
    candidate; "none" or "": no cue (RelayGen then hands off only the answer). A cues file is
    read before a strategy is built (`relaykit.resolve.load_cues`)."""
    if spec is None or spec == "all":
        return list(CANDIDATE_CUES)
    if spec == "none":
        return []
    if isinstance(spec, list):
        return [c for c in spec if c]
    if looks_like_file(spec):
        raise RelaykitError(f"cues {spec!r} name a file: read it with relaykit.resolve before building the strategy")
    return [c for c in spec.split("|") if c]


def looks_like_file(spec: str) -> bool:
    """Whether a cues option names a file rather than cues."""
    return spec.endswith((".json", ".txt")) or "/" in spec
