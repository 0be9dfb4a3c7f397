"""`Session.score`: a scoring request through the scheduler gives the model's own log-softmax."""

from __future__ import annotations

import pytest
import torch

from conftest import prompts
from relaykit import api
from relaykit.decoding.stopping import StopConfig
from relaykit.errors import RelaykitError
from relaykit.models.kv import make_policy
from relaykit.runtime.session import Session


def reference(model, tokens: list[int]) -> torch.Tensor:
    """log_softmax of the model's own forward over `tokens`: [len(tokens), V]."""
    with torch.no_grad():
        return model.hf(torch.tensor([tokens])).logits[0].float().log_softmax(-1)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_scores_equal_the_models_log_softmax(models, arch):
    large, small = models[(arch, "large")], models[(arch, "small")]
    session = Session({"large": large, "small": small})
    for tokens in prompts(large.tokenizer, 3, seed=4):
        for role, model in (("large", large), ("small", small)):
            expected = reference(model, tokens)
            for k in (1, 3, len(tokens)):
                rows = session.score(role, tokens, k).rows()
                assert rows.dtype == torch.float32 and rows.shape == (k, expected.shape[1])
                assert (rows - expected[-k:]).abs().max() <= 1e-4


def test_scoring_batches_with_running_requests_and_frees_its_rows(models):
    """Scoring requests join the steps of generations on the same runner; the generations write
    what they write alone, and every row is freed after."""
    large = models[("llama", "large")]
    session = Session({"large": large})
    strategy = api.build_strategy("large", {"large": large}, stop=StopConfig(max_new_tokens=12))
    batch = prompts(large.tokenizer, 4, seed=5)
    alone = [result.token_ids for result in session.generate(strategy, batch)]
    handles = [session.submit(strategy, prompt) for prompt in batch]
    scores = [session.score("large", prompt, len(prompt)) for prompt in batch]
    forwards = session.runners["large"].usage.forward_calls
    session.scheduler.step()
    assert all(score.done for score in scores) and not any(handle.done for handle in handles)
    assert session.runners["large"].usage.forward_calls - forwards <= 2  # with the generations' (two feed lengths)
    assert [handle.result().token_ids for handle in handles] == alone
    for prompt, score in zip(batch, scores):
        assert (score.rows() - reference(large, prompt)).abs().max() <= 1e-4
        assert score.result().usage["large"].prefill_tokens == len(prompt)
    assert session.runners["large"].kv_bytes == 0 and not session.scheduler.busy


def test_under_a_kv_policy_scores_are_the_full_cache_models(models):
    large = models[("llama", "large")]
    session = Session({"large": large}, kv=make_policy("streaming", budget=8, sinks=2, interval=1))
    tokens = sum(prompts(large.tokenizer, 4, seed=6), [])
    assert len(tokens) > 16
    assert (session.score("large", tokens, len(tokens)).rows() - reference(large, tokens)).abs().max() <= 1e-4


def test_bad_scoring_requests_are_refused(models):
    session = Session({"large": models[("llama", "large")]})
    with pytest.raises(RelaykitError, match="no small model"):
        session.score("small", [5, 6], 1)
    with pytest.raises(RelaykitError, match="last 3 positions of 2 tokens"):
        session.score("large", [5, 6], 3)
