"""`relaykit serve` on loopback with the shipped toy pair, driven by the official `openai` client."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from relaykit import api  # noqa: E402
from relaykit.decoding.prompt import encode_prompt  # noqa: E402
from relaykit.decoding.stopping import StopConfig  # noqa: E402
from relaykit.evals.datasets import load_dataset  # noqa: E402
from relaykit.runtime.session import Session, generate  # noqa: E402
from relaykit.serve import create_app, serving  # noqa: E402
from relaykit.toyworld import SHIPPED_CUES  # noqa: E402

KEY = "test-key"
QUESTION = "What is 41 * 7, then its last two digits * 3? Check it 2 times."


@pytest.fixture(scope="module")
def server(shipped_pair):
    """(base URL, scheduler) of a server with an API key, for the whole module."""
    session = Session(shipped_pair)
    with serving(create_app(session, api_key=KEY)) as url:
        yield url, session.scheduler


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0)


def get(url: str, key: str | None = None) -> tuple[int, str]:
    """(status, body) of a GET, with `Authorization: Bearer key` when given."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def long_question() -> str:
    """A toy problem whose solution is ~1,600 tokens: a stream of it is still running seconds later."""
    return load_dataset("toy:long:test", 1)[0].prompt


def chat(client, model: str, question: str = QUESTION, **options):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}], **options)


def test_models_health_and_key(server, client):
    ids = {model.id for model in client.models.list()}
    assert {"large", "small", "speculative", "relaygen"} <= ids
    assert get(server[0] + "/health") == (200, '{"status":"ok"}')
    assert get(server[0] + "/v1/models")[0] == 401
    with pytest.raises(openai.AuthenticationError) as error:
        openai.OpenAI(base_url=server[0] + "/v1", api_key="wrong", max_retries=0).models.list()
    assert error.value.body["code"] == "invalid_api_key"


def test_completion_and_chat_shapes(client):
    completion = client.completions.create(model="large", prompt=["12 * 3", "7 * 7"], max_tokens=5, temperature=0, n=2)
    assert completion.object == "text_completion" and [c.index for c in completion.choices] == [0, 1, 2, 3]
    assert all(c.finish_reason == "length" and c.text for c in completion.choices)
    usage = completion.usage
    assert usage.completion_tokens == 20 and usage.total_tokens == usage.prompt_tokens + 20
    assert usage.relaykit["large_token_share"] == 1.0 and usage.relaykit["models"]["large"]["decode_tokens"] > 0

    answer = chat(client, "relaygen", temperature=0)
    assert answer.object == "chat.completion" and answer.choices[0].message.role == "assistant"
    assert (answer.choices[0].finish_reason == "stop"
            and answer.choices[0].message.content.endswith("The answer is 261."))
    share = answer.usage.relaykit["large_token_share"]
    assert 0 < share < 1 and set(answer.usage.relaykit["models"]) == {"large", "small"}


def test_provenance(client):
    options = {"temperature": 0, "max_tokens": 60, "extra_body": {"relaykit": {"provenance": True}}}
    whole = chat(client, "relaygen", **options)
    writers = whole.choices[0].model_extra["relaykit"]["provenance"]
    assert len(writers) == whole.usage.completion_tokens and {"large", "small"} <= set(writers)
    chunks = list(chat(client, "relaygen", stream=True, **options))
    streamed = [w for c in chunks for w in (c.choices[0].model_extra.get("relaykit") or {}).get("provenance", [])]
    assert streamed == writers


def test_strategy_options_in_the_request(client):
    """`relaykit.options` is NAME[option=value ...] in the body: the same text as the variant."""
    variant = chat(client, "relaygen[speculative=4]", temperature=0, max_tokens=80).choices[0].message.content
    optioned = chat(client, "relaygen", temperature=0, max_tokens=80,
                    extra_body={"relaykit": {"options": {"speculative": 4}}}).choices[0].message.content
    assert optioned == variant
    with pytest.raises(openai.BadRequestError, match="no chosen strategy") as error:
        chat(client, "large", extra_body={"relaykit": {"options": {"speculative": 4}}})
    assert error.value.body["param"] == "relaykit.options"
    for wrong in ({"speculative": "abc"}, {"cues": 5}, {"min_large_tokens": 1.5}):  # a 400 naming the type, never a 500
        with pytest.raises(openai.BadRequestError, match="takes"):
            chat(client, "relaygen", extra_body={"relaykit": {"options": wrong}})


