"""Test-time compute on the shipped pair: stopping rules on hand-built answer streams, N = 1 and
probes that never change the trace, early exit on long problems, and reranking."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from relaykit import api
from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.stopping import StopConfig
from relaykit.runtime.session import Session, generate
from relaykit.strategies.adaptive import AdaptiveConfig
from relaykit.strategies.self_consistency import leader_beats_runner_up, should_stop
from relaykit.toyworld import load_split


def stops_after(rule: str, stream: list[str], window: int) -> int:
    """Samples drawn from `stream` before `rule` stops (as `SelfConsistency.run` draws them)."""
    size = {"adaptive": 1, "esc": window}[rule]
    drawn: list[str] = []
    while len(drawn) < len(stream):
        new = stream[len(drawn) : len(drawn) + size]
        drawn += new
        if should_stop(rule, drawn, new, 0.95):
            break
    return len(drawn)


def test_adaptive_consistency_beta_rule():
    # Beta(v1 + 1, v2 + 1): four agreeing samples give 1 - 2**-5 = 0.969 >= 0.95, three 0.9375
    assert leader_beats_runner_up(Counter(a=4)) == pytest.approx(1 - 2**-5)
    assert leader_beats_runner_up(Counter(a=3)) == pytest.approx(1 - 2**-4)
    assert leader_beats_runner_up(Counter(a=6, b=1)) == pytest.approx(1 - 9 / 256)
    assert stops_after("adaptive", ["7"] * 40, 5) == 4
    assert stops_after("adaptive", ["7", "9", "7", "7", "7", "7", "7", "7"], 5) == 7  # 6 against 1
    assert stops_after("adaptive", ["7", "9"] * 20, 5) == 40


def test_esc_stops_after_the_first_unanimous_window():
    assert stops_after("esc", ["7"] * 40, 5) == 5
    assert stops_after("esc", ["7", "9", "7", "7", "7"] + ["7"] * 35, 5) == 10
    assert stops_after("esc", ["7", "9"] * 20, 5) == 40


@pytest.fixture(scope="module")
def questions(shipped_pair):
    return [encode_prompt(shipped_pair["large"].tokenizer, p.question) for p in load_split("test", 3)]


def _make(pair, name, budget=160, **options):
    """As the CLI builds it (RelayGen with the pair's calibrated cues, inner or not)."""
    return api.build_strategy(name, pair, options, stop=StopConfig(max_new_tokens=budget))


@pytest.mark.parametrize("rerank", ["majority", "likelihood"])
def test_best_of_one_equals_its_inner_strategy(shipped_pair, questions, rerank):
    inner = generate(_make(shipped_pair, "relaygen"), questions)
    best = generate(_make(shipped_pair, "best-of-n", n=1, inner="relaygen", rerank=rerank), questions)
    assert [r.token_ids for r in best] == [r.token_ids for r in inner]
    assert [r.provenance for r in best] == [r.provenance for r in inner]


def test_a_probe_never_changes_the_trace(shipped_pair, questions):
    """With a threshold no probe reaches, early exit writes what its inner strategy writes, and
    pays for its probes."""
    for inner in ("large", "relaygen"):
        plain = generate(_make(shipped_pair, inner), questions)
        probed = generate(_make(shipped_pair, "early-exit", inner=inner, threshold=1.01), questions)
        assert [r.token_ids for r in probed] == [r.token_ids for r in plain]
        assert [r.provenance for r in probed] == [r.provenance for r in plain]
        assert all(p.usage["large"].forward_calls > q.usage["large"].forward_calls for p, q in zip(probed, plain))


def test_early_exit_answers_with_its_probe(shipped_pair):
    """On long problems the first confident probe ends the answer: the trace up to the transition,
    the inducer, then the probe's tokens."""
    problems = load_split("test", 2, long=True)
    prompts = [encode_prompt(shipped_pair["large"].tokenizer, p.question) for p in problems]
    # DEER: it probes itself
    results = generate(_make(shipped_pair, "early-exit", budget=2400, probe_model="large"), prompts)
    for result in results:
        assert [e.reason for e in result.events] == ["early exit"]
        assert len(result.token_ids) < 200  # the long variant writes about 1,600 tokens
        thinking, _, answer = result.text.partition("</think>")
        assert answer.startswith("The answer is") and answer.endswith(".")
        assert thinking.endswith("\n") and "</think>" not in answer


def test_early_exit_with_the_prober_keeps_the_answer(shipped_pair):
    """The shipped answer prober exits at the first transition, where the thinking already holds
    the answer, and writes that answer (toy-large as its own prober answers wrong there)."""
    problems = load_split("test", 2, long=True)
    prompts = [encode_prompt(shipped_pair["large"].tokenizer, p.question) for p in problems]
    results = generate(_make(shipped_pair, "early-exit", budget=2400, probe_model="prober"), prompts)
    for problem, result in zip(problems, results):
        assert [e.reason for e in result.events] == ["early exit"]
        assert result.text.endswith(f"</think>The answer is {problem.answer}.")
        assert result.usage["prober"].forward_calls > 0


def test_the_shipped_prober_is_sure_only_once_the_thinking_holds_the_answer(shipped_pair):
    """Probed as early exit probes (greedy, mean top-1 probability): never sure before the second
    product is written, sure and right after it."""
    from relaykit.train.prober import cuts

    prober, tokenizer = shipped_pair["prober"].hf, shipped_pair["prober"].tokenizer
    verdicts = {True: [], False: []}  # does the cut hold the answer -> (sure, right) per cut
    for problem in load_split("dev", 8):
        for cut, answer in cuts(problem):
            ids = encode_prompt(tokenizer, problem.question) + tokenizer(cut, add_special_tokens=False)["input_ids"]
            written, confidence = [], []
            with torch.no_grad():
                while not tokenizer.decode(written).endswith(".") and len(written) < 8:
                    probabilities = prober(input_ids=torch.tensor([ids + written])).logits[0, -1].softmax(-1)
                    written.append(int(probabilities.argmax()))
                    confidence.append(float(probabilities.max()))
            holds = f" = {problem.answer}." in cut or f"second is {problem.answer}." in cut
            verdicts[holds].append((sum(confidence) / len(confidence) >= 0.95, tokenizer.decode(written) == answer))
    assert verdicts[False] and not any(sure for sure, _ in verdicts[False])
    assert sum(sure and right for sure, right in verdicts[True]) >= 0.95 * len(verdicts[True])


def test_self_consistency_draws_what_its_rule_allows(shipped_pair, questions):
    results = generate(_make(shipped_pair, "self-consistency", budget=256, inner="large", n=40, stop="esc"),
                       questions[:1])
    vote = [e for e in results[0].events if e.reason == "vote"][0]
    assert vote.detail == {"samples": 5} and vote.cue == "5/5"  # greedy samples agree in the first window


def test_overthinking_metrics_on_check_rounds():
    from relaykit.evals.overthinking import efficiency, solutions

    text = ("<think>First, 47 * 6 = 272.\nSo the answer is 272.\nCheck 2. Wait, 47 * 6 = 282.\n"
            "Check 1. Again, 47 * 6 = 282.\n</think>The answer is 282.")
    thinking = text.split("<think>")[1].split("</think>")[0]
    pieces = solutions(thinking)
    assert pieces == ["First, 47 * 6 = 272.\nSo the answer is 272.\n", "Check 2. Wait, 47 * 6 = 282.\n",
                      "Check 1. Again, 47 * 6 = 282.\n"]
    outcome, process = efficiency(text, "282", len)
    total = len(thinking)
    assert outcome == pytest.approx((len(pieces[0]) + len(pieces[1])) / total)  # right from the second
    assert process == pytest.approx((len(pieces[0]) + len(pieces[1])) / total)  # the third adds nothing
    assert efficiency(text, "999", len)[0] == 0.0
    assert efficiency("The answer is 282.", "282", len) is None  # no thinking


def test_beam_search_of_one_whole_answer_step_equals_best_of_n(shipped_pair, questions):
    """One step (the whole answer) and beam width n: the same n samples, the same scorer, the same pick."""
    from relaykit.decoding.sampler import SamplingConfig

    sampling = SamplingConfig(temperature=1.0, seed=3)
    built = {
        name: api.build_strategy(name, shipped_pair, options, sampling=sampling, stop=StopConfig(max_new_tokens=200))
        for name, options in (("best-of-n", dict(n=4, inner="small", rerank="likelihood")),
                              ("beam-search", dict(n=4, beam_width=4, writer="small", step_end="",
                                                   scorer="likelihood")))
    }
    sessions = {name: Session(strategy.models) for name, strategy in built.items()}
    best, beam = (sessions[name].generate(built[name], questions[:2]) for name in ("best-of-n", "beam-search"))
    assert [r.token_ids for r in beam] == [r.token_ids for r in best]
    assert [r.provenance for r in beam] == [r.provenance for r in best]
    work = lambda r: {k: getattr(r.usage["large"], k) for k in ("prefill_tokens", "forward_calls", "flops")}  # noqa: E731
    assert [work(r) for r in beam] == [work(r) for r in best]  # scoring counted alike
    assert all(runner.rows == [] for s in sessions.values() for runner in s.runners.values())


@pytest.mark.parametrize("name", ["beam-search", "dvts"])
def test_step_search_keeps_n_beams_and_frees_pruned_rows(shipped_pair, questions, name):
    strategy = api.build_strategy(name, shipped_pair, dict(n=8, beam_width=4, max_steps=3, scorer="likelihood"),
                                  stop=StopConfig(max_new_tokens=120))
    session = Session(strategy.models)
    results = session.generate(strategy, questions[:2])
    assert all(r.token_ids and set(r.provenance) == {"small"} for r in results)
    assert all(runner.rows == [] for runner in session.runners.values())  # every beam's row freed
    assert [e.reason for e in results[0].events] == ["search"]


def test_verifier_data_marks_every_step_from_the_change_wrong(shipped_pair):
    import random

    from relaykit.train.verifier import corrupt, labelled

    problem = load_split("test", 1)[0]
    changed, index = corrupt(problem.solution, random.Random(0))
    old_lines, new_lines = problem.solution.split("\n"), changed.split("\n")
    assert old_lines[:index] == new_lines[:index] and old_lines[index] != new_lines[index]
    ids, positions, verdicts = labelled(shipped_pair["small"].tokenizer, problem, changed, index)
    assert verdicts == [i < index for i in range(len(new_lines))]
    assert all(shipped_pair["small"].tokenizer.decode([ids[p]]) == "\n" for p in positions[:-1])


@pytest.mark.parametrize("rerank", ["verifier", "weighted"])
def test_verifier_reranking_picks_a_rated_sample(shipped_pair, questions, rerank):
    from relaykit.decoding.sampler import SamplingConfig

    strategy = api.build_strategy("best-of-n", shipped_pair, dict(n=3, inner="small", rerank=rerank),
                                  sampling=SamplingConfig(temperature=1.0, seed=1), stop=StopConfig(max_new_tokens=200))
    assert strategy.roles == ("small", "verifier")
    session = Session(strategy.models)
    results = session.generate(strategy, questions[:2])
    for result in results:
        assert [e.reason for e in result.events] == ["rerank"] and result.events[0].cue.startswith(rerank)
        assert result.usage["verifier"].forward_calls > 0 and set(result.provenance) == {"small"}
    assert all(runner.rows == [] for runner in session.runners.values())


def test_adaptive_that_never_trusts_the_small_model_equals_its_escalation(shipped_pair, questions):
    """With an answer threshold no agreement reaches, every problem escalates: the text is the
    escalation strategy's, and the small model's samples are paid for."""
    alone = generate(_make(shipped_pair, "large"), questions)
    adaptive = generate(_make(shipped_pair, "adaptive", escalate="large", answer_at=2.0, more=0, calibration="none"),
                        questions)
    assert [r.token_ids for r in adaptive] == [r.token_ids for r in alone]
    assert all(r.usage["small"].decode_tokens > 0 for r in adaptive)
    assert all([e.detail["samples"] for e in r.events] == [4] for r in adaptive)


def test_adaptive_calibration_replays_the_strategys_decisions(shipped_pair):
    """Replayed on the records of a run that draws every sample (as calibration's), a pair of
    thresholds gives the accuracy and the small-model answers the strategy gets with them: both
    draw the same seeded samples."""
    from relaykit.calibrate.adaptive import calibrate_adaptive, replay
    from relaykit.evals.datasets import load_dataset
    from relaykit.evals.harness import EvalSettings, evaluate

    problems = load_dataset("toy:dev", 6)
    options = {"k": 2, "more": 2, "escalate": "large", "calibration": "none"}

    def run(**thresholds) -> list[dict]:
        strategy = _make(shipped_pair, "adaptive", budget=256, **options, **thresholds)
        return evaluate({"adaptive": strategy}, problems, "dev", EvalSettings())["strategies"]["adaptive"]["problems"]

    every = run(answer_at=2.0, more_at=0.0)  # every problem escalates to large: its correctness too
    rows = [{"answers": p["events"][-1]["detail"]["answers"], "reference": p["reference"],
             "escalate_correct": p["correct"], "sample_flops": 0.0, "escalate_flops": 0.0} for p in every]
    for answer_at, more_at in ((0.5, 0.5), (1.0, 0.5), (1.0, 2.0)):
        ran = run(answer_at=answer_at, more_at=more_at)
        accuracy, _, answered = replay(rows, 2, 4, answer_at, more_at)
        assert answered == sum(p["events"][-1]["cue"].startswith("small") for p in ran)
        assert accuracy == sum(p["correct"] for p in ran) / len(ran)
    chosen = calibrate_adaptive(shipped_pair, problems, AdaptiveConfig(k=2, more=2, escalate="large"),
                                max_new_tokens=256)
    assert chosen["accuracy"] >= chosen["escalate_accuracy"] - chosen["tolerance"]


def test_adaptive_takes_the_shipped_thresholds_on_the_shipped_pair(shipped_pair):
    import json

    from relaykit.toyworld import SHIPPED_ADAPTIVE

    shipped = json.loads(SHIPPED_ADAPTIVE.read_text())
    config = _make(shipped_pair, "adaptive").config
    assert (config.answer_at, config.more_at) == (shipped["answer_at"], shipped["more_at"])
    assert _make(shipped_pair, "adaptive", calibration="none").config.answer_at == 1.0


@pytest.fixture(scope="module")
def with_difficulty(shipped_pair, tmp_path_factory):
    """The shipped pair plus a difficulty model trained briefly from toy-small (labels from its greedy answers)."""
    import dataclasses

    from relaykit.train.difficulty import DifficultyTrainConfig, train_difficulty

    cfg = DifficultyTrainConfig(problems=48, held_out=16, max_new_tokens=256)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=4, warmup=1))
    out = tmp_path_factory.mktemp("difficulty")
    report = train_difficulty(api.load_models({"small": None})["small"], out, cfg)
    assert set(report["small_right_by_level"]) == {"round", "chain", "sort"}
    return {**shipped_pair, **api.load_models({"difficulty": str(out)})}


