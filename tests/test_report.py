"""Report outputs written from a hand-built results dict."""

import json
from html.parser import HTMLParser

from rich.console import Console

from relaykit.evals.report import markdown_table, rich_table, rich_trajectory, write_report


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
    assert rows["relay"] == ["100.0%", "25.0%", "0.0", "8.00e8 (0.40x)", "5.0", "20.0", "2.00x"]
    assert rows["small"][-1] == "-"


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
