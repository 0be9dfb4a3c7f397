"""Report outputs written from a hand-built results dict."""

import json
from html.parser import HTMLParser

from rich.console import Console

from relaykit.evals.report import markdown_table, rich_table, stack_labels, write_report
from relaykit.evals.trajectories import rich_trajectory


def _problem(pid, segments, correct):
    text = "".join(t for t, _ in segments)
    return {
        "id": pid,
        "prediction": "7" if correct else "8",
        "reference": "7",
        "correct": correct,
        "text": text,
        "segments": [list(s) for s in segments],
        "usage": {
            "small": {"prefill_tokens": 20, "decode_tokens": 30, "forward_calls": 30, "seconds": 0.1, "flops": 1e8},
            "large": {"prefill_tokens": 40, "decode_tokens": 10, "forward_calls": 5, "seconds": 0.4, "flops": 9e8},
        },
    }


def _strategy(accuracy, share, flops, wall, speedup, problems):
    return {
        "accuracy": accuracy,
        "large_token_share": share,
        "flops": flops,
        "tokens_generated": int(flops / 1e7),
        "wall_seconds": wall,
        "tokens_per_second": 100 / wall,
        "speedup_vs_large": speedup,
        "problems": problems,
    }


RELAY_SEGMENTS = [
    ("Q: 3+4? <b>&", "prompt"),
    ("Let me add: 3 + 4", "small"),
    (" = 7, so", "large"),
    (" the answer is \\boxed{7}.", "small"),
]
RESULTS = {
    "dataset": "toy:test",
    "n_problems": 2,
    "strategies": {
        "large": _strategy(1.0, 1.0, 2.0e9, 10.0, 1.0, [
            _problem("p0", [("Q: 3+4?", "prompt"), ("3 + 4 = 7.", "large")], True),
            _problem("p1", [("Q: 2*4?", "prompt"), ("It is 8.", "large")], True),
        ]),
        "small": _strategy(0.5, 0.0, 4.0e8, 2.5, None, [
            _problem("p0", [("Q: 3+4?", "prompt"), ("3 + 4 = 8.", "small")], False),
            _problem("p1", [("Q: 2*4?", "prompt"), ("It is 8.", "small")], True),
        ]),
        "relay": _strategy(1.0, 0.25, 8.0e8, 5.0, 2.0, [
            _problem("p0", RELAY_SEGMENTS, True),
            _problem("p1", [("Q: 2*4?", "prompt"), ("It is", "small"), (" 8.", "draft-2")], True),
        ]),
    },
}


class _Spans(HTMLParser):
    """Collects (class, data-model, text) of the spans inside <pre> blocks, one list per block."""

    def __init__(self):
        super().__init__()
        self.blocks, self._in_pre, self._span = [], False, None

    def handle_starttag(self, tag, attrs):
        if tag == "pre":
            self._in_pre = True
            self.blocks.append([])
        elif tag == "span" and self._in_pre:
            attrs = dict(attrs)
            self._span = [attrs.get("class"), attrs.get("data-model"), ""]

    def handle_endtag(self, tag):
        if tag == "pre":
            self._in_pre = False
        elif tag == "span" and self._span is not None:
            self.blocks[-1].append(tuple(self._span))
            self._span = None

    def handle_data(self, data):
        if self._span is not None:
            self._span[2] += data


def test_write_report(tmp_path):
    paths = write_report(RESULTS, tmp_path / "out")
    assert set(paths) == {"json", "markdown", "plot", "html"}
    assert all(p.parent == tmp_path / "out" and p.is_file() for p in paths.values())

    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(RESULTS))

    png = paths["plot"].read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000

    page = paths["html"].read_text()
    assert "<b>&" not in page and "&lt;b&gt;&amp;" in page
    assert "http://" not in page and "https://" not in page
    parser = _Spans()
    parser.feed(page)
    expected = [p["segments"] for s in RESULTS["strategies"].values() for p in s["problems"]]
    assert len(parser.blocks) == len(expected)
    for block, segments in zip(parser.blocks, expected):
        assert [(cls, model, text) for cls, model, text in block] == [
            (f"writer-{writer}", writer, text) for text, writer in segments
        ]
    for writer in ("prompt", "small", "large", "draft-2"):
        assert f".writer-{writer} {{ background:" in page
        assert f'data-model="{writer}">{writer}</span>' in page  # legend entry


