"""Strategies over an OpenAI-compatible endpoint: a real third-party engine (`transformers serve`)
serving the shipped toy pair on loopback, compared with the same strategies in-process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from relaykit.cli import main
from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.stopping import StopConfig
from relaykit.errors import RelaykitError
from relaykit.models.kv import make_policy
from relaykit.models.loading import load_model
from relaykit.models.remote import load_remote
from relaykit.runtime.session import Session, generate
from relaykit.strategies.base import get_strategy
from relaykit.strategies.relaygen import RelayGenConfig
from relaykit.toyworld import TOY_LARGE, TOY_SMALL, TOY_SMALL_RELAY, load_split

for module in ("fastapi", "uvicorn", "openai"):
    pytest.importorskip(module, reason="`transformers serve` needs transformers[serving]")

CUES = "Wait,|So|Again,|Also,|Therefore,|Thus|Hence"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint():
    """`transformers serve` on loopback; models are loaded on first request by their path."""
    port = _free_port()
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 180
    while time.time() < deadline:
        if server.poll() is not None:
            pytest.fail(f"transformers serve exited: {server.stderr.read().decode()[-800:]}")
        try:
            urllib.request.urlopen(url + "/models", timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        server.kill()
        pytest.fail("transformers serve did not start within 180 s")
    yield url
    server.terminate()
    server.wait(timeout=30)


def _pairs(url):
    local = {role: load_model(str(folder), name=role) for role, folder in (("large", TOY_LARGE), ("small", TOY_SMALL))}
    remote = {role: load_remote(f"{url}#{folder}", name=role)
              for role, folder in (("large", TOY_LARGE), ("small", TOY_SMALL))}
    return local, remote


def test_relaygen_over_transformers_serve_matches_in_process(endpoint):
    """Greedy: the same text, written by the same model span for span, and the same hand-offs."""
    local, remote = _pairs(endpoint)
    prompts = [encode_prompt(local["large"].tokenizer, p.question) for p in load_split("test", 10)]
    stop = StopConfig(max_new_tokens=256)
    # the plain hand-off in-process too: the check needs the large model's logits, which an endpoint does not give
    for name, config in (("large", None), ("relaygen", RelayGenConfig(cues=CUES, check=float("inf")))):
        here = generate(get_strategy(name)(local, config, stop=stop), prompts)
        there = generate(get_strategy(name)(remote, config, stop=stop), prompts)
        tokenizer = local["large"].tokenizer
        for a, b in zip(here, there):
            assert b.text == a.text
            assert b.segments(tokenizer) == a.segments(tokenizer)
            assert [(e.handoff, e.cue) for e in b.events] == [(e.handoff, e.cue) for e in a.events]
        if name == "relaygen":
            assert sum(r.tokens_by("small") for r in there) > 0
            assert all(r.usage["small"].forward_calls > 0 for r in there)


def test_relayllm_over_transformers_serve_matches_in_process(endpoint):
    """Greedy, the shipped toy-small-relay calling toy-large: the same text, the same writers and
    the same calls, with both models behind the endpoint."""
    folders = {"large": TOY_LARGE, "small": TOY_SMALL_RELAY}
    local = {role: load_model(str(folder), name=role) for role, folder in folders.items()}
    remote = {role: load_remote(f"{endpoint}#{folder}", name=role) for role, folder in folders.items()}
    prompts = [encode_prompt(local["large"].tokenizer, p.question) for p in load_split("test", 10)]
    stop = StopConfig(max_new_tokens=256)
    here = generate(get_strategy("relayllm")(local, stop=stop), prompts)
    there = generate(get_strategy("relayllm")(remote, stop=stop), prompts)
    tokenizer = local["large"].tokenizer
    for a, b in zip(here, there):
        assert b.text == a.text
        assert b.segments(tokenizer) == a.segments(tokenizer)
        assert [(e.position, e.cue, e.detail) for e in b.events] == [(e.position, e.cue, e.detail) for e in a.events]
    assert sum(r.tokens_by("large") for r in there) > 0


def test_budget_inside_thinking_still_answers_remotely(endpoint):
    """The budget closes the thinking and the small model writes after it, as in-process."""
    local, remote = _pairs(endpoint)
    prompt = encode_prompt(remote["large"].tokenizer, load_split("test", 1)[0].question)
    config, stop = RelayGenConfig(cues=CUES, check=float("inf")), StopConfig(max_new_tokens=60)
    there = generate(get_strategy("relaygen")(remote, config, stop=stop), [prompt])[0]
    here = generate(get_strategy("relaygen")(local, config, stop=stop), [prompt])[0]
    assert there.text == here.text and there.events == here.events
    assert [e.reason for e in there.events][-2:] == ["budget", "answer"]
    assert there.text.split("</think>")[1].strip()


def test_cli_eval_over_endpoints(endpoint, tmp_path, capsys):
    large, small = f"{endpoint}#{TOY_LARGE}", f"{endpoint}#{TOY_SMALL}"
    code = main(["eval", "--strategy", "relaygen", "--cues", CUES, "--large", large, "--small", small,
                 "--dataset", "toy:test", "--limit", "2", "--out", str(tmp_path)])
    assert code == 0 and (tmp_path / "results.json").is_file()


def test_clear_errors(tmp_path, capsys):
    tokenizer_only = load_remote(f"http://127.0.0.1:9#{TOY_LARGE}")
    with pytest.raises(RelaykitError, match="cannot reach"):
        tokenizer_only.complete("hi", 2)
    with pytest.raises(RelaykitError, match="URL#MODEL"):
        load_remote("http://127.0.0.1:9/v1")
    with pytest.raises(RelaykitError, match="whole next-token distribution"):  # a drafter must be in-process
        get_strategy("speculative")({"large": tokenizer_only, "small": tokenizer_only})
    with pytest.raises(RelaykitError, match="cannot reach"):  # the probe of an endpoint that does not answer
        get_strategy("speculative")({"large": tokenizer_only, "small": load_model(str(TOY_SMALL), name="small")})
    with pytest.raises(RelaykitError, match="KV policies"):
        Session({"large": tokenizer_only}, make_policy("rpc"))
    code = main(["generate", "--large", "http://127.0.0.1:9/v1#" + str(TOY_LARGE), "hello"])
    assert code == 2 and "cannot reach" in capsys.readouterr().err