def test_a_strategy_with_its_own_trained_model_says_how_to_serve_it(client):
    """On the shipped pair `relayllm` needs toy-small-relay as the small model: not listed, and a
    request says how to start the server for it."""
    assert "relayllm" not in [m.id for m in client.models.list().data]
    with pytest.raises(openai.BadRequestError, match="--small .*toy-small-relay"):
        chat(client, "relayllm")


def test_streaming_with_usage_and_stop(client):
    whole = chat(client, "speculative[k=2]", temperature=0, max_tokens=40)
    chunks = list(chat(client, "speculative[k=2]", temperature=0, max_tokens=40, stream=True,
                       stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 40

    whole = chat(client, "large", temperature=0, max_tokens=60).choices[0].message.content
    stopped = list(chat(client, "large", temperature=0, max_tokens=60, stop=[" = ", "never"], stream=True, n=2))
    for index in (0, 1):
        choices = [c.choices[0] for c in stopped if c.choices[0].index == index]
        assert "".join(c.delta.content or "" for c in choices) == whole.split(" = ")[0]
        assert choices[-1].finish_reason == "stop"


def test_request_errors(client):
    with pytest.raises(openai.NotFoundError) as error:
        chat(client, "gpt-4")
    assert error.value.body["code"] == "model_not_found" and "relaygen" in error.value.body["message"]
    with pytest.raises(openai.BadRequestError) as error:
        chat(client, "large", extra_body={"logit_bias": {"1": 5}})
    assert error.value.body["param"] == "logit_bias" and error.value.status_code == 400
    with pytest.raises(openai.BadRequestError, match="temperature"):
        chat(client, "large", temperature=5)
    with pytest.raises(openai.BadRequestError, match="context of 4096 tokens"):
        chat(client, "large", max_tokens=5000)
    with pytest.raises(openai.BadRequestError, match="context is 4096"):
        client.completions.create(model="large", prompt="1 " * 2100)
    with pytest.raises(openai.BadRequestError, match="no option"):
        chat(client, "relaygen[k=3]")
    with pytest.raises(openai.APIStatusError, match="over 4194304 bytes") as error:
        chat(client, "large", "x" * 5_000_000)
    assert error.value.status_code == 413


def test_a_chunked_body_past_the_limit_gets_a_413_and_a_small_one_is_served(server):
    import http.client
    import urllib.parse

    address = urllib.parse.urlparse(server[0])
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    def post_chunked(body: bytes) -> tuple[int, dict]:
        """POST with Transfer-Encoding: chunked (no Content-Length), 64 KiB a chunk."""
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
        chunks = (body[start : start + 65536] for start in range(0, len(body), 65536))
        try:
            connection.request("POST", "/v1/completions", body=chunks, headers=headers, encode_chunked=True)
        except (BrokenPipeError, ConnectionResetError):  # the server answered before the body ended
            pass
        response = connection.getresponse()
        return response.status, json.loads(response.read())

    status, answer = post_chunked(json.dumps({"model": "large", "prompt": "x" * 5_000_000, "max_tokens": 1}).encode())
    assert status == 413 and answer["error"]["code"] == "request_too_large"
    status, answer = post_chunked(json.dumps({"model": "large", "prompt": "What is 2 * 3?", "max_tokens": 4}).encode())
    assert status == 200 and answer["choices"][0]["text"]


@pytest.mark.parametrize("name", ["large", "relaygen"])
def test_greedy_text_equals_in_process(client, shipped_pair, name):
    problems = load_dataset("toy:test", 2)
    strategy = api.build_strategy(name, shipped_pair, stop=StopConfig(max_new_tokens=200))
    expected = generate(strategy, [encode_prompt(strategy.tokenizer, p.prompt) for p in problems])
    for problem, result in zip(problems, expected):
        served = chat(client, name, problem.prompt, temperature=0, max_tokens=200)
        assert served.choices[0].message.content == result.text


def test_dropped_streams_free_their_rows(server, client, monkeypatch):
    scheduler = server[1]
    outcomes: dict[int, str] = {}
    cancelled = []  # requests the server cancelled before they were done
    cancel = scheduler.cancel

    def recording_cancel(handle):
        if not handle.done:
            cancelled.append(handle)
        cancel(handle)

    monkeypatch.setattr(scheduler, "cancel", recording_cancel)

    def stream(index: int) -> None:
        response = chat(client, "relaygen", long_question() if index % 2 else QUESTION, temperature=0, stream=True)
        chunks = 0
        for chunk in response:
            chunks += 1
            if index % 2 and chunks == 3:
                response.close()  # the client goes away mid-stream
                outcomes[index] = "dropped"
                return
            if chunk.choices and chunk.choices[0].finish_reason:
                outcomes[index] = chunk.choices[0].finish_reason

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(16)]  # half drop mid-stream
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert outcomes == {i: "dropped" if i % 2 else "stop" for i in range(16)}
    deadline = time.monotonic() + 10
    while scheduler.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not scheduler.busy
    assert len(cancelled) == 8 and all(handle.result().finish_reason == "cancelled" for handle in cancelled)
    assert sum(runner.kv_bytes for runner in scheduler.runners.values()) == 0


def test_metrics(server, client):
    chat(client, "speculative", temperature=0, max_tokens=8, stream=True).close()  # may be dropped early or not
    list(chat(client, "relaygen", temperature=0, max_tokens=8, stream=True))
    assert get(server[0] + "/metrics")[0] == 401
    status, text = get(server[0] + "/metrics", KEY)
    assert status == 200
    assert 'relaykit_requests_total{path="/v1/chat/completions",strategy="relaygen",status="200"}' in text
    assert 'relaykit_requests_total{path="/v1/chat/completions",strategy="",status="404"}' in text
    assert ('relaykit_time_to_first_token_seconds_bucket{le="+Inf"}' in text
            and "relaykit_inter_token_seconds_count" in text)
    assert 'relaykit_tokens_total{model="small"}' in text and "relaykit_requests_running" in text
    assert 'relaykit_kv_bytes{model="large"}' in text


def test_draft_acceptance_in_usage_and_metrics(server, client):
    model = "suffix[fit_load=false]"
    answer = chat(client, model, temperature=1.0, seed=2, n=2, max_tokens=60)
    drafts = answer.usage.relaykit["models"]["large"]["drafts"]
    assert drafts["checks"] > 0 and drafts["accepted"] <= drafts["drafted"]
    assert sum(drafts["accepted_lengths"].values()) == drafts["checks"]
    assert drafts["mean_accepted"] == pytest.approx(drafts["accepted"] / drafts["checks"])
    assert "drafts" not in chat(client, "large", max_tokens=4).usage.relaykit["models"]["large"]
    text = get(server[0] + "/metrics", KEY)[1]
    labels = f'strategy="{model}",model="large"'
    assert f'relaykit_drafts_total{{{labels},kind="checks"}} {drafts["checks"]}' in text
    assert f'relaykit_accepted_drafts_count{{{labels}}} {drafts["checks"]}' in text


def test_past_max_concurrency_is_429(shipped_pair):
    with serving(create_app(shipped_pair, max_concurrency=1)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        first = chat(client, "large", long_question(), temperature=0, stream=True)
        next(iter(first))
        with pytest.raises(openai.RateLimitError) as error:
            chat(client, "large", max_tokens=1)
        assert error.value.response.headers["retry-after"] == "1"
        first.close()


def test_a_relaykit_server_is_another_ones_large_model(shipped_pair):
    """Beyond one machine (docs/deploy.md): the second server's large model is the first server
    (`URL#large`); RelayGen through the two writes what in-process RelayGen writes (greedy, 10
    toy problems)."""
    from relaykit.models.remote import load_remote
    from relaykit.toyworld import TOY_LARGE

    relaygen = f"relaygen[cues={SHIPPED_CUES}]"
    in_process = api.build_strategy(relaygen, shipped_pair, stop=StopConfig(max_new_tokens=256))
    questions = [problem.prompt for problem in load_dataset("toy:test", 10)]
    expected = generate(in_process, [encode_prompt(shipped_pair["large"].tokenizer, q) for q in questions])
    with serving(create_app({"large": shipped_pair["large"]})) as first:
        large = load_remote(f"{first}/v1#large", str(TOY_LARGE), name="large")
        with serving(create_app({"large": large, "small": shipped_pair["small"]})) as second:
            client = openai.OpenAI(base_url=second + "/v1", api_key="none", max_retries=0)
            for question, result in zip(questions, expected):
                answer = client.chat.completions.create(
                    model=relaygen, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=256,
                    extra_body={"relaykit": {"provenance": True}})
                assert answer.choices[0].message.content == result.text
                assert answer.choices[0].model_extra["relaykit"]["provenance"] == result.provenance
    assert sum(r.tokens_by("small") for r in expected) > 0
