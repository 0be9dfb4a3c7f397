"""Answer extraction and matching, on the real benchmark answers in ../shared/data."""

import json
from pathlib import Path

import pytest

from relaykit.answers import answers_match, extract_answer
from relaykit.evals.datasets import EvalProblem, load_dataset

DATA = Path(__file__).parents[2] / "shared" / "data"


def _rows(name: str) -> list[dict]:
    path = DATA / name / "test.jsonl"
    if not path.is_file():
        pytest.skip(f"benchmark data not found at {path} (expected ../shared/data next to the repo)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------------------ extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She has 3 + 4 = 7 apples.\n#### 7", "7"),
        ("It costs $<<2*500=1000>>1,000.\n#### 1,000", "1,000"),
        ("So $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("First \\boxed{3}, on reflection \\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}"),
        ("\\fbox{\\dfrac{3}{4}}", "\\dfrac{3}{4}"),
        ("so the answer is \\boxed 5.", "5"),
        ("The answer is 123.", "123"),
        ("Thus, the final answer is $\\frac{1}{2}$.\nThanks!", "\\frac{1}{2}"),
        ("the answer is 3.5", "3.5"),
        ("Answer: **42**", "42"),
        ("<think>maybe the answer is 4</think>The answer is 5. Done.", "5"),
        ("<think>I get \\boxed{4}</think>\nI am not sure.", "4"),
        ("\\boxed{never closed", None),
        ("No final statement here.", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_every_gsm8k_reference_yields_its_number():
    rows = _rows("gsm8k")
    assert len(rows) == 1319
    for row in rows:
        extracted = extract_answer(row["answer"])
        number = row["answer"].rsplit("####", 1)[1].strip()
        assert extracted == number
        assert answers_match(extracted, number.replace(",", ""))
        assert not answers_match(str(int(number.replace(",", "")) + 1), extracted)


def test_math500_answers_match_themselves_and_survive_boxing():
    rows = _rows("math500")
    assert len(rows) == 500
    for row in rows:
        answer = row["answer"]
        assert answers_match(answer, answer), answer
        boxed = extract_answer(f"Reasoning...\nThe result is $\\boxed{{{answer}}}$.")
        assert boxed == answer
        assert answers_match(boxed, answer), answer


@pytest.mark.parametrize("name", ["aime24", "aime25"])
def test_aime_answers(name):
    rows = _rows(name)
    assert len(rows) == 30
    for row in rows:
        answer = str(row["answer"])
        assert answers_match(extract_answer(f"The answer is {answer}."), answer)
        assert answers_match(f"0{answer}", answer)  # AIME answers are often written 3-digit padded
        assert not answers_match(str(int(answer) + 1), answer)


# -------------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("0.5", "\\frac{1}{2}"),
        ("\\frac34", "\\dfrac{3}{4}"),
        ("\\frac 59", "\\frac{5}{9}"),
        ("1000", "1,000"),
        ("11111111100", "11,\\! 111,\\! 111,\\! 100"),
        ("3.0", "3"),
        ("0.0000672", ".0000672"),
        ("10\\%", "10"),
        ("90", "90^\\circ"),
        ("\\frac{270}{7}", "\\frac{270}7\\text{ degrees}"),
        ("32348", "\\$32,\\!348"),
        ("5", "x=5"),
        ("C", "\\text{(C)}"),
        ("evelyn", "\\text{Evelyn}"),
        ("$11\\sqrt{2}$", "11\\sqrt2"),
        ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("\\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt{3}}{3}"),
        ("-q + p", "p - q"),
        ("\\{-2, 1+\\sqrt5, 1-\\sqrt5\\}", "\\{1\\pm\\sqrt{5},-2\\}"),
    ],
)
def test_equivalent_answers_match(prediction, reference):
    assert answers_match(prediction, reference)


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("2", "3"),
        ("\\frac{1}{3}", "0.33"),
        ("x^2", "x^3"),
        ("-5", "5"),
        ("1", "2k+2"),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}"),
        ("\\text{Navin}", "\\text{Evelyn}"),
        (None, "3"),
        ("", "3"),
    ],
)
def test_different_answers_do_not_match(prediction, reference):
    assert not answers_match(prediction, reference)


