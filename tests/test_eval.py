"""`relaykit eval`: several strategies in one run, results.json fields, report files."""

import json

from test_loading import run_cli


def test_eval_writes_results_for_every_strategy(tmp_path, checkpoints):
    data = tmp_path / "mini.jsonl"
    rows = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(5)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    done = run_cli(
        "eval", "--strategy", "small,speculative", "--dataset", str(data), "--limit", "4", "--out", str(out),
        "--max-new-tokens", "10", "--batch-size", "3", "--k", "2",
        "--large", str(checkpoints[("llama", "large")]), "--small", str(checkpoints[("llama", "small")]),
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["n_problems"] == 4
    assert list(results["strategies"]) == ["large", "small", "speculative"]  # the baseline is added
    for name, entry in results["strategies"].items():
        for key in ("accuracy", "large_token_share", "flops", "wall_seconds", "tokens_per_second", "speedup_vs_large"):
            assert entry[key] is not None, (name, key)
        assert len(entry["problems"]) == 4
        for problem in entry["problems"]:
            assert {"prediction", "reference", "correct", "usage", "segments"} <= set(problem)
    assert results["strategies"]["large"]["speedup_vs_large"] == 1.0
    assert results["strategies"]["large"]["large_token_share"] == 1.0
    assert results["strategies"]["small"]["large_token_share"] == 0.0
    assert [p["reference"] for p in results["strategies"]["small"]["problems"]] == ["0", "2", "4", "6"]
    for name in ("results.md", "plot.png", "trajectories.html"):
        assert (out / name).stat().st_size > 0


def test_results_give_accuracy_per_level_on_the_mixed_world(tmp_path, checkpoints):
    out = tmp_path / "out"
    done = run_cli("eval", "--strategy", "small", "--dataset", "toy:mixed:test", "--limit", "6", "--out", str(out),
                   "--max-new-tokens", "4", "--large", str(checkpoints[("llama", "large")]),
                   "--small", str(checkpoints[("llama", "small")]))
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    for entry in results["strategies"].values():
        levels = entry["by_level"]
        assert sorted(levels) == ["chain", "round", "sort"] and sum(v["problems"] for v in levels.values()) == 6
        for level, figures in levels.items():
            right = [p["correct"] for p in entry["problems"] if p["level"] == level]
            assert figures["accuracy"] == sum(right) / len(right)
    assert "Accuracy per level" in (out / "results.md").read_text()


def test_eval_rejects_options_no_strategy_has(tmp_path, checkpoints):
    done = run_cli("eval", "--strategy", "large", "--k", "3", "--large", str(checkpoints[("llama", "large")]),
                   "--dataset", "toy:test", "--limit", "1", "--out", str(tmp_path))
    assert done.returncode == 2 and "--k" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("eval", "--strategy", "nonsense", "--dataset", "toy:test", "--out", str(tmp_path))
    assert done.returncode == 2 and "unknown strategy" in done.stderr


def test_demo_html_colours_each_span_by_its_model(tmp_path, checkpoints):
    from html.parser import HTMLParser

    out = tmp_path / "demo"
    done = run_cli(
        "demo", "--limit", "2", "--max-new-tokens", "12", "--out", str(out),
        "--large", str(checkpoints[("llama", "large")]), "--small", str(checkpoints[("llama", "small")]),
    )
    assert done.returncode == 0, done.stderr
    assert "speculative" in done.stdout and str(out / "trajectories.html") in done.stdout.replace("\n", "")

    class Spans(HTMLParser):
        def __init__(self):
            super().__init__()
            self.spans, self.model, self.in_pre = [], None, False

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            self.in_pre |= tag == "pre"
            if tag == "span" and "data-model" in attrs and self.in_pre:  # trajectories, not the legend
                assert attrs["class"] == f"writer-{attrs['data-model']}"
                self.model = attrs["data-model"]
                self.spans.append([self.model, ""])

        def handle_endtag(self, tag):
            if tag == "span":
                self.model = None
            if tag == "pre":
                self.in_pre = False

        def handle_data(self, data):
            if self.model:
                self.spans[-1][1] += data

    parser = Spans()
    parser.feed((out / "trajectories.html").read_text())
    results = json.loads((out / "results.json").read_text())
    expected = [
        [writer, text]
        for entry in results["strategies"].values()
        for problem in entry["problems"]
        for text, writer in problem["segments"]
    ]
    assert parser.spans == expected
    assert {"small", "large"} <= {model for model, _ in parser.spans}


def test_strategy_variants_run_side_by_side(tmp_path, checkpoints):
    """NAME[option=value ...]: one strategy with different options in one run (ablations)."""
    out = tmp_path / "out"
    done = run_cli(
        "eval", "--strategy", "relaygen[cues=none],relaygen[cues=Wait,|So min_large_tokens=2],speculative[k=2]",
        "--dataset", "toy:test", "--limit", "2", "--out", str(out), "--max-new-tokens", "12", "--cues", "all",
        "--large", str(checkpoints[("llama", "large")]), "--small", str(checkpoints[("llama", "small")]),
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    names = ["large", "relaygen[cues=none]", "relaygen[cues=Wait,|So min_large_tokens=2]", "speculative[k=2]"]
    assert list(results["strategies"]) == names
    assert all("switches_per_problem" in entry for entry in results["strategies"].values())
    for bad, message in (("relaygen[colour=red]", "has no option 'colour'"),
                         ("relaygen[speculative=x]", "takes int values")):
        done = run_cli("eval", "--strategy", bad, "--dataset", "toy:test", "--limit", "1", "--out", str(out),
                       "--large", str(checkpoints[("llama", "large")]), "--small", str(checkpoints[("llama", "small")]))
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_a_sweep_gives_one_variant_per_power_of_two_and_a_curve(tmp_path, checkpoints):
    """NAME[n=1..4]: n = 1, 2, 4 side by side; the report joins them as one curve against FLOPs
    and generated tokens."""
    out = tmp_path / "out"
    done = run_cli(
        "eval", "--strategy", "best-of-n[n=1..4 inner=small]", "--dataset", "toy:test", "--limit", "2",
        "--out", str(out), "--max-new-tokens", "8", "--temperature", "1.0", "--seed", "0",
        "--large", str(checkpoints[("llama", "large")]), "--small", str(checkpoints[("llama", "small")]),
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert list(results["strategies"]) == ["large"] + [f"best-of-n[n={n} inner=small]" for n in (1, 2, 4)]
    (curve,) = results["curves"].values()
    assert [p["n"] for p in curve] == [1, 2, 4] and [p["samples_per_problem"] for p in curve] == [1, 2, 4]
    assert curve[0]["tokens_generated"] < curve[1]["tokens_generated"] < curve[2]["tokens_generated"]
    assert "Curve of best-of-n[n=N" in (out / "results.md").read_text()


def test_train_prober_and_verifier_fine_tune_the_small_model(tmp_path, checkpoints):
    for what in ("prober", "verifier"):
        out = tmp_path / what
        done = run_cli("train", what, "--steps", "2", "--out", str(out),
                       "--small", str(checkpoints[("llama", "small")]))
        assert done.returncode == 0, done.stderr
        assert ((out / "model.safetensors").is_file()
                and json.loads((out / "report.json").read_text())["config"]["train"]["steps"] == 2)
    for what in ("prober", "difficulty"):
        done = run_cli("train", what, "--steps", "0", "--out", str(tmp_path / "none"))
        assert done.returncode == 2 and "--steps must be >= 1" in done.stderr and "Traceback" not in done.stderr
