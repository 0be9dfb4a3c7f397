"""Final answers: pull them out of model outputs and reference solutions, and compare them.

`extract_answer` understands GSM8K's `#### N`, LaTeX `\\boxed{...}` / `\\fbox{...}` and
"the (final) answer is ..." sentences. `answers_match` first compares normalised strings, then
asks math-verify whether the two expressions are mathematically equal.
"""

from __future__ import annotations

import re
import threading
from decimal import Decimal, InvalidOperation

_THINK_END = "</think>"
_GSM8K = re.compile(r"####\s*([^\n]+)")
_BOX = re.compile(r"\\(?:boxed|fbox)\b")
_ANSWER_IS = re.compile(
    r"\b(?:final\s+answer|answer)\s*(?:is\s*:?|:)\s*(.+?)(?:\.(?=\s)|\n|$)", re.IGNORECASE
)


def extract_answer(text: str) -> str | None:
    """The final answer in `text`, or None.

    Looks after the last `</think>` first, then in the whole text. Within a text the order is:
    the last `#### ...` line, the last `\\boxed{...}` (or `\\fbox{...}`), the last
    "the answer is ..." sentence.
    """
    if not text:
        return None
    if _THINK_END in text:
        found = _extract(text.rsplit(_THINK_END, 1)[1])
        if found is not None:
            return found
    return _extract(text)


def _extract(text: str) -> str | None:
    for finder in (_last_gsm8k, _last_boxed, _last_answer_sentence):
        found = finder(text)
        if found:
            return found
    return None


def _last_gsm8k(text: str) -> str | None:
    matches = _GSM8K.findall(text)
    return _clean(matches[-1]) if matches else None


def _last_boxed(text: str) -> str | None:
    for match in reversed(list(_BOX.finditer(text))):
        content = _braced_or_token(text, match.end())
        if content:
            return content.strip()
    return None


def _braced_or_token(text: str, start: int) -> str | None:
    """The balanced `{...}` group starting at `start` (after spaces), or `\\boxed 5`'s bare token."""
    i = start
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j]
        return None
    if i > start:
        token = re.match(r"[^\s$]+", text[i:])
        return _clean(token.group(0)) if token else None
    return None


def _last_answer_sentence(text: str) -> str | None:
    matches = _ANSWER_IS.findall(text)
    return _clean(matches[-1]) if matches else None


def _clean(answer: str) -> str | None:
    """Strip surrounding spaces, `$`, markdown bold and a sentence-ending period."""
    answer = answer.strip().strip("*").strip()
    return answer.rstrip(".").strip().strip("$").strip() or None


# ---------------------------------------------------------------------------------- matching

_SPACING = re.compile(r"(\\\\)|\\[!,;: ]|\\q?quad|\\displaystyle")
_TEXT_MACRO = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree|\s*degrees?\b")
_FRAC_SHORT = re.compile(r"\\frac\s*(\{[^{}]*\}|\d)\s*(\{[^{}]*\}|\d)")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d+|[a-zA-Z])")
_GROUPED_NUMBER = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_CHOICE = re.compile(r"\(([A-Ea-e])\)")
_VARIABLE_EQUALS = re.compile(r"[a-zA-Z]=([^=]+)")


def normalize_answer(answer: str) -> str:
    """A canonical string for `answer`: no `$`, `\\text{}`, spacing macros, `\\left`/`\\right`,
    degree signs, percent signs or spaces; `\\dfrac`->`\\frac`, `\\frac34`->`\\frac{3}{4}`;
    numbers without thousands separators or trailing zeros; "x=5"->"5"; "(C)"->"C"."""
    s = answer.strip().strip("$")
    s = _SPACING.sub(lambda m: m.group(1) or " ", s)  # keeps `\\` row breaks
    s = _TEXT_MACRO.sub(r"\1", s)
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _DEGREES.sub("", s)
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = re.sub(r"\s+", "", s)
    s = _FRAC_SHORT.sub(lambda m: "\\frac" + _braced(m.group(1)) + _braced(m.group(2)), s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    equals = _VARIABLE_EQUALS.fullmatch(s)
    if equals:
        s = equals.group(1)
    choice = _CHOICE.fullmatch(s)
    if choice:
        s = choice.group(1).upper()
    if _GROUPED_NUMBER.fullmatch(s):
        s = s.replace(",", "")
    if _PLAIN_NUMBER.fullmatch(s):
        s = _canonical_number(s)
    if s.isalpha():
        s = s.lower()
    return s


def _braced(group: str) -> str:
    return group if group.startswith("{") else "{" + group + "}"


def _canonical_number(s: str) -> str:
    try:
        value = Decimal(s)
    except InvalidOperation:
        return s
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "+0") else text


def answers_match(prediction: str | None, reference: str) -> bool:
    """Whether `prediction` states the same answer as `reference` (None never matches)."""
    if prediction is None or not prediction.strip():
        return False
    if normalize_answer(prediction) == normalize_answer(reference):
        return True
    return _math_verify(prediction, reference)


def _math_verify(prediction: str, reference: str) -> bool:
    """math-verify's judgement. Its timeouts use SIGALRM, which only works in the main thread,
    so other threads run it without a timeout."""
    from math_verify import parse, verify

    seconds = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold = parse(_boxed(reference), parsing_timeout=seconds)
        target = parse(_boxed(prediction), parsing_timeout=seconds)
        if not gold or not target:
            return False
        return bool(verify(gold, target, timeout_seconds=seconds))
    except Exception:  # math-verify raises a variety of sympy and timeout errors
        return False


def _boxed(answer: str) -> str:
    return "\\boxed{" + answer.strip().strip("$") + "}"
