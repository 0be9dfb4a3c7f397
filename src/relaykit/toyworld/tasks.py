"""Synthetic reasoning tasks: problems with a chain of thought and a short final answer.

Both domains chain two hard steps, each a product of a two-digit number by a one-digit one (a
table of 540 entries that a large model learns and a small one only partly memorises): a first
product, then its last two digits times a second factor. Around them are easy steps: restating the
question, check rounds that restate every number, and summaries opened by varied discourse cues
(Wait, Again, Also, Alternatively, Now, Hence, So, Therefore, Thus). Difficulty therefore varies
inside one trajectory.

A check round reads ``Check 3. Again, 47 * 6 = 282 and 82 * 3 = 246.``: the counter counts down
from the number of checks asked for, the cue follows the previous round's cue in a fixed cycle, and
every round restates both steps in the order they were first written. So everything a round needs
is in the round just before it (at most 27 tokens back, which KV compression by recent attention
always keeps), and a copy from any earlier line is also right. (With forms that cycled through
other orders, toy-small recomputed "3 * 67 =" from its table instead of copying it, and after a
compression toy-large copied from a dropped line of the same form.)

- ``arith``: ``What is 47 * 6, then its last two digits * 3? Check it 2 times.``
- ``list``: ``Take the largest of 47, 81, 50, multiply it by 6, then its last two digits by 3. Check it 2 times.``

The domain-expert world (FusionRoute) has the same chains with other operations, each a skill the
shipped toy-large (the experts' shared base) never saw: ``add`` (``What is 47 + 6, then its last two
digits + 3?``), ``sub`` (``-`` twice) and ``mixed`` (one of each, in either order: a problem that needs
both experts' skills in one solution).

The worded world (``toy:worded``) has the same problems with one free choice: each restatement joins
its two steps with `` and ``, ``, `` or ``; `` at random. No other token of a solution is a choice, so a
pair trained on the plain world disagrees only where one model is wrong; in the worded world two
models may disagree and both be right (what a lenient check can forgive; benchmarks/RESULTS.md,
"RelayGen against speculative decoding").

The mixed-difficulty world (``toy:mixed``, for compute adapted to difficulty) draws each problem's
``level`` first: ``round`` (an ``arith`` or ``list`` chain whose first number is a multiple of ten,
so both products come from the 54 products of round numbers), ``chain`` (an ``arith`` chain of
any other number) or ``sort`` (a ``list`` problem without a round number).

Splits are a partition of question strings by hash, so no question is in two splits.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, replace
from typing import Iterator

DOMAINS = ("arith", "list")
EXPERT_DOMAINS = ("add", "sub", "mixed")  # the domain-expert world; "mixed" needs both operations
OPERATIONS = {"add": "+", "sub": "-"}  # the skill of each expert domain
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
# Check rounds: ordinary problems and the long variant (solutions of LONG_TOKENS tokens).
SHORT_ROUNDS = (2, 4)
LONG_ROUNDS = (56, 60)
MULTIPLIERS = (3, 8)  # the one-digit factors' range: 90 x 6 = 540 products to learn
ROUND_NUMBERS = tuple(range(10, 100, 10))
# The mixed world's levels, from the one a small model solves most often to the one it almost never
# does, and their shares of a mixed split: mostly easy, as served traffic is. A problem the small
# model answers alone costs it ~7% of the large model's FLOPs, one it escalates at least the large
# model's, so halving the cost needs the answered problems to carry over half of the FLOPs.
LEVELS = ("round", "chain", "sort")
LEVEL_SHARES = (0.6, 0.25, 0.15)

# The worded world's ways to join a restatement's two steps; the restatements are the lines a
# RelayGen cue hands to the small model.
JOINTS = (" and ", ", ", "; ")
# " and " between "= <number>" and "<number> <op> ": only the restatements join two steps so
_RESTATED_JOINT = re.compile(r"(?<== \d)(\d*) and (?=\d+ [-*+] )")

# The cue of check round j is _CHECK_CUES[j % 6].
_CHECK_CUES = ("Wait", "Again", "Also", "Alternatively", "Now", "Hence")


@dataclass(frozen=True)
class Problem:
    """One problem: the solution is ``<think>...</think>The answer is N.``"""

    id: str
    domain: str
    question: str
    solution: str
    answer: str
    level: str | None = None  # the mixed world's difficulty level (LEVELS)


def split_of(question: str) -> str:
    """The split a question belongs to (a hash partition of question strings)."""
    bucket = int(hashlib.sha1(question.encode()).hexdigest()[:8], 16) % 1000
    return next(name for name, rng in _BUCKETS.items() if bucket in rng)


@dataclass(frozen=True)
class _Chain:
    """a * b = first; its last two digits (tail) * c = second (or + and - in the expert world)."""

    a: int
    b: int
    c: int
    op1: str = "*"
    op2: str = "*"

    @property
    def first(self) -> int:
        return _apply(self.a, self.op1, self.b)

    @property
    def tail(self) -> int:
        return self.first % 100

    @property
    def second(self) -> int:
        return _apply(self.tail, self.op2, self.c)

    def restated(self) -> str:
        """Both steps in the order they were first written, so a copy can come from any earlier line."""
        return f"{self.a} {self.op1} {self.b} = {self.first} and {self.tail} {self.op2} {self.c} = {self.second}"

    def steps(self) -> list[str]:
        return [f"{self.a} {self.op1} {self.b} = {self.first}.", f"Its last two digits are {self.tail}.",
                f"Then {self.tail} {self.op2} {self.c} = {self.second}."]


def _apply(x: int, op: str, y: int) -> int:
    return x * y if op == "*" else x + y if op == "+" else x - y


def _factor(rng: random.Random) -> int:
    return rng.randint(*MULTIPLIERS)


def _chain(rng: random.Random, a: int | None = None, ops: tuple[str, str] = ("*", "*")) -> _Chain:
    """A chain whose first result's last two digits make a two-digit number (redrawn otherwise)."""
    while True:
        chain = _Chain(a if a is not None else rng.randint(10, 99), _factor(rng), _factor(rng), *ops)
        if chain.tail >= 10:
            return chain


