"""Overthinking metrics of Chen et al. (2024) on a reasoning trace.

The thinking is split into solutions: a new solution starts at a line holding a reflection cue
(Wait, Alternatively, Hmm, Check, But wait, ...) at the start of one of its sentences. In the toy
world this makes the first derivation one solution and each check round ("Check 3. Wait, 47 * 6 =
282 and ...") another; in real traces it splits at the paragraphs where the model re-examines. A
solution's answer is its last `\\boxed{...}` or else its last number.

- outcome efficiency: tokens up to and including the first solution whose answer is right, over
  all thinking tokens (0 when no solution is right);
- process efficiency: tokens of the solutions that reach an answer not reached before, over all
  thinking tokens.
"""

from __future__ import annotations

import re
from typing import Callable

from ..answers import answers_match

REFLECTION = re.compile(r"(?:^|[.!?]\s+)\s*(?:Wait|Alternatively|Hmm|Check|But wait|Let me check|Double-check)\b")
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def solutions(thinking: str) -> list[str]:
    """The thinking split into solutions at lines with a reflection cue (they join back to it)."""
    pieces: list[str] = []
    for line in thinking.splitlines(keepends=True):
        if pieces and not REFLECTION.search(line):
            pieces[-1] += line
        else:
            pieces.append(line)
    return pieces


def answer_of(solution: str) -> str | None:
    boxed = BOXED.findall(solution)
    if boxed:
        return boxed[-1].strip()
    numbers = NUMBER.findall(solution)
    return numbers[-1] if numbers else None


def efficiency(text: str, reference: str, count: Callable[[str], int]) -> tuple[float, float] | None:
    """(outcome, process) efficiency of the thinking in `text`; None when there is no `<think>`.
    `count` gives a piece of text's length in tokens."""
    if "<think>" not in text:
        return None
    thinking = text.split("<think>", 1)[1].split("</think>", 1)[0]
    pieces = solutions(thinking)
    sizes = [count(p) for p in pieces]
    total = sum(sizes)
    if not total:
        return None
    outcome, seen, new_tokens, spent = 0.0, set(), 0, 0
    for piece, size in zip(pieces, sizes):
        spent += size
        answer = answer_of(piece)
        if not outcome and answers_match(answer, reference):
            outcome = spent / total
        if answer is not None and answer not in seen:
            seen.add(answer)
            new_tokens += size
    return outcome, new_tokens / total
