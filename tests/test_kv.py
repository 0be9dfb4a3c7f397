"""KV policies: a budget above the length is the full cache; a compressed cache computes exactly
what a full cache with the dropped tokens masked computes; feed granularity, batching and
speculative rollback do not change RPC's output; memory shrinks."""

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from conftest import prompts
from relaykit.decoding.sequence import Sequence
from relaykit.decoding.stopping import StopConfig
from relaykit.errors import RelaykitError
from relaykit.models.kv import make_policy
from relaykit.runtime.local_runner import LocalRunner
from relaykit.runtime.session import Session, generate
from relaykit.strategies.base import get_strategy
from relaykit.strategies.speculative import SpeculativeConfig

ARCHS = ["llama", "qwen2"]
SMALL_BUDGETS = {  # scaled down so that a 90-token sequence sees several compression steps
    "rpc": dict(interval=12, window=4, ratio=2.0),
    "rpc-per-group": dict(interval=10, window=5, ratio=3.0, per_group=True),
    "h2o": dict(budget=16, window=6, interval=4),
    "streaming": dict(budget=16, sinks=2, interval=3),
}


def policy(key: str, **overrides):
    return make_policy(key.split("-")[0], **{**SMALL_BUDGETS[key], **overrides})


def random_tokens(count: int, seed: int) -> list[int]:
    return torch.randint(3, 70, (count,), generator=torch.Generator().manual_seed(seed)).tolist()


def token_by_token(runner: LocalRunner, prompt: list[int], continuation: list[int], record=None) -> torch.Tensor:
    """Logits [len(continuation) + 1, V] after the prompt and after each continuation token;
    `record(position, cache)` is called after each forward."""
    sequence, out = Sequence(prompt), []
    for token in [None, *continuation]:
        if token is not None:
            sequence.append(token, "other")
        out.append(runner.next_logits([sequence])[0])
        if record:
            record(len(sequence) - 1, runner.engine.cache)
    return torch.stack(out)


def masked_reference(model, tokens: list[int], visible: torch.Tensor) -> torch.Tensor:
    """Logits [N, V] of the model's own modules over the full sequence where query i of layer l
    and KV head h sees key j only if visible[l, h, i, j] (a slow, independent reference)."""
    body, count = model.hf.model, len(tokens)
    with torch.no_grad():
        hidden = body.embed_tokens(torch.tensor([tokens]))
        cos, sin = body.rotary_emb(hidden, torch.arange(count)[None])
        for layer, block in zip(visible, body.layers):
            attention = block.self_attn
            x = block.input_layernorm(hidden)
            split = lambda projection: projection(x).view(1, count, -1, attention.head_dim).transpose(1, 2)  # noqa: E731, B023 - called in this iteration only
            q, k, v = split(attention.q_proj), split(attention.k_proj), split(attention.v_proj)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            group = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
            logits = (q @ k.transpose(-1, -2) * attention.scaling).masked_fill(
                ~layer.repeat_interleave(group, 0), float("-inf"))
            out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(1, count, -1)
            hidden = hidden + attention.o_proj(out)
            hidden = hidden + block.mlp(block.post_attention_layernorm(hidden))
        return model.hf.lm_head(body.norm(hidden))[0].float()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name,options", [
    ("rpc", dict(interval=64, window=8)), ("rpc", dict(interval=12, window=4, ratio=1.0)),
    ("h2o", dict(budget=200, window=10)), ("streaming", dict(budget=200)),
])
def test_budget_above_the_length_equals_the_full_cache(models, arch, name, options):
    model = models[(arch, "large")]
    prompt, continuation = prompts(model.tokenizer, 1, seed=1)[0], random_tokens(60, 1)
    full = token_by_token(LocalRunner(model, "large"), prompt, continuation)
    compressed = LocalRunner(model, "large", make_policy(name, **options))
    got = token_by_token(compressed, prompt, continuation)
    assert (got - full).abs().max() <= 1e-5
    assert int(compressed.engine.cache.lengths[0]) == len(prompt) + len(continuation)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("key", list(SMALL_BUDGETS))
def test_compressed_cache_equals_masked_full_cache(models, arch, key):
    """Each query sees exactly the slots cached when it was fed, at their original positions."""
    model = models[(arch, "large")]
    prompt, continuation = prompts(model.tokenizer, 1, seed=2)[0], random_tokens(90, 2)
    tokens = prompt + continuation
    count, layers, kv_heads = len(tokens), model.config.num_hidden_layers, model.config.num_key_value_heads
    visible = torch.tril(torch.ones(count, count, dtype=torch.bool)).expand(layers, kv_heads, -1, -1).clone()

    def record(position, cache):
        if position >= len(prompt):
            seen = cache.positions[:, 0, :, : int(cache.lengths[0])].long()
            visible[:, :, position] = False
            visible[:, :, position].scatter_(-1, seen, True)

    got = token_by_token(LocalRunner(model, "large", policy(key)), prompt, continuation, record)
    expected = masked_reference(model, tokens, visible)[len(prompt) - 1 :]
    assert (got - expected).abs().max() <= 1e-4
    assert visible[:, :, -1].sum(-1).max() < count - 40  # tokens were really dropped
    if key.startswith("rpc"):
        assert not (visible[:, :, -1] == visible[0, 0, -1]).all()  # each layer keeps its own tokens
        assert visible[:, :, -1, : len(prompt)].all()  # the prompt is always kept


