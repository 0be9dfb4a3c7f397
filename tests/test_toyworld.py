"""Toy world: generator, splits, tokenizer and the shipped checkpoints."""

import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from relaykit.toyworld import TOY_LARGE, TOY_SMALL, fresh, load_split, make_problem, split_of
from relaykit.toyworld.tasks import DOMAINS
from relaykit.toyworld.tokenizer import MARKUP_TOKENS, SPECIAL_TOKENS, build_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer().save_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(folder))


def test_generator_is_deterministic():
    assert load_split("test", 50) == load_split("test", 50)
    assert fresh(7, 20) == fresh(7, 20)
    assert fresh(7, 20) != fresh(8, 20)
    first = make_problem(random.Random(3), "arith", 2)
    assert first == make_problem(random.Random(3), "arith", 2)


def test_problem_format():
    for domain in DOMAINS:
        problem = make_problem(random.Random(1), domain, 2)
        assert problem.domain == domain
        assert problem.solution.startswith("<think>")
        assert problem.solution.endswith(f"</think>The answer is {problem.answer}.")
        checks = [line for line in problem.solution.split("\n") if line.startswith("Check ")]
        assert [c.split(".")[0] for c in checks] == ["Check 2", "Check 1"]  # counting down
        assert [c.split(". ")[1].split(",")[0] for c in checks] == ["Wait", "Again"]  # cues in their cycle
        assert all(problem.answer in c for c in checks)  # every round restates the numbers


def test_product_drills():
    """Drills in the training stream are right and come from the train split only."""
    from itertools import islice

    from relaykit.toyworld.tasks import stream

    drills = [p for p in islice(stream("train", 0, drill_share=0.5), 200) if "Check" not in p.question]
    assert drills and all(split_of(p.question) == "train" for p in drills)
    for problem in drills:
        left, right = problem.question.removeprefix("What is ").removesuffix("?").split(" * ")
        assert int(problem.answer) == int(left) * int(right)


def test_chain_answers():
    for problem in load_split("test", 100):
        numbers = [int(n) for n in problem.question.replace(",", " ").replace("?", " ").replace(".", " ").split()
                   if n.isdigit()]
        pick = (max if "largest" in problem.question else min)(numbers[:3]) if problem.domain == "list" else numbers[0]
        b, c = numbers[-3:-1]
        assert int(problem.answer) == (pick * b) % 100 * c


def test_splits_are_disjoint():
    questions = {name: {p.question for p in load_split(name, 300)} for name in ("train", "dev", "test", "calibration")}
    questions["fresh"] = {p.question for p in fresh(12345, 300)}
    names = list(questions)
    for i, a in enumerate(names):
        assert all(split_of(q) == a for q in questions[a])
        for b in names[i + 1 :]:
            assert not questions[a] & questions[b], (a, b)


def test_long_variant_is_long(tokenizer):
    lengths = [len(tokenizer(p.solution)["input_ids"]) for p in load_split("test", 50, long=True)]
    assert min(lengths) >= 1500


def test_tokenizer_round_trip_digits_and_specials(tokenizer):
    problems = load_split("dev", 100) + load_split("dev", 3, long=True)
    for problem in problems:
        ids = tokenizer(problem.solution, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == problem.solution
    for digit in "0123456789":
        assert len(tokenizer(digit, add_special_tokens=False)["input_ids"]) == 1
    assert (tokenizer.convert_ids_to_tokens(tokenizer("1234567890", add_special_tokens=False)["input_ids"])
            == list("1234567890"))
    vocab = tokenizer.get_vocab()
    for token in SPECIAL_TOKENS:
        assert token in vocab
    for token in MARKUP_TOKENS:
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [vocab[token]]
        assert tokenizer.decode([vocab[token]], skip_special_tokens=True) == token  # kept, as Qwen3 keeps <think>
    assert {tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token} <= set(SPECIAL_TOKENS)


def test_chat_template(tokenizer):
    problem = load_split("test", 1)[0]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": problem.question}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.startswith(tokenizer.bos_token) and problem.question in prompt
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": problem.question}, {"role": "assistant", "content": problem.solution}],
        tokenize=False
    )
    assert full == prompt + problem.solution + tokenizer.eos_token


@pytest.mark.parametrize("folder", [TOY_SMALL, TOY_LARGE], ids=["small", "large"])
def test_checkpoints_load(folder):
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert model.config.model_type == "llama"
    assert model.config.max_position_embeddings >= 4096
    assert model.config.vocab_size == len(tokenizer)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(str(TOY_LARGE)).get_vocab()


def test_shipped_pair_reaches_its_accuracy_through_the_generic_loading_path(shipped_pair):
    """relaykit's own loading and runtime, 20 test problems: toy-large solves most, toy-small few."""
    from relaykit.evals.datasets import load_dataset
    from relaykit.evals.harness import EvalSettings, evaluate
    from relaykit.strategies.base import get_strategy

    strategies = {name: get_strategy(name)(shipped_pair) for name in ("large", "small")}
    results = evaluate(strategies, load_dataset("toy:test", 20), "toy:test",
                       EvalSettings(batch_size=20, progress=False))
    assert results["strategies"]["large"]["accuracy"] >= 0.85
    assert results["strategies"]["small"]["accuracy"] <= 0.4


