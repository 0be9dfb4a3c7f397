"""RelayGen calibration: cue statistics on hand-made margins, teacher-forced margins, files; the check threshold."""

import json
import math

import pytest
import torch

from relaykit import api
from relaykit.calibrate import (
    calibrate,
    calibrate_check,
    cue_statistics,
    run_calibrate_command,
    summary,
    write_calibration,
)
from relaykit.calibrate.check import THRESHOLDS
from relaykit.calibrate.cues import token_pieces, token_scores
from relaykit.decoding.prompt import encode_prompt
from relaykit.errors import RelaykitError
from relaykit.evals.datasets import load_dataset
from relaykit.resolve import load_cues
from relaykit.runtime.local_runner import LocalRunner
from relaykit.strategies.relaygen import RelayGenConfig
from test_relaygen import QUESTIONS, run, toy_pair, words_of  # noqa: F401 (toy_pair is a fixture)

PIECES = ["<think>", "First", ",", " x", " =", " 3", ".", "5", ".", "\n", "So", ",", " y", ".", "\n",
          "So", ",", " z", " is", " 2", ".", "\n", "</think>", "So", ",", " w", "."]  # fmt: skip
MARGINS = [i / 100 for i in range(len(PIECES))]


def expected(regions: list[list[int]], thinking: int = 22) -> tuple[float, float, float]:
    inside = [i for r in regions for i in r]
    outside = [i for i in range(thinking) if i not in inside]
    m = lambda indices: sum(MARGINS[i] for i in indices) / len(indices)  # noqa: E731
    mean_in, mean_out = m(inside), m(outside)
    var_in = sum((sum(MARGINS[i] for i in r) - len(r) * mean_in) ** 2 for r in regions) / len(inside) ** 2
    var_out = sum((MARGINS[i] - mean_out) ** 2 for i in outside) / (len(outside) - 1) / len(outside)
    return mean_in, mean_in - mean_out, math.sqrt(var_in + var_out)


def test_statistics_on_a_hand_made_margin_sequence():
    result = cue_statistics([(PIECES, MARGINS)], ["So,", "First", "so", "Then"], threshold=0.0, min_occurrences=2)
    assert result["thinking_tokens"] == 22  # nothing after </think>
    so, first = result["cues"]["So,"], result["cues"]["First"]
    # regions: after "So," to ".\n" (twice; the one after </think> does not count)
    assert so["occurrences"] == 2 and so["tokens"] == 8
    for key, value in zip(("mean_margin", "delta", "stderr"), expected([[12, 13, 14], [17, 18, 19, 20, 21]])):
        assert so[key] == pytest.approx(value)
    # "First" completes at its comma; "3.5" does not end the region, ".\n" does
    assert first["occurrences"] == 1 and first["tokens"] == 7
    for key, value in zip(("mean_margin", "delta", "stderr"), expected([[3, 4, 5, 6, 7, 8, 9]])):
        assert first[key] == pytest.approx(value)
    assert result["cues"]["so"]["occurrences"] == 0 and result["cues"]["so"]["delta"] is None  # case-sensitive
    assert result["selected"] == ["So,"]  # First: negative delta
    assert cue_statistics([(PIECES, MARGINS)], ["So,"], min_occurrences=3)["selected"] == []
    assert cue_statistics([(PIECES, MARGINS)], ["So,"], threshold=0.5, min_occurrences=1)["selected"] == []


def test_margins_are_the_small_models_teacher_forced_top2_gap(toy_pair):
    small = toy_pair["small"]
    prompt = encode_prompt(small.tokenizer, QUESTIONS[0])
    trace = run(toy_pair, "single", max_new_tokens=20)[0].token_ids
    margins = token_scores(LocalRunner(small, "small"), None, prompt, trace)
    with torch.no_grad():
        probs = small.hf(torch.tensor([prompt + trace])).logits[0, len(prompt) - 1 : -1].float().softmax(-1)
    top = probs.topk(2, dim=-1).values
    assert margins == pytest.approx((top[:, 0] - top[:, 1]).tolist(), abs=1e-5)
    pieces = token_pieces(small.tokenizer, prompt, trace)
    assert "".join(pieces) == small.tokenizer.decode(trace, skip_special_tokens=False)


