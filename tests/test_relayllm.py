"""RelayLLM: the strategy's command handling on tiny real models taught a script, the reward's
three cases, the warm-up data, and GRPO's masks and determinism."""

from __future__ import annotations

import pytest
import torch

from relaykit.decoding.stopping import StopConfig
from relaykit.models.loading import load_model
from relaykit.runtime.session import Session
from relaykit.strategies.relayllm import RelayLLM, RelayLLMConfig
from relaykit.toyworld.tokenizer import build_tokenizer, save_tokenizer
from relaykit.train.grpo import GRPOConfig, group_advantages, grpo_loss
from relaykit.train.loop import TrainConfig, train
from relaykit.train.relayllm import critical, relayllm_rewards, spans, with_calls
from relaykit.train.sft import sft_loss
from relaykit.train.toy.config import ToyModelConfig
from relaykit.train.toy.model import build_model

TINY = ToyModelConfig(layers=2, hidden=64, heads=2, intermediate=128)
# What the small model writes for each prompt, and what the large model writes when it reads the
# prompt and the small model's text without commands ("|" marks where the large model's tokens go).
SMALL_SCRIPT = {
    "Q1?": "ab<call>2</call>|cd",  # a call for two tokens
    "Q2?": "ab<call>250</call>|",  # N past the clamp
    "Q3?": "ab<call>x</call>cd",  # malformed: text
    "Q4?": "ab<call>0</call>cd",  # N = 0: no call
    "Q5?": "ef<call>3</call>|",  # the large model ends the answer inside the call
}
LARGE_SCRIPT = {"Q1?ab": "XY", "Q2?ab": "UVWZ", "Q5?ef": ""}


def _teach(folder, texts: list[tuple[str, list[bool] | None]], seed: int):
    """A tiny toy-tokenizer Llama trained to write `texts` (masks: which tokens it learns)."""
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = build_model(TINY, tokenizer)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t, _ in texts]
    masks = [m or [True] * len(i) for i, (_, m) in zip(ids, texts)]
    train(model, TrainConfig(steps=300, lr=1e-2, warmup=10), lambda step: None,
          lambda _: sft_loss(model, ids, masks), "script")
    model.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    return folder


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """A small model that writes SMALL_SCRIPT (the large model's part included in its context)
    and a large model that writes LARGE_SCRIPT, both ending with eos."""
    tokenizer = build_tokenizer()
    root = tmp_path_factory.mktemp("scripted")
    small_texts = []
    for prompt, script in SMALL_SCRIPT.items():
        before, _, after = script.partition("|")
        large = LARGE_SCRIPT.get(prompt + before.split("<call>")[0], "")
        if prompt == "Q2?":
            large = large[:3]  # the clamp delivers three tokens
        text = prompt + before + large + after + ("</s>" if prompt != "Q5?" else "")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        n_prompt, n_before = (len(tokenizer(s, add_special_tokens=False)["input_ids"])
                              for s in (prompt, prompt + before))
        n_large = len(tokenizer(large, add_special_tokens=False)["input_ids"])
        mask = [False] * n_prompt + [True] * (n_before - n_prompt) + [False] * n_large
        small_texts.append((text, mask + [True] * (len(ids) - len(mask))))
    large_texts = [(context + text + "</s>", None) for context, text in LARGE_SCRIPT.items()]
    small = _teach(root / "small", small_texts, seed=0)
    large = _teach(root / "large", large_texts, seed=1)
    return {"large": load_model(str(large), name="large"), "small": load_model(str(small), name="small")}


def _run(models, prompt: str, config: RelayLLMConfig | None = None):
    tokenizer = models["small"].tokenizer
    strategy = RelayLLM(models, config, stop=StopConfig(max_new_tokens=24))
    session = Session(strategy.models)
    read: list[int] = []
    engine = session.runners["large"].engine
    forward = engine.forward

    def observed(tokens, positions, wanted):  # what the large model reads
        read.extend(t for row in tokens for t in row)
        return forward(tokens, positions, wanted)

    engine.forward = observed
    result = session.generate(strategy, [tokenizer(prompt, add_special_tokens=False)["input_ids"]])[0]
    return result, tokenizer.convert_ids_to_tokens(read)