def _checks(rounds: int, chain: _Chain) -> list[str]:
    """Rounds counting down from ``rounds``; round j has cue j mod 6 and restates both steps."""
    return [f"Check {rounds - j}. {_CHECK_CUES[j % len(_CHECK_CUES)]}, {chain.restated()}." for j in range(rounds)]


def _times(rounds: int) -> str:
    return "1 time" if rounds == 1 else f"{rounds} times"


def _arith(rng: random.Random, rounds: int, a: int | None = None) -> tuple[str, list[str], int]:
    chain = _chain(rng, a)
    a, b, c = chain.a, chain.b, chain.c
    first, *rest = chain.steps()
    lines = [f"We need {a} * {b}, then its last two digits * {c}.", f"First, {first}", *rest]
    lines.append(f"So the first product is {chain.first} and the second is {chain.second}.")
    lines += _checks(rounds, chain)
    lines.append(f"Therefore, {chain.restated()}.")
    return f"What is {a} * {b}, then its last two digits * {c}? Check it {_times(rounds)}.", lines, chain.second


def _list(rng: random.Random, rounds: int, round_number: bool | None = None) -> tuple[str, list[str], int]:
    """A list problem; ``round_number`` True redraws until the chosen number is round, False until
    no number in the list is."""
    while True:
        items = rng.sample(range(10, 100), 3)
        which = rng.choice(("largest", "smallest"))
        a = max(items) if which == "largest" else min(items)
        if round_number is None or (a % 10 == 0 if round_number else all(i % 10 for i in items)):
            break
    chain = _chain(rng, a)
    first, *rest = chain.steps()
    shown = ", ".join(map(str, items))
    lines = [f"The list is {shown}.", f"Sorted, it is {', '.join(map(str, sorted(items)))}.",
             f"Thus the {which} is {chain.a}."]
    lines += [f"Next, {first}", *rest]
    lines += _checks(rounds, chain)
    lines.append(f"Hence, {chain.restated()}.")
    question = (
        f"Take the {which} of {shown}, multiply it by {chain.b}, then its last two digits by {chain.c}. "
        f"Check it {_times(rounds)}."
    )
    return question, lines, chain.second


def _problem(domain: str, question: str, lines: list[str], answer: int) -> Problem:
    solution = "<think>" + "\n".join(lines) + "\n</think>" + f"The answer is {answer}."
    pid = f"{domain}-{hashlib.sha1(question.encode()).hexdigest()[:10]}"
    return Problem(pid, domain, question, solution, str(answer))