def test_write_report_limits_problems(tmp_path):
    paths = write_report(RESULTS, tmp_path, max_problems=1)
    parser = _Spans()
    parser.feed(paths["html"].read_text())
    assert len(parser.blocks) == len(RESULTS["strategies"])


def test_markdown_table_has_one_row_per_strategy():
    lines = markdown_table(RESULTS).strip().splitlines()
    assert len(lines) == 2 + len(RESULTS["strategies"])
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines[2:]}
    assert list(rows) == ["large", "small", "relay"]
    assert rows["relay"] == ["100.0%", "25.0%", "0.0", "8.00e8 (0.40x)", "5.0", "20.0", "2.00x", "1.0", "-", "-",
                             "0.0%"]
    assert rows["small"][6] == "-"


def test_rich_outputs():
    trajectory = rich_trajectory(RELAY_SEGMENTS)
    assert trajectory.plain == "".join(t for t, _ in RELAY_SEGMENTS)
    styles = {trajectory.plain[span.start : span.end]: str(span.style) for span in trajectory.spans}
    assert styles["Let me add: 3 + 4"] == styles[" the answer is \\boxed{7}."]
    assert styles["Let me add: 3 + 4"] != styles[" = 7, so"]

    console = Console(width=160, record=True)
    console.print(rich_table(RESULTS))
    rendered = console.export_text()
    assert all(name in rendered for name in RESULTS["strategies"]) and "25.0%" in rendered


def test_rich_table_fits_80_columns():
    """Long variant names wrap; every figure stays whole on one line; nothing passes column 80."""
    results = {**RESULTS, "strategies": dict(RESULTS["strategies"])}
    for name in ("relaygen[speculative=8 draft_confidence=0.4]", "speculative-thinking", "relaygen[cues=Wait,|So]"):
        results["strategies"][name] = {**RESULTS["strategies"]["relay"], "switches_per_problem": 12.3,
                                       "wall_seconds": 1234.5, "tokens_per_second": 4321.0}
    for baseline in (True, False):
        shown = results if baseline else {**results, "strategies": {
            name: entry for name, entry in results["strategies"].items() if name != "large"}}
        console = Console(width=80, record=True)
        console.print(rich_table(shown))
        lines = console.export_text().splitlines()
        assert max(len(line) for line in lines) <= 80
        figures = ["100.0%", "25.0%", "12.3", "1234.5", "4321"] + (["0.40x", "2.00x"] if baseline else ["8.00e8"])
        assert all(any(figure in line for line in lines) for figure in figures)
        assert any("switch/pb: switches per problem" in line for line in lines)  # the legend, on one line
        text = " ".join(lines)
        assert "relaygen" in text and "draft_confidence=0.4" in text and "[cues=Wait,|So]" in text


def test_stack_labels_moves_coincident_labels_apart():
    same = (10.0, 100.0, 60.0, 112.0)
    shifts = stack_labels([same, same, same, (200.0, 100.0, 250.0, 112.0)], middle=50.0)
    assert shifts[0] == 0 and shifts[3] == 0  # the first and a distant label stay
    tops = sorted(same[1] + shift for shift in shifts[:3])
    assert all(upper - lower >= 12 for lower, upper in zip(tops, tops[1:]))  # one above another, none overlapping
    assert all(shift <= 0 for shift in shifts)  # above the middle: towards the centre
    assert stack_labels([(0.0, 0.0, 5.0, 5.0), (0.0, 0.0, 5.0, 5.0)], middle=50.0)[1] > 0
    assert stack_labels([(0.0, 0.0, 5.0, 5.0)], middle=50.0, obstacles=[(2.0, 2.0, 3.0, 3.0)]) == [4.0]  # off a point