def test_a_call_reads_no_command_and_returns_to_the_small_model(scripted):
    result, read = _run(scripted, "Q1?")
    assert result.text == "ab<call>2</call>XYcd"
    assert result.provenance == ["small"] * 5 + ["large"] * 2 + ["small"] * 3
    assert read == ["Q", "1", "?", "a", "b", "X"]  # no command token reaches the large model
    calls = [e for e in result.events if e.reason == "call"]
    assert [(e.position, e.cue, e.detail) for e in calls] == [(5, "<call>2</call>", {"requested": 2, "delivered": 2})]


def test_n_is_clamped(scripted):
    result, _ = _run(scripted, "Q2?", RelayLLMConfig(max_call_tokens=3))
    assert result.text == "ab<call>250</call>UVW"
    assert result.tokens_by("large") == 3
    assert [e.detail for e in result.events if e.reason == "call"] == [{"requested": 250, "delivered": 3}]


@pytest.mark.parametrize("prompt, command", [("Q3?", "<call>x</call>"), ("Q4?", "<call>0</call>")])
def test_malformed_and_zero_commands_call_nothing(scripted, prompt, command):
    result, read = _run(scripted, prompt)
    assert result.text == f"ab{command}cd"
    assert set(result.provenance) == {"small"} and read == []


def test_end_of_sequence_inside_a_call_ends_the_answer(scripted):
    result, _ = _run(scripted, "Q5?")
    assert result.text == "ef<call>3</call>"
    assert result.provenance[-1] == "large" and result.finish_reason == "stop"


def test_calls_per_answer_are_limited(scripted):
    result, read = _run(scripted, "Q1?", RelayLLMConfig(max_calls=0))
    assert result.tokens_by("large") == 0 and read == []


def test_the_shipped_pair_calls_with_its_trained_small_model(shipped_pair):
    """On the shipped pair `relayllm` gets toy-small-relay by default; its calls reach the large
    model without their commands."""
    from relaykit import api
    from relaykit.decoding.prompt import encode_prompt
    from relaykit.toyworld import TOY_SMALL_RELAY, load_split

    strategy = api.build_strategy("relayllm", shipped_pair, stop=StopConfig(max_new_tokens=256))
    assert strategy.models["small"].source == str(TOY_SMALL_RELAY)
    tokenizer = strategy.tokenizer
    commands = set(tokenizer.convert_tokens_to_ids(["<call>", "</call>"]))
    read: list[int] = []
    session = Session(strategy.models)
    engine = session.runners["large"].engine
    forward = engine.forward
    engine.forward = lambda tokens, positions, wanted: (read.extend(t for r in tokens for t in r),
                                                        forward(tokens, positions, wanted))[1]
    results = session.generate(strategy, [encode_prompt(tokenizer, p.question) for p in load_split("test", 4)])
    calls = [e.detail for r in results for e in r.events if e.reason == "call"]
    assert calls and sum(c["delivered"] for c in calls) == sum(r.tokens_by("large") for r in results)
    assert read and not commands & set(read)


def test_reward_cases_are_decided_per_question():
    # some rollout right without a call
    assert relayllm_rewards([True, True, False, False], [0.0, 0.25, 0.0, 0.5]) == [1.5, 0.75, 0.0, 0.0]
    # else some right with a call
    assert relayllm_rewards([False, True, False], [0.0, 0.1, 0.2]) == [-1.0, 0.9, 0.0]
    # else none right: calling scores its ratio
    assert relayllm_rewards([False, False], [0.0, 0.3]) == [0.0, 0.3]
    # two questions in one batch: each group is decided on its own
    batch = [([True, False], [0.0, 0.2]), ([False, True], [0.0, 0.2])]
    assert [relayllm_rewards(c, r) for c, r in batch] == [[1.5, 0.0], [-1.0, 0.8]]