def reworded(problem: Problem) -> Problem:
    """The worded world's version of a problem: each restatement's joint drawn at random (from a
    generator seeded by the question, so a problem keeps its question and answer)."""
    rng = random.Random(f"toyworld:worded:{problem.question}")
    solution = _RESTATED_JOINT.sub(lambda m: m.group(1) + rng.choice(JOINTS), problem.solution)
    return replace(problem, solution=solution)


def make_problem(rng: random.Random, domain: str, verify_rounds: int) -> Problem:
    """Draw one problem of a domain with ``verify_rounds`` check rounds."""
    if domain == "arith":
        question, lines, answer = _arith(rng, verify_rounds)
    elif domain == "list":
        question, lines, answer = _list(rng, verify_rounds)
    else:
        raise ValueError(f"unknown domain {domain!r}; choose from {DOMAINS}")
    return _problem(domain, question, lines, answer)


def level_problem(rng: random.Random, level: str, verify_rounds: int) -> Problem:
    """One problem of the mixed world's ``level`` (``LEVELS``)."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; choose from {LEVELS}")
    domain = "list" if level == "sort" or (level == "round" and rng.random() < 0.5) else "arith"
    if domain == "arith":
        a = rng.choice(ROUND_NUMBERS if level == "round" else [a for a in range(10, 100) if a % 10])
        question, lines, answer = _arith(rng, verify_rounds, a)
    else:
        question, lines, answer = _list(rng, verify_rounds, round_number=level == "round")
    return replace(_problem(domain, question, lines, answer), level=level)


def expert_problem(rng: random.Random, domain: str, verify_rounds: int) -> Problem:
    """One problem of the domain-expert world (``EXPERT_DOMAINS``), written as ``arith`` is."""
    if domain == "mixed":
        ops = tuple(rng.sample(sorted(OPERATIONS.values()), 2))
    elif domain in OPERATIONS:
        ops = (OPERATIONS[domain],) * 2
    else:
        raise ValueError(f"unknown domain {domain!r}; choose from {EXPERT_DOMAINS}")
    chain = _chain(rng, ops=ops)
    first, *rest = chain.steps()
    lines = [f"We need {chain.a} {chain.op1} {chain.b}, then its last two digits {chain.op2} {chain.c}.",
             f"First, {first}", *rest]
    lines.append(f"So the first result is {chain.first} and the second is {chain.second}.")
    lines += _checks(verify_rounds, chain)
    lines.append(f"Therefore, {chain.restated()}.")
    question = (f"What is {chain.a} {chain.op1} {chain.b}, then its last two digits {chain.op2} {chain.c}? "
                f"Check it {_times(verify_rounds)}.")
    return _problem(domain, question, lines, chain.second)


def _drill(rng: random.Random, domain: str, op: str) -> Problem:
    a, b = rng.randint(10, 99), _factor(rng)
    result = _apply(a, op, b)
    lines = [f"We need {a} {op} {b}.", f"First, {a} {op} {b} = {result}.", f"Therefore, {a} {op} {b} = {result}."]
    return _problem(domain, f"What is {a} {op} {b}?", lines, result)


def operation_drill(rng: random.Random, domain: str) -> Problem:
    """A training drill on one expert domain's step alone: ``What is 47 + 6?``."""
    return _drill(rng, domain, OPERATIONS[domain])


def expert_stream(split: str, seed: int, domains: tuple[str, ...] = EXPERT_DOMAINS,
                  drill_share: float = 0.0) -> Iterator[Problem]:
    """Endless problems of the domain-expert world drawn from `domains`, deterministic by seed;
    ``drill_share`` of them are drills of the problem's domain (of one of its operations when mixed)."""
    if split not in _BUCKETS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    rng = random.Random(f"toyworld:experts:{split}:{seed}:{','.join(domains)}")
    while True:
        domain = rng.choice(domains)
        if rng.random() < drill_share:
            problem = operation_drill(rng, rng.choice(sorted(OPERATIONS)) if domain == "mixed" else domain)
        else:
            problem = expert_problem(rng, domain, rng.randint(*SHORT_ROUNDS))
        if split_of(problem.question) == split:
            yield problem


def product_drill(rng: random.Random) -> Problem:
    """A training drill on the hard step alone: ``What is 47 * 6?``."""
    return _drill(rng, "arith", "*")