def test_training_is_deterministic():
    """Same seed, same data and weights: a few steps of the toy-small shape twice on two threads give
    identical weights (without deterministic algorithms, compiled reductions on two threads do not)."""
    from relaykit.train.toy.config import ToyPairConfig, ToyTrainConfig
    from relaykit.train.toy.model import build_model
    from relaykit.train.toy.stage import train_model

    tokenizer = build_tokenizer()
    config = ToyTrainConfig(steps=3, rows=4, row_tokens=256, long_every=0, warmup=2)
    weights = []
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for _ in range(2):
            torch.manual_seed(0)
            model = build_model(ToyPairConfig().small, tokenizer)
            train_model(model, tokenizer, config, seed=0, name="tiny")
            weights.append(model.state_dict())
    finally:
        torch.set_num_threads(threads)
    assert not torch.are_deterministic_algorithms_enabled()  # restored after training
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_hidden_context_mask():
    """Causal everywhere; a hidden row still shows every query its prompt and its recent window."""
    from relaykit.train.toy.hidden_context import HIDDEN_WINDOW, hidden_context_mask

    length, prompt = 900, 40
    labels = torch.full((6, length), 5)
    labels[:, :prompt] = -100
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
    assert torch.equal(hidden_context_mask(labels, 0.0, torch.Generator().manual_seed(0))[:, 0],
                       causal.expand(6, -1, -1))
    masks = hidden_context_mask(labels, 1.0, torch.Generator().manual_seed(0))[:, 0]
    assert not (masks & ~causal).any()
    assert masks[:, :, :prompt][causal[:, :prompt].expand(6, -1, -1)].all()
    recent = causal & ~torch.tril(causal, -HIDDEN_WINDOW[0])
    assert masks[recent.expand(6, -1, -1)].all()
    assert (masks.sum((1, 2)) < causal.sum()).all()  # every row hides something


def test_expert_domains_use_their_operations():
    from relaykit.toyworld.tasks import EXPERT_DOMAINS, expert_problem, load_expert_split, operation_drill, split_of

    rng = random.Random(0)
    for domain in EXPERT_DOMAINS:
        problem = expert_problem(rng, domain, 2)
        ops = {op for op in ("+", "-", "*") if f" {op} " in problem.question}
        assert ops == {"add": {"+"}, "sub": {"-"}, "mixed": {"+", "-"}}[domain]
        a, op, b = problem.question.split(",")[0].split(" ")[2:5]
        first = int(a) + int(b) if op == "+" else int(a) - int(b)
        assert (f"{a} {op} {b} = {first}." in problem.solution
                and problem.solution.endswith(f"The answer is {problem.answer}."))
    assert operation_drill(rng, "sub").question.count(" - ") == 1
    assert all(split_of(p.question) == "test" for p in load_expert_split("test", 20))


def test_mixed_world_levels_have_their_shares_and_their_kind():
    from relaykit.toyworld.tasks import LEVEL_SHARES, LEVELS, fresh_mixed, load_mixed_split, split_of

    problems = load_mixed_split("test", 100)
    assert [sum(p.level == level for p in problems) for level in LEVELS] == [round(100 * s) for s in LEVEL_SHARES]
    assert len({p.question for p in problems}) == 100 and all(split_of(p.question) == "test" for p in problems)
    for p in problems:
        first = int(p.solution.split(" * ")[0].split()[-1])  # the chain's first number
        assert (first % 10 == 0) == (p.level == "round"), p.question
        assert (p.domain == ("list" if p.level == "sort" else p.domain)
                and p.solution.endswith(f"The answer is {p.answer}."))
    assert {p.domain for p in problems if p.level == "chain"} == {"arith"}
    unseen = fresh_mixed(7, 50)
    assert unseen == fresh_mixed(7, 50) and not {p.question for p in unseen} & {p.question for p in problems}
    assert {p.level for p in load_split("test", 20)} == {None}  # the other splits are unchanged
    from itertools import islice

    from relaykit.toyworld.tasks import stream
    assert {p.level for p in islice(stream("train", 0, round_share=1.0), 50)} == {"round"}  # toy-small's second stage


def test_worded_world_changes_only_the_restatements_joints():
    from relaykit.evals.datasets import load_dataset
    from relaykit.toyworld.tasks import JOINTS

    plain, worded = load_split("dev", 60), load_split("dev", 60, worded=True)
    assert [(p.question, p.answer) for p in plain] == [(p.question, p.answer) for p in worded]
    seen = set()
    for a, b in zip(plain, worded):
        for line_a, line_b in zip(a.solution.split("\n"), b.solution.split("\n"), strict=True):
            restates = line_a.startswith(("Check ", "Therefore, ", "Hence, "))
            joint = next((j for j in JOINTS if line_a.replace(" and ", j, 1) == line_b), None) if restates else None
            assert line_b == line_a or joint is not None, (line_a, line_b)
            if restates:
                seen.add(joint)
    assert seen == set(JOINTS)  # every joint is drawn
    assert worded == load_split("dev", 60, worded=True)
    assert ([p.prompt for p in load_dataset("toy:worded:fresh:3", 5)]
            == [p.prompt for p in load_dataset("toy:fresh:3", 5)])