def test_warmup_example_marks_the_large_models_span():
    assert spans([5, 6, 9, 20], merge_gap=1) == [(5, 6), (9, 9), (20, 20)]
    assert spans([5, 6, 8, 20], merge_gap=1) == [(5, 8), (20, 20)]
    ids, mask = with_calls([1, 2, 10, 11, 12, 13], 2, [(3, 4)], lambda n: [-1, n, -2])
    assert ids == [1, 2, 10, -1, 2, -2, 11, 12, 13]
    assert mask == [False, False, True, True, True, True, False, False, True]


def test_only_slips_that_change_the_answer_are_critical(shipped_pair):
    """A check counter off by one is harmless (the large model checks once less, same answer); a
    wrong digit of the second product is not (the large model copies it to the answer)."""
    from relaykit.decoding.prompt import encode_prompt
    from relaykit.toyworld import load_split

    large = shipped_pair["large"]
    tokenizer = large.tokenizer
    problem = next(p for p in load_split("test", 20) if "Check it 3 times" in p.question)
    prompt = encode_prompt(tokenizer, problem.question)
    tokens = prompt + tokenizer(problem.solution, add_special_tokens=False)["input_ids"]

    def digit(text, at):
        return len(tokenizer(text[:at], add_special_tokens=False)["input_ids"]) + len(prompt)

    counter = digit(problem.solution, problem.solution.index("Check 3.") + len("Check "))
    second = digit(problem.solution, problem.solution.index(" = " + problem.answer) + len(" = "))
    assert tokenizer.decode(tokens[counter]) == "3" and tokenizer.decode(tokens[second]) == problem.answer[0]
    wrong_digit = tokenizer.convert_tokens_to_ids(str((int(problem.answer[0]) + 1) % 10))
    verdicts = critical(large, [(tokens, len(prompt))], [problem.answer],
                        [[(counter, tokenizer.convert_tokens_to_ids("2")), (second, wrong_digit)]])
    assert verdicts == [[False, True]]


def _tiny_policy(seed: int):
    torch.manual_seed(seed)
    return build_model(TINY, build_tokenizer())


def test_large_model_tokens_carry_no_gradient():
    policy, reference = _tiny_policy(0), _tiny_policy(0)
    ids = [[1, 20, 21, 22, 23, 24, 25], [1, 30, 31, 32, 33]]
    masks = [[False, False, True, False, False, True, True], [False, True, True, True, True]]
    logits = {}

    def keep(module, inputs, out):
        out.retain_grad()
        logits["out"] = out

    policy.lm_head.register_forward_hook(keep)
    loss, _ = grpo_loss(policy, reference, ids, masks, torch.tensor([1.0, -1.0]), None, GRPOConfig())
    loss.backward()
    grad = logits["out"].grad  # [B, T, V]: position t predicts token t + 1
    for b, mask in enumerate(masks):
        for t in range(len(mask) - 1):
            assert bool(grad[b, t].abs().sum() > 0) == mask[t + 1], (b, t)


def test_one_grpo_step_is_deterministic_and_moves_the_weights():
    ids = [[1, 20, 21, 22, 23], [1, 20, 24, 25, 26]]
    masks = [[False, False, True, True, True]] * 2
    advantages = group_advantages([1.0, 0.0], group=2)

    def step():
        policy, reference = _tiny_policy(3), _tiny_policy(3)
        before = [p.detach().clone() for p in policy.parameters()]
        train(policy, TrainConfig(steps=1, lr=1e-2), lambda s: None,
              lambda _: grpo_loss(policy, reference, ids, masks, advantages, None, GRPOConfig()), "grpo")
        return before, [p.detach().clone() for p in policy.parameters()]

    (before, first), (_, second) = step(), step()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert any(not torch.equal(a, b) for a, b in zip(before, first))
