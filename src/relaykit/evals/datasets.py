"""Evaluation problems from JSONL files (GSM8K, MATH-500, AIME and similar) or the toy world."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from relaykit.errors import RelaykitError

from ..answers import extract_answer

_PROMPT_KEYS = ("prompt", "question", "problem")
_REFERENCE_KEYS = ("answer", "reference", "solution")
_ID_KEYS = ("id", "unique_id")
_TOY_SPLITS = ("test", "dev", "calibration")
_TOY_FAMILIES = ("long", "domains", "mixed", "worded")
_FRESH_DEFAULT_N = 100
# New tokens a dataset's solutions need (`--max-new-tokens` overrides): the toy world's solutions run
# to ~250 tokens, the long variant's to 1,716 (56-60 check rounds); benchmark files are for reasoning
# models, whose traces run to thousands of tokens, so a run that cuts them says so in its report
TOY_BUDGET = 512
TOY_LONG_BUDGET = 2048
FILE_BUDGET = 4096


class DatasetError(RelaykitError, ValueError):
    """A dataset spec that cannot be loaded; the message says why."""


@dataclass
class EvalProblem:
    """One problem: the prompt given to the model and the reference final answer."""

    id: str
    prompt: str
    reference: str
    source: str
    domain: str | None = None  # the toy world's domain (reports give accuracy per domain)
    level: str | None = None  # the mixed toy world's difficulty level (reports give accuracy per level)


def load_dataset(spec: str, limit: int | None = None) -> list[EvalProblem]:
    """Problems named by `spec`, at most `limit` of them.

    `spec` is a JSONL path (each row has a prompt under prompt/question/problem and an answer under
    answer/reference/solution; GSM8K's `#### N` and full `\\boxed{}` solutions are reduced to the
    final answer), `toy:SPLIT` / `toy:long:SPLIT` / `toy:domains:SPLIT` (the domain-expert world of
    FusionRoute) / `toy:mixed:SPLIT` (levels of difficulty) / `toy:worded:SPLIT` (restatements
    worded at random) for SPLIT in test, dev, calibration, or `toy:fresh:SEED` (or after any of those
    families: `toy:mixed:fresh:SEED`, ...) for newly generated toy problems (`limit` of them, default 100).
    Raises DatasetError (a ValueError) with a one-line reason.
    """
    if limit is not None and limit < 0:
        raise DatasetError(f"limit must be >= 0, got {limit}")
    if spec.startswith("toy:"):
        return _load_toy(spec, limit)
    return _load_jsonl(Path(spec), limit)


def token_budget(spec: str) -> int:
    """The new-token budget that fits the solutions of dataset `spec` (see `load_dataset`)."""
    if spec.startswith("toy:"):
        return TOY_LONG_BUDGET if spec.split(":")[1] == "long" else TOY_BUDGET
    return FILE_BUDGET


def _load_jsonl(path: Path, limit: int | None) -> list[EvalProblem]:
    if not path.is_file():
        raise DatasetError(
            f"unknown dataset {str(path)!r}: not a file (give a .jsonl path, toy:SPLIT or toy:fresh:SEED)"
        )
    source = path.parent.name if path.stem in ("test", "train", "dev", "validation") else path.stem
    problems: list[EvalProblem] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if limit is not None and len(problems) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}: line {number} is not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}: line {number} is not a JSON object")
            problems.append(_problem_from_row(row, f"{path}: line {number}", source, len(problems)))
    if not problems and limit != 0:
        raise DatasetError(f"{path}: no problems in the file")
    return problems


def _problem_from_row(row: dict, where: str, source: str, index: int) -> EvalProblem:
    prompt = _first(row, _PROMPT_KEYS)
    answer = _first(row, _REFERENCE_KEYS)
    if prompt is None or answer is None:
        raise DatasetError(
            f"{where}: needs a prompt ({'/'.join(_PROMPT_KEYS)}) and an answer "
            f"({'/'.join(_REFERENCE_KEYS)}); found keys {sorted(row)}"
        )
    answer = str(answer).strip()
    if "####" in answer:
        reference = (extract_answer(answer) or "").replace(",", "")
    elif "\\boxed" in answer or "\\fbox" in answer:
        reference = extract_answer(answer) or ""
    else:
        reference = answer
    if not reference:
        raise DatasetError(f"{where}: could not find a final answer in {answer[-80:]!r}")
    row_id = _first(row, _ID_KEYS)
    return EvalProblem(
        id=str(row_id) if row_id is not None else f"{source}-{index}",
        prompt=str(prompt),
        reference=reference,
        source=source,
    )


def _first(row: dict, keys: tuple[str, ...]):
    for key in keys:
        if row.get(key) not in (None, ""):
            return row[key]
    return None


def _load_toy(spec: str, limit: int | None) -> list[EvalProblem]:
    parts = spec.split(":")[1:]
    family = parts.pop(0) if parts and parts[0] in _TOY_FAMILIES else None
    seed = None
    if len(parts) == 2 and parts[0] == "fresh":
        try:
            seed = int(parts[1])
        except ValueError:
            raise DatasetError(f"{spec!r}: the seed in toy:fresh:SEED must be an integer") from None
    elif not (len(parts) == 1 and parts[0] in _TOY_SPLITS):
        raise DatasetError(
            f"unknown dataset {spec!r}: use toy:SPLIT or toy:fresh:SEED, or either after toy:long:, "
            f"toy:domains:, toy:mixed: or toy:worded: (SPLIT in {', '.join(_TOY_SPLITS)})"
        )
    try:
        from relaykit.toyworld import tasks
    except ImportError as error:
        raise DatasetError(f"{spec!r}: the toy world is not available ({error})") from None
    n = _FRESH_DEFAULT_N if seed is not None and limit is None else limit
    if family == "domains":
        toy = tasks.fresh_experts(seed, n) if seed is not None else tasks.load_expert_split(parts[0], n)
    elif family == "mixed":
        toy = tasks.fresh_mixed(seed, n) if seed is not None else tasks.load_mixed_split(parts[0], n)
    elif seed is not None:
        toy = tasks.fresh(seed, n, long=family == "long", worded=family == "worded")
    else:
        toy = tasks.load_split(parts[0], n=n, long=family == "long", worded=family == "worded")
    source = spec if seed is None else f"toy:{family}:fresh" if family else "toy:fresh"
    problems = [
        EvalProblem(id=str(p.id), prompt=p.question, reference=str(p.answer), source=source, domain=p.domain,
                    level=p.level)
        for p in toy
    ]
    return problems if limit is None else problems[:limit]
