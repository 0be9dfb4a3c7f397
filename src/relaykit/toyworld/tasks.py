"""Synthetic reasoning tasks: problems with a chain of thought and a short final answer.

Two domains share one hard step, a direct two-digit by one-digit product (a table of
630 entries that a large model learns and a small one only partly), surrounded by easy steps: restating the
question, numbered "check k of n" rounds that restate results already computed, and
summaries opened by varied discourse cues (Wait, So, Therefore, Thus, Now, Hence,
Also, Again, Alternatively). Difficulty therefore varies inside one trajectory.

- ``arith``: ``What is 47 * 6 + 58? Check it 2 times.``
- ``list``: ``Take the largest of 47, 81, 50 and multiply it by 6. Check it 2 times.``

Splits are a partition of question strings by hash, so no question is in two splits.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Iterator

DOMAINS = ("arith", "list")
SPLITS = ("train", "dev", "test", "calibration", "fresh")
# Hash buckets (out of 1000) of each split: disjoint by construction.
_BUCKETS = {
    "train": range(0, 900),
    "dev": range(900, 930),
    "test": range(930, 960),
    "calibration": range(960, 980),
    "fresh": range(980, 1000),
}
# A fixed generator seed per evaluation split, so load_split is reproducible.
_SPLIT_SEEDS = {"dev": 101, "test": 202, "calibration": 303, "train": 404}
_DEFAULT_SIZES = {"train": 20000, "dev": 500, "test": 500, "calibration": 500}
# Verification rounds: ordinary problems and the long variant (solutions of 1,360-1,740 tokens, mean 1,560).
SHORT_ROUNDS = (2, 4)
LONG_ROUNDS = (66, 76)

# Each check round restates a result already computed; cue and form cycle with k.
_CHECK_CUES = ("Wait", "Again", "Also", "Alternatively", "Now", "Hence")


@dataclass(frozen=True)
class Problem:
    """One problem: the solution is ``<think>...</think>The answer is N.``"""

    id: str
    domain: str
    question: str
    solution: str
    answer: str


def split_of(question: str) -> str:
    """The split a question belongs to (a hash partition of question strings)."""
    bucket = int(hashlib.sha1(question.encode()).hexdigest()[:8], 16) % 1000
    return next(name for name, rng in _BUCKETS.items() if bucket in rng)


def _checks(rounds: int, forms: list[str]) -> list[str]:
    return [
        f"{_CHECK_CUES[(k - 1) % len(_CHECK_CUES)]}, check {k} of {rounds}: {forms[(k - 1) % len(forms)]}."
        for k in range(1, rounds + 1)
    ]


def _times(rounds: int) -> str:
    return "1 time" if rounds == 1 else f"{rounds} times"


def _arith(rng: random.Random, rounds: int, with_addend: bool) -> tuple[str, list[str], int]:
    a, b = rng.randint(10, 99), rng.randint(3, 9)
    product = a * b
    if not with_addend:
        forms = [f"{a} * {b} = {product}", f"{b} * {a} = {product}", f"{product} / {b} = {a}"]
        lines = [f"We need {a} * {b}.", f"First, {a} * {b} = {product}."]
        lines += _checks(rounds, forms)
        lines.append(f"Therefore, {a} * {b} = {product}.")
        return f"What is {a} * {b}? Check it {_times(rounds)}.", lines, product
    c = rng.randint(10, 99)
    total = product + c
    forms = [
        f"{b} * {a} = {product}",
        f"{total} - {c} = {product}",
        f"{product} / {b} = {a}",
        f"{c} + {product} = {total}",
    ]
    lines = [
        f"We need {a} * {b} + {c}.",
        f"First, {a} * {b} = {product}.",
        f"Then {product} + {c} = {total}.",
        f"So the product is {product} and the sum is {total}.",
    ]
    lines += _checks(rounds, forms)
    lines.append(f"Therefore, {a} * {b} + {c} = {total}.")
    return f"What is {a} * {b} + {c}? Check it {_times(rounds)}.", lines, total


def _list(rng: random.Random, rounds: int) -> tuple[str, list[str], int]:
    items = rng.sample(range(10, 100), 3)
    b = rng.randint(3, 9)
    which = rng.choice(("largest", "smallest"))
    pick = max(items) if which == "largest" else min(items)
    product = pick * b
    shown = ", ".join(map(str, items))
    ordered = ", ".join(map(str, sorted(items)))
    forms = [f"{b} * {pick} = {product}", f"{product} / {b} = {pick}", f"the {which} is {pick}"]
    lines = [
        f"The list is {shown}.",
        f"Sorted, it is {ordered}.",
        f"Thus the {which} is {pick}.",
        f"Next, {pick} * {b} = {product}.",
    ]
    lines += _checks(rounds, forms)
    lines.append(f"Hence the {which} times {b} is {product}.")
    question = f"Take the {which} of {shown} and multiply it by {b}. Check it {_times(rounds)}."
    return question, lines, product


def make_problem(rng: random.Random, domain: str, verify_rounds: int, with_addend: bool = True) -> Problem:
    """Draw one problem of a domain with ``verify_rounds`` check rounds."""
    if domain == "arith":
        question, lines, answer = _arith(rng, verify_rounds, with_addend)
    elif domain == "list":
        question, lines, answer = _list(rng, verify_rounds)
    else:
        raise ValueError(f"unknown domain {domain!r}; choose from {DOMAINS}")
    solution = "<think>" + "\n".join(lines) + "\n</think>" + f"The answer is {answer}."
    pid = f"{domain}-{hashlib.sha1(question.encode()).hexdigest()[:10]}"
    return Problem(pid, domain, question, solution, str(answer))


def stream(split: str, seed: int, long: bool = False, short_share: float = 0.0) -> Iterator[Problem]:
    """Endless problems of one split, deterministic by seed; domains alternate at random.

    ``short_share`` of the problems are short drills (no check round, arithmetic
    without the addend); ``long`` draws verification rounds from ``LONG_ROUNDS``.
    """
    if split not in _BUCKETS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    rng = random.Random(f"toyworld:{split}:{seed}:{long}")
    while True:
        domain = rng.choice(DOMAINS)
        if rng.random() < short_share:
            problem = make_problem(rng, domain, 0, with_addend=False)
        else:
            low, high = LONG_ROUNDS if long else SHORT_ROUNDS
            problem = make_problem(rng, domain, rng.randint(low, high))
        if split_of(problem.question) == split:
            yield problem


def _take(problems: Iterator[Problem], n: int) -> list[Problem]:
    out, seen = [], set()
    for problem in problems:
        if problem.question not in seen:
            seen.add(problem.question)
            out.append(problem)
            if len(out) == n:
                return out
    return out


def load_split(name: str, n: int | None = None, long: bool = False) -> list[Problem]:
    """The first ``n`` problems (default size when None) of a split; ``long`` gives the long variant."""
    if name not in _SPLIT_SEEDS:
        raise ValueError(f"unknown split {name!r}; choose from {tuple(_SPLIT_SEEDS)}")
    return _take(stream(name, _SPLIT_SEEDS[name], long), n or _DEFAULT_SIZES[name])


def fresh(seed: int, n: int, long: bool = False) -> list[Problem]:
    """A fresh problem set from any seed; its questions are in no other split."""
    return _take(stream("fresh", seed, long), n)
