"""LocalRunner properties: incremental catch-up equals full recompute, rollback, hidden tokens."""

import pytest
import torch

from conftest import prompts
from relaykit.decoding.sequence import Sequence
from relaykit.models.hf_engine import HFEngine
from relaykit.runtime.local_runner import LocalRunner

ARCHS = ["llama", "qwen2"]


def full_logits(model, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model.hf(torch.tensor([tokens])).logits[0].float()


def hf_runner(model, name="large"):
    runner = LocalRunner(model, name)
    runner.engine = HFEngine(model)
    return runner


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("engine", ["native", "hf"])
def test_catch_up_equals_full_recompute_at_arbitrary_splits(models, arch, engine):
    model = models[(arch, "large")]
    assert model.native
    generator = torch.Generator().manual_seed(3)
    texts = prompts(model.tokenizer, 5, seed=1)
    for _ in range(3):
        runner = LocalRunner(model, "large") if engine == "native" else hf_runner(model)
        sequences = [Sequence(t) for t in texts]
        full = [t + torch.randint(3, 70, (40,), generator=generator).tolist() for t in texts]
        # extend each row by different random amounts, asking for logits at every step
        while any(len(s) < len(f) for s, f in zip(sequences, full)):
            for s, f in zip(sequences, full):
                step = int(torch.randint(0, 7, (1,), generator=generator))
                s.extend(f[len(s) : len(s) + step], "other")
            logits = runner.next_logits(sequences)
            for row, s in enumerate(sequences):
                expected = full_logits(model, s.tokens)[-1]
                assert (logits[row] - expected).abs().max() <= 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_single_sequence_catch_up(models, arch):
    model = models[(arch, "small")]
    tokens = prompts(model.tokenizer, 1, seed=5)[0] + list(range(10, 60))
    for split in (1, 2, 7, len(tokens) - 1):
        runner = LocalRunner(model, "small")
        sequence = Sequence(tokens[:split])
        runner.next_logits([sequence])
        sequence.extend(tokens[split:], "other")
        got = runner.next_logits([sequence])[0]
        assert (got - full_logits(model, tokens)[-1]).abs().max() <= 1e-4


def test_qwen3_catch_up_equals_full_recompute(tmp_path):
    """Qwen3 normalises q and k per head (the engine's own norms); one token at a time, in chunks
    and after a long prefill, the logits match the model's own forward."""
    from conftest import build_checkpoint
    from relaykit.models.loading import load_model

    model = load_model(str(build_checkpoint(tmp_path / "qwen3", "qwen3", layers=3, seed=4)), name="qwen3")
    assert model.native
    tokens = prompts(model.tokenizer, 1, seed=6)[0] + list(range(10, 70)) * 2
    for split in (1, 5, len(tokens) - 40, len(tokens) - 1):
        runner, sequence = LocalRunner(model, "large"), Sequence(tokens[:split])
        runner.next_logits([sequence])
        for step in (1, 3, 36):
            sequence.extend(tokens[len(sequence) : len(sequence) + step], "other")
            got = runner.next_logits([sequence])[0]
            assert (got - full_logits(model, sequence.tokens)[-1]).abs().max() <= 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_score_returns_the_last_k_positions(models, arch):
    model = models[(arch, "large")]
    runner = LocalRunner(model, "large")
    sequences = [Sequence(t + [20, 21, 22, 23, 24]) for t in prompts(model.tokenizer, 3, seed=2)]
    runner.next_logits(sequences)  # everything already seen: score must rewind by itself
    scored = runner.score(sequences, 4)
    for row, s in enumerate(sequences):
        assert (scored[row] - full_logits(model, s.tokens)[-4:]).abs().max() <= 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_rollback_then_reextend_equals_never_extended(models, arch):
    model = models[(arch, "large")]
    texts = prompts(model.tokenizer, 4, seed=3)
    fresh, used = LocalRunner(model, "large"), LocalRunner(model, "large")
    a = [Sequence(t) for t in texts]
    b = [Sequence(t) for t in texts]
    used.next_logits(b)
    for i, s in enumerate(b):
        s.extend([30 + i] * (i + 2), "other")
    used.next_logits(b)
    used.rollback(b, 3)  # explicit rollback of cached tokens
    for s in b:
        s.truncate(s.prompt_length)  # and truncation, noticed automatically
    for s_a, s_b in zip(a, b):
        s_a.extend([40, 41], "other")
        s_b.extend([40, 41], "other")
    assert torch.allclose(fresh.next_logits(a), used.next_logits(b), atol=1e-5)


def test_hidden_tokens_are_invisible_to_that_model(models):
    model = models[("llama", "large")]
    runner = LocalRunner(model, "large")
    prompt = prompts(model.tokenizer, 1, seed=4)[0]
    sequence = Sequence(prompt)
    sequence.extend([11, 12], "small")
    sequence.extend([50, 51, 52], "small", hidden_from=["large"])  # e.g. a <call> command
    sequence.extend([13], "small")
    visible = prompt + [11, 12, 13]
    assert sequence.visible_to("large") == visible
    logits = runner.next_logits([sequence])[0]
    assert (logits - full_logits(model, visible)[-1]).abs().max() <= 1e-4


def test_usage_counts_prefill_and_own_tokens(models):
    model = models[("llama", "large")]
    runner = LocalRunner(model, "large")
    sequence = Sequence([5, 6, 7, 8])
    runner.next_logits([sequence])
    sequence.extend([9, 10], "large")
    sequence.extend([11, 12, 13], "small")
    runner.next_logits([sequence])
    usage = runner.usage_of(sequence)
    assert (usage.prefill_tokens, usage.decode_tokens, usage.forward_calls) == (7, 2, 2)
    assert usage.flops > 2 * model.non_embedding_parameters * 9
