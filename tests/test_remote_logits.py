"""Token-level strategies over an endpoint that scores tokens: `relaykit serve` holding the shipped
toy-large on loopback as the large model, compared with the same strategies in-process."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import torch  # noqa: E402

from relaykit import api  # noqa: E402
from relaykit.decoding.prompt import encode_prompt  # noqa: E402
from relaykit.decoding.sampler import SamplingConfig  # noqa: E402
from relaykit.decoding.stopping import StopConfig  # noqa: E402
from relaykit.errors import RelaykitError  # noqa: E402
from relaykit.models.remote import load_remote  # noqa: E402
from relaykit.runtime.session import generate  # noqa: E402
from relaykit.serve import create_app, serving  # noqa: E402
from relaykit.toyworld import SHIPPED_CUES, TOY_LARGE, load_split  # noqa: E402

STOP = StopConfig(max_new_tokens=256)


@pytest.fixture(scope="module")
def endpoint(shipped_pair):
    with serving(create_app({"large": shipped_pair["large"]})) as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def remote_pair(shipped_pair, endpoint):
    return {"large": load_remote(f"{endpoint}#large", str(TOY_LARGE), name="large"), "small": shipped_pair["small"]}


@pytest.fixture(scope="module")
def questions(shipped_pair):
    tokenizer = shipped_pair["large"].tokenizer
    return [encode_prompt(tokenizer, problem.question) for problem in load_split("test", 8)]


def _same_text(spec: str, here_models: dict, there_models: dict, prompts, sampling=None):
    here = generate(api.build_strategy(spec, here_models, stop=STOP, sampling=sampling), prompts)
    there = generate(api.build_strategy(spec, there_models, stop=STOP, sampling=sampling), prompts)
    for a, b in zip(here, there):
        assert b.text == a.text
        assert b.provenance == a.provenance
        assert [(e.position, e.reason, e.handoff) for e in b.events] == [(e.position, e.reason, e.handoff)
                                                                        for e in a.events]
    return here, there


def test_the_probe_finds_the_protocol_and_scores_equal_the_models_log_softmax(remote_pair, shipped_pair, questions):
    large = remote_pair["large"]
    assert large.scoring_refusal() is None and large.protocol == "vllm"
    tokens = questions[0]
    scores = large.score(tokens, 6, 5)
    with torch.no_grad():
        reference = torch.log_softmax(shipped_pair["large"].hf(torch.tensor([tokens])).logits[0, -6:].float(), -1)
    for i, (row, expected) in enumerate(zip(scores.rows, reference)):
        assert len(row) >= 5
        for token, value in row.items():
            assert abs(value - float(expected[token])) < 1e-4
        assert int(expected.argmax()) in row
        if i < 5:
            assert tokens[len(tokens) - 5 + i] in row  # the token that follows is always scored
    assert scores.exchange.bytes_sent > 0 and scores.exchange.bytes_received > 0


def test_speculative_greedy_writes_the_in_process_text(shipped_pair, remote_pair, questions):
    here, there = _same_text("speculative[k=8]", shipped_pair, remote_pair, questions)
    large_alone = generate(api.build_strategy("large", shipped_pair, stop=STOP), questions)
    assert [r.text for r in there] == [r.text for r in large_alone]
    usage = there[0].usage["large"]
    assert usage.requests == usage.forward_calls > 0
    assert usage.tokens_scored > 0 and usage.tokens_sent >= usage.tokens_scored and usage.bytes_received > 0
    assert usage.flops == 0  # an endpoint's FLOPs are not known


def test_drafts_from_the_context_are_checked_over_the_endpoint(shipped_pair, remote_pair, questions):
    for spec in ("suffix", "lookup"):
        _, there = _same_text(spec, {"large": shipped_pair["large"]}, {"large": remote_pair["large"]}, questions[:4])
        assert sum(r.usage["large"].checks for r in there) > 0


def test_relaygen_with_its_check_writes_the_in_process_text(shipped_pair, remote_pair, questions):
    tuned = f"relaygen[cues={SHIPPED_CUES} speculative=32 draft_confidence=0.8]"
    for spec in (f"relaygen[cues={SHIPPED_CUES}]", tuned):
        built = api.build_strategy(spec, remote_pair, stop=STOP)
        assert built.config.check is not None and built.config.check != float("inf")  # the cues file's threshold
        here, there = _same_text(spec, shipped_pair, remote_pair, questions)
        assert sum(r.tokens_by("small") for r in there) > 0
        assert sum(r.usage["large"].tokens_scored for r in there) > 0


def test_uncertainty_runs_and_samples_from_the_top_tokens(shipped_pair, remote_pair, questions):
    _same_text("uncertainty", shipped_pair, remote_pair, questions[:3])
    sampled = generate(api.build_strategy("speculative[k=4]", remote_pair, stop=StopConfig(max_new_tokens=64),
                                          sampling=SamplingConfig(temperature=0.7, seed=3)), questions[:2])
    assert all(r.text for r in sampled)


def test_an_endpoint_that_gives_no_logprobs_is_refused_naming_the_feature(endpoint, shipped_pair):
    text_only = load_remote(f"completions+{endpoint}#large", str(TOY_LARGE), name="large")
    with pytest.raises(RelaykitError, match="gives no log-probabilities of prompt tokens"):
        api.build_strategy("speculative", {"large": text_only, "small": shipped_pair["small"]})
    small_remote = load_remote(f"{endpoint}#large", str(TOY_LARGE), name="small")
    with pytest.raises(RelaykitError, match="reads the small model's whole next-token distribution"):
        api.build_strategy("speculative[k=4]", {"large": shipped_pair["large"], "small": small_remote})
    with pytest.raises(RelaykitError, match="unknown protocol"):
        load_remote(f"tgi+{endpoint}#large", str(TOY_LARGE))


def test_a_spec_names_its_protocol_before_the_url():
    from relaykit.models.remote import is_remote, split_spec

    assert split_spec("vllm+http://h:8000/v1#org/model") == ("vllm", "http://h:8000/v1", "org/model")
    assert split_spec("http://h:8000/v1#org/model+lora") == (None, "http://h:8000/v1", "org/model+lora")
    assert is_remote("http://h/v1#org/model+lora") and is_remote("sglang+https://h/v1#m")
    assert not is_remote("org/model+lora") and not is_remote("./folder")
