"""Tuned settings: a bare strategy name runs the settings calibrated for its pair, naming a tuned
option runs the defaults, a strategy whose default could lose the answer is refused without them;
token budgets that fit the data, and the report's flag for answers cut by the budget."""

from __future__ import annotations

import json

import pytest

from relaykit import api
from relaykit.calibrate.settings import LOOKUP, TIE, SettingsCalibration, calibrate_settings
from relaykit.errors import RelaykitError
from relaykit.evals.datasets import token_budget
from relaykit.evals.report import CUT_NOTE, markdown_table
from relaykit.toyworld import TOY_LARGE, TOY_SMALL, load_split
from relaykit.tuned import find_tuned, load_tuned, settings_path, write_tuned
from test_loading import run_cli


def test_the_shipped_pair_ships_tuned_settings_and_a_bare_name_runs_them(shipped_pair):
    tuned = api.tuned_settings(None, None)
    assert tuned is not None and tuned.path == settings_path(str(TOY_LARGE))
    for name in ("speculative", "relaygen", "lookup", "adaptive", "early-exit"):
        options = tuned.entry(name)["options"]
        strategy = api.build_strategy(name, shipped_pair, tuned=tuned)
        assert {key: getattr(strategy.config, key) for key in options} == options
        assert strategy.settings.source == f"tuned: {tuned.path}"


def test_naming_a_tuned_option_runs_the_defaults_with_it(shipped_pair):
    tuned = api.tuned_settings(None, None)
    strategy = api.build_strategy("speculative[k=6]", shipped_pair, tuned=tuned)
    assert (strategy.config.k, strategy.config.draft_confidence) == (6, 0.0)
    assert strategy.settings.source == "given"
    assert api.build_strategy("speculative", shipped_pair, {"k": 6}, tuned=tuned).config.draft_confidence == 0.0
    # options the strategy does not tune leave the tuned settings on
    exit_rule = api.build_strategy("early-exit[inner=large]", shipped_pair, tuned=tuned)
    assert exit_rule.config.probe_model == tuned.entry("early-exit")["options"]["probe_model"]
    assert api.build_strategy("speculative", shipped_pair).settings.source == "defaults"  # no tuned settings given


def test_early_exit_without_tuned_settings_is_refused_not_run(shipped_pair, tmp_path):
    with pytest.raises(RelaykitError,
                       match=r"early-exit has no settings tuned .*early-exit\[probe_model=large threshold=0.95\]"):
        api.build_strategy("early-exit", shipped_pair)
    api.build_strategy("early-exit[threshold=0.95]", shipped_pair)  # a rule named is run as asked
    path = write_tuned(tmp_path / "settings.json", str(TOY_LARGE), str(TOY_SMALL),
                       {"early-exit": {"refused": "every setting tried lost accuracy"}})
    with pytest.raises(RelaykitError, match="no setting kept the large model's accuracy"):
        api.build_strategy("early-exit[inner=large]", shipped_pair, tuned=load_tuned(path))


def test_settings_are_found_beside_the_large_model_for_its_own_small_model(tmp_path, checkpoints):
    large, small, other = (str(checkpoints[key])
                           for key in (("llama", "large"), ("llama", "small"), ("qwen2", "small")))
    assert find_tuned(large, small) is None
    write_tuned(settings_path(large), large, small, {"lookup": {"options": {"k": 7}}})
    try:
        assert find_tuned(large, small).entry("lookup") == {"options": {"k": 7}}
        assert json.loads(settings_path(large).read_text())["small"] == "../llama-small"  # moves with the models
        assert find_tuned(large, other) is None  # measured with another small model
        assert find_tuned(large, small, "none") is None
        write_tuned(settings_path(large), large, small, {"speculative": {"options": {"k": 9}}})  # one strategy again
        assert set(find_tuned(large, small).strategies) == {"lookup", "speculative"}
        models = api.load_models({"large": large, "small": small})
        assert api.build_strategy("lookup", models, tuned=api.tuned_for(models)).config.k == 7
    finally:
        settings_path(large).unlink()
    with pytest.raises(RelaykitError, match="no settings file"):
        find_tuned(large, small, str(tmp_path / "missing.json"))


def test_calibration_keeps_the_fastest_setting_at_the_large_models_accuracy(shipped_pair):
    calibration = SettingsCalibration(dataset="toy:calibration", limit=3, strategies=("lookup",))
    entry = calibrate_settings(shipped_pair, calibration, progress=lambda line: None)["lookup"]
    assert [c["options"] for c in entry["candidates"]] == LOOKUP
    assert all(c["accuracy"] == entry["large_accuracy"] for c in entry["candidates"])  # greedy lookup is exact
    fastest = max(c["speedup_vs_large"] for c in entry["candidates"])
    ties = [c for c in entry["candidates"] if c["speedup_vs_large"] >= (1 - TIE) * fastest]
    assert entry["options"] == min(ties, key=lambda c: c["flops_vs_large"])["options"]


def test_token_budgets_fit_the_longest_solutions(shipped_pair):
    tokenizer = shipped_pair["large"].tokenizer
    for spec, long in (("toy:test", False), ("toy:long:test", True)):
        longest = max(len(tokenizer(p.solution)["input_ids"]) for p in load_split("test", 50, long=long))
        assert longest < token_budget(spec) < 2 * longest + 512


def test_a_report_flags_answers_cut_by_the_budget(shipped_pair):
    strategies = api.build_strategies(["large"], shipped_pair, stop=api.sampling_and_stop(max_new_tokens=6)[1])
    results, _ = api.evaluate_strategies(strategies, "toy:test", limit=2)
    entry = results["strategies"]["large"]
    assert entry["length_stops"] == 1.0 and entry["cut_by_length"] and entry["max_new_tokens"] == 6
    assert CUT_NOTE in markdown_table(results)
    fits = api.build_strategies(["large"], shipped_pair,
                                stop=api.sampling_and_stop(max_new_tokens=token_budget("toy:test"))[1])
    results, _ = api.evaluate_strategies(fits, "toy:test", limit=2)
    assert not results["strategies"]["large"]["cut_by_length"] and CUT_NOTE not in markdown_table(results)


def test_eval_uses_the_datasets_budget_and_says_which_settings_ran(tmp_path):
    out = tmp_path / "out"
    done = run_cli("eval", "--strategy", "lookup", "--dataset", "toy:long:test", "--limit", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert all(entry["max_new_tokens"] == token_budget("toy:long:test") for entry in results["strategies"].values())
    assert results["strategies"]["lookup"]["settings"]["source"].startswith("tuned: ")
    assert "lookup: k=" in done.stdout
