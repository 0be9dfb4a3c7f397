"""Log-probabilities from `relaykit serve` (the shipped toy pair, the official `openai` client):
exact, named by the model that wrote each token, in OpenAI's and vLLM's shapes, streamed too."""

from __future__ import annotations

import pytest
import torch

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from relaykit.decoding.prompt import encode_prompt  # noqa: E402
from relaykit.serve import create_app, serving  # noqa: E402

QUESTION = "What is 41 * 7, then its last two digits * 3? Check it 2 times."
PROMPT = "What is 12 * 3?"


@pytest.fixture(scope="module")
def pair(shipped_pair):
    return {role: shipped_pair[role] for role in ("large", "small")}


@pytest.fixture(scope="module")
def client(pair):
    with serving(create_app(pair)) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)


def reference(model, tokens: list[int]) -> torch.Tensor:
    """The model's own log-softmax over `tokens` (row j predicts token j + 1)."""
    with torch.no_grad():
        return model.hf(torch.tensor([tokens])).logits[0].float().log_softmax(-1)


def ids(tokens: list[str]) -> list[int]:
    return [int(token.removeprefix("token_id:")) for token in tokens]


def test_echoed_prompt_logprobs_are_the_models_log_softmax(client, pair):
    large = pair["large"]
    tokenizer = large.tokenizer
    prompt = encode_prompt(tokenizer, PROMPT, raw=True)
    expected = reference(large, prompt)
    choice = client.completions.create(model="large", prompt=PROMPT, echo=True, logprobs=5, max_tokens=1,
                                       temperature=0).choices[0]
    logprobs = choice.logprobs
    assert choice.text.startswith(PROMPT) and len(logprobs.tokens) == len(prompt) + 1
    assert logprobs.tokens[: len(prompt)] == [tokenizer.decode([t]) for t in prompt]
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert logprobs.text_offset[:2] == [0, len(logprobs.tokens[0])]
    for j in range(1, len(prompt) + 1):
        row = expected[j - 1]
        if j < len(prompt):
            assert logprobs.token_logprobs[j] == pytest.approx(row[prompt[j]].item(), abs=1e-4)
        top = row.topk(5)
        wanted = {tokenizer.decode([t]): v for t, v in zip(top.indices.tolist(), top.values.tolist())}
        wanted[logprobs.tokens[j]] = logprobs.token_logprobs[j]
        assert logprobs.top_logprobs[j] == pytest.approx(wanted, abs=1e-4)
    assert choice.model_extra["relaykit"]["logprob_models"] == ["large"] * (len(prompt) + 1)


def test_token_id_prompts_give_token_id_keys_and_the_greedy_token(client, pair):
    large = pair["large"]
    prompts = [encode_prompt(large.tokenizer, text, raw=True) for text in ("7 * 8 =", "What is 2 + 2?")]
    answer = client.completions.create(model="large", prompt=prompts, echo=True, logprobs=3, max_tokens=1,
                                       temperature=0,
                                       extra_body={"return_tokens_as_token_ids": True, "prompt_logprobs": 2})
    assert [choice.index for choice in answer.choices] == [0, 1]
    for prompt, choice in zip(prompts, answer.choices):
        logprobs, expected = choice.logprobs, reference(large, prompt)
        assert choice.text.startswith(large.tokenizer.decode(prompt))
        tokens = ids(logprobs.tokens)
        assert tokens[: len(prompt)] == prompt and all(t.startswith("token_id:") for t in logprobs.tokens)
        for token, top in zip(logprobs.tokens[1:], logprobs.top_logprobs[1:]):
            assert token in top and len(top) <= 4 and all(key.startswith("token_id:") for key in top)
        last = logprobs.top_logprobs[-1]  # the distribution after the prompt: its best is the greedy token
        assert max(last, key=last.get) == logprobs.tokens[-1] == f"token_id:{int(expected[-1].argmax())}"
        assert last[logprobs.tokens[-1]] == pytest.approx(expected[-1].max().item(), abs=1e-4)

        ranked = choice.model_extra["prompt_logprobs"]
        assert ranked[0] is None and len(ranked) == len(prompt)
        for j in range(1, len(prompt)):
            row, entry = expected[j - 1], ranked[j][str(prompt[j])]
            assert entry["logprob"] == pytest.approx(row[prompt[j]].item(), abs=1e-4)
            assert entry["rank"] == 1 + int((row > row[prompt[j]]).sum())
            assert entry["decoded_token"] == f"token_id:{prompt[j]}"
            best = {rank["rank"]: int(key) for key, rank in ranked[j].items() if rank["rank"] <= 2}
            assert best == {1: int(row.argmax()), 2: int(row.topk(2).indices[1])}