def test_matching_works_outside_the_main_thread():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(answers_match, "0.5", "\\frac{1}{2}").result()
        assert not pool.submit(answers_match, "x^2", "x^3").result()


# -------------------------------------------------------------------------------- datasets


@pytest.mark.parametrize(
    ("name", "count", "first_reference"),
    [("gsm8k", 1319, "18"), ("math500", 500, "\\left( 3, \\frac{\\pi}{2} \\right)"), ("aime24", 30, "204")],
)
def test_load_real_datasets(name, count, first_reference):
    _rows(name)
    problems = load_dataset(str(DATA / name / "test.jsonl"))
    assert len(problems) == count
    assert problems[0] == EvalProblem(
        id=f"{name}-0", prompt=problems[0].prompt, reference=first_reference, source=name
    )
    assert all(p.prompt and p.reference for p in problems)
    assert "####" not in "".join(p.reference for p in problems)
    assert len(load_dataset(str(DATA / name / "test.jsonl"), limit=7)) == 7


def test_gsm8k_references_drop_thousands_separators():
    _rows("gsm8k")
    references = [p.reference for p in load_dataset(str(DATA / "gsm8k" / "test.jsonl"))]
    assert all(r.lstrip("-").isdigit() for r in references)


def test_generic_keys_and_per_row_formats(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [
        {"prompt": "1+1?", "reference": "2"},
        {"question": "Two apples and three?", "answer": "2 + 3 = 5\n#### 5"},
        {"problem": "Half?", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "id": "half"},
        {"problem": "AIME", "answer": 33},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    problems = load_dataset(str(path))
    assert [p.reference for p in problems] == ["2", "5", "\\frac{1}{2}", "33"]
    assert [p.id for p in problems] == ["mixed-0", "mixed-1", "half", "mixed-3"]
    assert problems[1].prompt == "Two apples and three?"
    assert {p.source for p in problems} == {"mixed"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not a file"),
        ("", "no problems"),
        ('{"question": "a", "answer": "1"}\n{"question": "b", "answer": \n', "line 2 is not valid JSON"),
        ('[1, 2]\n', "line 1 is not a JSON object"),
        ('{"text": "a", "label": "1"}\n', "line 1: needs a prompt"),
        ('{"question": "a", "answer": "no marker ####"}\n', "could not find a final answer"),
    ],
)
def test_bad_files_raise_clear_value_errors(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_dataset(str(path))


@pytest.mark.parametrize("spec", ["toy:bogus", "toy:", "toy:long", "toy:fresh:abc", "toy:long:test:x",
                                  "toy:long:fresh:x", "toy:domains", "toy:domains:fresh:x"])
def test_unknown_toy_specs_raise(spec):
    with pytest.raises(ValueError, match="toy"):
        load_dataset(spec)


def test_toy_specs_load_the_toy_world():
    pytest.importorskip("relaykit.toyworld.tasks", reason="the toy world module is not written yet")
    test = load_dataset("toy:test", limit=5)
    assert len(test) == 5 and all(p.source == "toy:test" and p.reference for p in test)
    fresh = load_dataset("toy:fresh:7", limit=3)
    assert len(fresh) == 3 and fresh == load_dataset("toy:fresh:7", limit=3)
    long = load_dataset("toy:long:fresh:7", limit=2)
    assert long[0].source == "toy:long:fresh" and len(long[0].prompt) > 0 and long != fresh[:2]
    domains = load_dataset("toy:domains:test", limit=30)
    assert {p.domain for p in domains} == {"add", "sub", "mixed"}
    unseen = load_dataset("toy:domains:fresh:7", limit=30)
    assert (unseen == load_dataset("toy:domains:fresh:7", limit=30)
            and not {p.prompt for p in unseen} & {p.prompt for p in domains})