def stream(split: str, seed: int, long: bool = False, drill_share: float = 0.0, round_share: float = 0.0,
           worded: bool = False) -> Iterator[Problem]:
    """Endless problems of one split, deterministic by seed; domains alternate at random.

    ``drill_share`` of the problems are product drills, ``round_share`` of the others come from the
    mixed world's ``round`` level; ``long`` draws check rounds from ``LONG_ROUNDS``; ``worded``: the
    worded world's versions of the same problems.
    """
    if split not in _BUCKETS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    rng = random.Random(f"toyworld:{split}:{seed}:{long}")
    while True:
        domain = rng.choice(DOMAINS)
        low, high = LONG_ROUNDS if long else SHORT_ROUNDS
        if rng.random() < drill_share:
            problem = product_drill(rng)
        elif round_share and rng.random() < round_share:  # no draw at 0: the older streams stay as they were
            problem = level_problem(rng, "round", rng.randint(low, high))
        else:
            problem = make_problem(rng, domain, rng.randint(low, high))
        if split_of(problem.question) == split:
            yield reworded(problem) if worded else problem


def level_stream(split: str, seed: int, level: str) -> Iterator[Problem]:
    """Endless problems of one level of the mixed world, deterministic by seed."""
    if split not in _BUCKETS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    rng = random.Random(f"toyworld:mixed:{split}:{seed}:{level}")
    while True:
        problem = level_problem(rng, level, rng.randint(*SHORT_ROUNDS))
        if split_of(problem.question) == split:
            yield problem


def _mixed(split: str, seed: int, n: int) -> list[Problem]:
    """``n`` problems, each level's share of them (``LEVEL_SHARES``) exact, in a seeded shuffle."""
    counts = [round(n * share) for share in LEVEL_SHARES[1:]]
    counts.insert(0, n - sum(counts))
    problems = [p for level, k in zip(LEVELS, counts) for p in _take(level_stream(split, seed, level), k)]
    random.Random(f"toyworld:mixed:{split}:{seed}").shuffle(problems)
    return problems


def _take(problems: Iterator[Problem], n: int) -> list[Problem]:
    out, seen = [], set()
    for problem in problems:
        if problem.question not in seen:
            seen.add(problem.question)
            out.append(problem)
            if len(out) == n:
                return out
    return out


def load_split(name: str, n: int | None = None, long: bool = False, worded: bool = False) -> list[Problem]:
    """The first ``n`` problems (default size when None) of a split; ``long`` gives the long variant,
    ``worded`` the worded world's."""
    if name not in _SPLIT_SEEDS:
        raise ValueError(f"unknown split {name!r}; choose from {tuple(_SPLIT_SEEDS)}")
    return _take(stream(name, _SPLIT_SEEDS[name], long, worded=worded), n or _DEFAULT_SIZES[name])


def fresh(seed: int, n: int, long: bool = False, worded: bool = False) -> list[Problem]:
    """A fresh problem set from any seed; its questions are in no other split."""
    return _take(stream("fresh", seed, long, worded=worded), n)


def load_expert_split(name: str, n: int | None = None) -> list[Problem]:
    """The first ``n`` problems of a split of the domain-expert world (domains at random)."""
    if name not in _SPLIT_SEEDS:
        raise ValueError(f"unknown split {name!r}; choose from {tuple(_SPLIT_SEEDS)}")
    return _take(expert_stream(name, _SPLIT_SEEDS[name]), n or _DEFAULT_SIZES[name])


def fresh_experts(seed: int, n: int) -> list[Problem]:
    """Fresh problems of the domain-expert world from any seed (in no other split)."""
    return _take(expert_stream("fresh", seed), n)


def load_mixed_split(name: str, n: int | None = None) -> list[Problem]:
    """``n`` problems of a split of the mixed world, each level at its share."""
    if name not in _SPLIT_SEEDS:
        raise ValueError(f"unknown split {name!r}; choose from {tuple(_SPLIT_SEEDS)}")
    return _mixed(name, _SPLIT_SEEDS[name], n or _DEFAULT_SIZES[name])


def fresh_mixed(seed: int, n: int) -> list[Problem]:
    """Fresh problems of the mixed world from any seed (in no other split), each level at its share."""
    return _mixed("fresh", seed, n)