def test_max_tokens_0_with_echo_scores_the_prompt(client, pair):
    prompt = encode_prompt(pair["large"].tokenizer, PROMPT, raw=True)
    whole = client.completions.create(model="large", prompt=prompt, echo=True, logprobs=0, max_tokens=0)
    choice = whole.choices[0]
    assert choice.text == PROMPT and choice.finish_reason == "length" and whole.usage.completion_tokens == 0
    assert len(choice.logprobs.tokens) == len(prompt) and all(len(top) == 1 for top in choice.logprobs.top_logprobs[1:])
    chunks = list(client.completions.create(model="large", prompt=prompt, echo=True, logprobs=0, max_tokens=0,
                                            stream=True))
    assert chunks[0].choices[0].text == PROMPT and chunks[-1].choices[0].finish_reason == "length"
    assert chunks[0].choices[0].logprobs.token_logprobs == choice.logprobs.token_logprobs


def joined(pieces: list[dict]) -> dict:
    """Legacy logprobs of several chunks as one."""
    return {key: [value for piece in pieces for value in piece[key]] for key in pieces[0]}


def test_chat_and_streamed_logprobs_equal_the_whole_ones(client, pair):
    messages = [{"role": "user", "content": QUESTION}]
    options = {"model": "relaygen", "temperature": 0, "max_tokens": 60}
    whole = client.chat.completions.create(messages=messages, logprobs=True, top_logprobs=3, **options).choices[0]
    content = whole.logprobs.content
    assert len(content) == len(whole.model_extra["relaykit"]["logprob_models"]) > 0
    assert "".join(entry.token for entry in content).startswith(whole.message.content[:10])
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].logprob >= entry.logprob - 1e-6
        assert entry.bytes == list(entry.token.encode())
    chunks = list(client.chat.completions.create(messages=messages, logprobs=True, top_logprobs=3, stream=True,
                                                 **options))
    streamed = [entry for chunk in chunks if chunk.choices[0].logprobs for entry in chunk.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in content]
    for got, want in zip(streamed, content):
        assert got.logprob == pytest.approx(want.logprob, abs=1e-4)
        assert [t.token for t in got.top_logprobs] == [t.token for t in want.top_logprobs]
    models = [m for chunk in chunks for m in (chunk.choices[0].model_extra.get("relaykit") or {}).get(
        "logprob_models", [])]
    assert models == whole.model_extra["relaykit"]["logprob_models"]

    legacy = {"prompt": QUESTION, "echo": True, "logprobs": 2, **options}
    whole_text = client.completions.create(**legacy).choices[0]
    chunks = list(client.completions.create(stream=True, **legacy))
    first = chunks[0].choices[0]
    assert first.text == QUESTION and first.logprobs.token_logprobs[0] is None  # the prompt comes first
    pieces = [chunk.choices[0].logprobs.model_dump() for chunk in chunks if chunk.choices[0].logprobs]
    streamed_legacy, expected = joined(pieces), whole_text.logprobs.model_dump()
    assert streamed_legacy["tokens"] == expected["tokens"] and streamed_legacy["text_offset"] == expected["text_offset"]
    assert streamed_legacy["token_logprobs"] == pytest.approx(expected["token_logprobs"], abs=1e-4)
    assert "".join(chunk.choices[0].text for chunk in chunks) == whole_text.text


def test_each_token_is_scored_by_its_writer(client, pair):
    prompt = encode_prompt(pair["large"].tokenizer, QUESTION, raw=True)
    choice = client.completions.create(model="relaygen", prompt=prompt, logprobs=1, max_tokens=80, temperature=0,
                                       extra_body={"return_tokens_as_token_ids": True,
                                                   "relaykit": {"provenance": True}}).choices[0]
    extras = choice.model_extra["relaykit"]
    written = ids(choice.logprobs.tokens)
    # text a strategy inserts (RelayGen's closing of the thinking at the budget) is scored by its first model
    assert extras["logprob_models"] == [w if w in pair else "large" for w in extras["provenance"]]
    assert {"large", "small"} <= set(extras["logprob_models"])
    sequence = prompt + written
    expected = {role: reference(model, sequence) for role, model in pair.items()}
    for i, (token, writer) in enumerate(zip(written, extras["logprob_models"])):
        row = expected[writer][len(prompt) + i - 1]
        assert choice.logprobs.token_logprobs[i] == pytest.approx(row[token].item(), abs=1e-4)


@pytest.mark.parametrize("options, param", [
    ({"logprobs": 21}, "logprobs"),
    ({"extra_body": {"prompt_logprobs": 21}}, "prompt_logprobs"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"prompt": [[5, 6, 100000]]}, "prompt"),
    ({"prompt": [5, -1]}, "prompt"),
    ({"prompt": []}, "prompt"),
])
def test_bad_completion_requests_are_400s(client, options, param):
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(**{"model": "large", "prompt": PROMPT, **options})
    assert error.value.body["param"] == param


def test_bad_chat_requests_are_400s(client):
    messages = [{"role": "user", "content": "2 + 2?"}]
    with pytest.raises(openai.BadRequestError, match="needs logprobs") as error:
        client.chat.completions.create(model="large", messages=messages, top_logprobs=2)
    assert error.value.body["param"] == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="large", messages=messages, logprobs=True, top_logprobs=25)
    assert error.value.body["param"] == "top_logprobs"