@pytest.mark.parametrize("arch", ARCHS)
def test_rpc_is_independent_of_feed_granularity_and_batching(models, arch):
    """Rows of different lengths fed random chunks (compression steps inside a chunk) give the
    logits of each row fed alone, token by token."""
    model = models[(arch, "large")]
    texts = prompts(model.tokenizer, 4, seed=3)
    continuations = [random_tokens(70, 10 + i) for i in range(4)]
    expected = [token_by_token(LocalRunner(model, "large", policy("rpc")), t, c) for t, c in zip(texts, continuations)]
    generator = torch.Generator().manual_seed(4)
    runner, sequences = LocalRunner(model, "large", policy("rpc")), [Sequence(t) for t in texts]
    runner.next_logits(sequences)
    while any(len(s) < len(t) + len(c) for s, t, c in zip(sequences, texts, continuations)):
        chunk = 1 + int(torch.randint(0, 9, (1,), generator=generator))
        active = [s for s, t, c in zip(sequences, texts, continuations) if len(s) + chunk <= len(t) + len(c)]
        if not active:
            chunk, active = 1, [s for s, t, c in zip(sequences, texts, continuations) if len(s) < len(t) + len(c)]
        for s in active:
            row = sequences.index(s)
            s.extend(continuations[row][len(s) - len(texts[row]) :][:chunk], "other")
        scored = runner.score(active, chunk)
        for s, logits in zip(active, scored):
            row = sequences.index(s)
            done = len(s) - len(texts[row])
            assert (logits - expected[row][done - chunk + 1 : done + 1]).abs().max() <= 1e-4


def pair(models, arch):
    return {"large": models[(arch, "large")], "small": models[(arch, "small")]}


@pytest.mark.parametrize("arch", ARCHS)
def test_speculative_with_rpc_equals_single_with_rpc(models, arch):
    """Rejected drafts are rolled back across compression steps without changing the output."""
    batch = prompts(models[(arch, "large")].tokenizer, 6, seed=5)
    stop = StopConfig(max_new_tokens=70, ignore_eos=True)
    kv = make_policy("rpc", interval=12, window=6, ratio=2.0)
    single = get_strategy("single")(pair(models, arch), stop=stop)
    expected = [r.token_ids for r in generate(single, batch, kv=kv)]
    speculative = get_strategy("speculative")(pair(models, arch), SpeculativeConfig(k=4, fit_load=False), stop=stop)
    assert [r.token_ids for r in generate(speculative, batch, kv=kv)] == expected
    assert generate(speculative, batch[:1], kv=kv)[0].token_ids == expected[0]
    full = generate(get_strategy("single")(pair(models, arch), stop=stop), batch)
    assert [r.token_ids for r in full] != expected  # compression did change the computation


@pytest.mark.parametrize("key", ["h2o", "streaming"])
def test_evicting_policies_batch_and_speculate(models, key):
    batch = prompts(models[("llama", "large")].tokenizer, 5, seed=6)
    stop = StopConfig(max_new_tokens=50, ignore_eos=True)
    single = get_strategy("single")(pair(models, "llama"), stop=stop)
    batched = [r.token_ids for r in generate(single, batch, kv=policy(key))]
    assert batched == [generate(single, [p], kv=policy(key))[0].token_ids for p in batch]
    speculative = get_strategy("speculative")(pair(models, "llama"), SpeculativeConfig(k=3, fit_load=False), stop=stop)
    assert all(len(r.token_ids) == 50 for r in generate(speculative, batch, kv=policy(key)))


def test_compression_releases_memory(models):
    model = models[("llama", "large")]
    batch = prompts(model.tokenizer, 4, seed=7)
    stop = StopConfig(max_new_tokens=300, ignore_eos=True)
    peaks = {}
    for name, options in [("full", {}), ("rpc", dict(interval=32, window=8, ratio=4.0))]:
        strategy = get_strategy("single")({"large": model}, stop=stop)
        session = Session(strategy.models, make_policy(name, **options))
        session.generate(strategy, batch)
        cache = session.runners["large"].engine.cache
        peaks[name] = (cache.peak_used_bytes, cache.peak_bytes, cache.capacity)
    assert peaks["rpc"][0] < 0.45 * peaks["full"][0]
    assert peaks["rpc"][1] < 0.5 * peaks["full"][1]
    assert peaks["rpc"][2] < 200


def test_rollback_into_dropped_tokens_is_refused(models):
    model = models[("llama", "large")]
    runner = LocalRunner(model, "large", make_policy("streaming", budget=8, sinks=2, interval=1))
    sequence = Sequence(random_tokens(20, 8))
    runner.next_logits([sequence])
    sequence.append(5, "other")
    runner.next_logits([sequence])  # evicts down to 8 slots
    runner.rollback([sequence], 3)  # within the recent window: fine
    with pytest.raises(RelaykitError, match="roll back"):
        runner.rollback([sequence], 7)


def test_make_policy_errors():
    assert make_policy("rpc").interval == 4096 and make_policy().name == "full"
    assert make_policy("rpc", window=8).fresh() == make_policy("rpc", window=8)
    for name, options in [("lru", {}), ("rpc", {"budget": 3}), ("rpc", {"ratio": 0.5}), ("rpc", {"window": 0}),
                          ("rpc", {"kernel": 4}), ("h2o", {"window": 2000}), ("streaming", {"sinks": 2000})]:
        with pytest.raises(RelaykitError):
            make_policy(name, **options)