def test_agreement_is_the_large_models_likelihood_of_the_small_models_top_token(toy_pair):
    large, small = toy_pair["large"], toy_pair["small"]
    prompt = encode_prompt(small.tokenizer, QUESTIONS[0])
    trace = run(toy_pair, "single", max_new_tokens=20)[0].token_ids
    scores = token_scores(LocalRunner(small, "small"), LocalRunner(large, "large"), prompt, trace)
    with torch.no_grad():
        ids = torch.tensor([prompt + trace])
        chosen = small.hf(ids).logits[0, len(prompt) - 1 : -1].argmax(-1)
        probs = large.hf(ids).logits[0, len(prompt) - 1 : -1].float().softmax(-1)
    expected = probs.gather(-1, chosen[:, None])[:, 0] / probs.max(-1).values
    assert scores == pytest.approx(expected.tolist(), abs=1e-4)
    assert all(0 < s <= 1 for s in scores)
    with pytest.raises(RelaykitError, match="unknown cue statistic"):
        calibrate(large, small, QUESTIONS, statistic="confidence")


def test_calibrate_writes_files_relaygen_reads(toy_pair, tmp_path):
    _, words = words_of(toy_pair, max_new_tokens=30)
    result, paths = run_calibrate_command(
        toy_pair, QUESTIONS, tmp_path / "cues.json", check=False, cues=words, min_occurrences=1, max_new_tokens=30,
        batch_size=4
    )
    assert result["problems"] == len(QUESTIONS) and result["traces"] == len(QUESTIONS)
    assert result["statistic"] == "agreement"  # the default with an in-process large model
    assert any(s["occurrences"] for s in result["cues"].values())
    for cue in result["selected"]:
        assert result["cues"][cue]["delta"] > 0 and result["cues"][cue]["occurrences"] >= 1
    assert json.loads(paths["json"].read_text())["selected"] == result["selected"]
    assert paths["plot"].suffix == ".png" and paths["plot"].stat().st_size > 0
    assert load_cues(str(paths["json"]))[0] == result["selected"]
    run(toy_pair, "relaygen", RelayGenConfig(cues=str(paths["json"])))
    again = calibrate(toy_pair["large"], toy_pair["small"], QUESTIONS, cues=words, min_occurrences=1, max_new_tokens=30)
    assert again["cues"] == result["cues"]  # batching does not change the traces
    empty = dict(result, selected=[], cues={})
    write_calibration(empty, tmp_path / "empty.json")


def test_the_check_threshold_is_calibrated_and_relaygen_takes_it(shipped_pair, tmp_path):
    problems = load_dataset("toy:calibration", 6)
    pair = {role: shipped_pair[role] for role in ("large", "small")}
    result, paths = run_calibrate_command(pair, problems, tmp_path / "cues.json", max_new_tokens=300)
    sweep = result["check_sweep"]
    assert set(sweep) == {f"{t:g}" for t in THRESHOLDS} and result["check"] in THRESHOLDS
    assert sweep[f"{result['check']:g}"]["accuracy"] >= sweep["0"]["accuracy"]
    assert all(m >= 0 for m in result["check_cut_margins"])
    assert "check threshold" in summary(result)
    strategy = api.build_strategy(f"relaygen[cues={paths['json']}]", pair)
    assert strategy.config.check == result["check"] and strategy.check == result["check"]
    assert api.build_strategy(f"relaygen[cues={paths['json']} check=inf]", pair).check is None
    with pytest.raises(RelaykitError, match="references"):
        calibrate_check(pair, QUESTIONS, result["selected"])


def test_sentence_openings_are_candidates_when_frequent():
    from relaykit.calibrate.cues import sentence_openings

    trace = "<think>We need 3 * 4.\nFirst, 3 * 4 = 12. Check 2. Wait, 12.\nCheck 1. So 12.\n</think>The answer is 12."
    openings = sentence_openings([trace] * 3, min_occurrences=3)
    assert openings[:2] == ["Check", "Check,"]  # twice a trace: the most frequent first
    assert {"We", "First", "First,", "Wait,", "So"} <= set(openings) and "The" not in openings  # thinking only
    assert sentence_openings([trace] * 2, min_occurrences=3) == ["Check", "Check,"]