def test_adaptive_by_difficulty_answers_with_the_small_model_or_escalates(with_difficulty, questions):
    """Above any probability the difficulty model gives, every problem escalates (the large model's
    text, the difficulty model's prefill paid); at zero the small model answers every one."""
    options = {"signal": "difficulty", "escalate": "large", "calibration": "none"}
    never = generate(_make(with_difficulty, "adaptive", answer_at=2.0, **options), questions)
    assert [r.token_ids for r in never] == [r.token_ids for r in generate(_make(with_difficulty, "large"), questions)]
    assert all(r.usage["difficulty"].prefill_tokens > 0 and r.usage["small"].forward_calls == 0 for r in never)
    always = generate(_make(with_difficulty, "adaptive", answer_at=0.0, **options), questions)
    assert [r.token_ids for r in always] == [r.token_ids for r in generate(_make(with_difficulty, "small"), questions)]
    assert all(r.events[-1].cue.startswith("small") and r.usage["large"].forward_calls == 0 for r in always)


def test_adaptive_difficulty_calibration_replays_the_strategys_decisions(with_difficulty):
    from relaykit.calibrate.adaptive import calibrate_adaptive, replay_difficulty, small_is_right_probability
    from relaykit.evals.datasets import load_dataset
    from relaykit.evals.harness import EvalSettings, evaluate

    problems = load_dataset("toy:mixed:dev", 8)
    probabilities = small_is_right_probability(with_difficulty, problems, 4)
    ordered = sorted(probabilities)
    middle = (ordered[len(problems) // 2 - 1] + ordered[len(problems) // 2]) / 2
    assert ordered[len(problems) // 2] - ordered[len(problems) // 2 - 1] > 1e-3, ordered
    strategy = _make(with_difficulty, "adaptive", budget=256, signal="difficulty", escalate="large",
                     calibration="none", answer_at=middle)
    ran = evaluate({"adaptive": strategy}, problems, "dev",
                   EvalSettings(progress=False))["strategies"]["adaptive"]["problems"]
    assert [p["events"][-1]["detail"]["p_small"] for p in ran] == pytest.approx(probabilities, abs=1e-4)
    answered = sum(p["events"][-1]["cue"].startswith("small") for p in ran)
    rows = [{"p_small": q} for q in probabilities]
    assert answered == sum(q >= middle for q in probabilities) == len(problems) - len(problems) // 2
    chosen = calibrate_adaptive(with_difficulty, problems, AdaptiveConfig(signal="difficulty", escalate="large"),
                                max_new_tokens=256)
    assert chosen["signal"] == "difficulty" and chosen["accuracy"] >= chosen["escalate_accuracy"] - chosen["tolerance"]
    within = calibrate_adaptive(with_difficulty, problems, AdaptiveConfig(signal="difficulty", escalate="large"),
                                max_new_tokens=256, budget=0.5)
    fitting = [r for r in within["replays"] if r["flops_vs_escalate"] <= 0.5]
    assert within["flops_vs_escalate"] <= 0.5 and within["accuracy"] == max(r["accuracy"] for r in fitting)
    assert replay_difficulty([{**r, "small_answer": None, "reference": "1", "sample_flops": 1.0, "escalate_flops": 3.0,
                               "escalate_correct": True} for r in rows], 2.0) == (1.0, 3.0 * len(rows), 0)


def test_adaptive_refuses_a_difficulty_model_without_its_head(shipped_pair):
    from relaykit.errors import RelaykitError

    models = {**shipped_pair, "difficulty": shipped_pair["small"]}
    with pytest.raises(RelaykitError, match="not a difficulty model"):
        _make(models, "adaptive", signal="difficulty")
    with pytest.raises(RelaykitError, match="unknown signal"):
        AdaptiveConfig(signal="vibes")
