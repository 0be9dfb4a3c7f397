"""Strategy properties: single == HF generate, speculative greedy == large greedy, sampling law."""

import math

import pytest
import torch

from conftest import prompts
from relaykit import api
from relaykit.decoding.sampler import SamplingConfig
from relaykit.decoding.stopping import StopConfig
from relaykit.runtime.session import Session, generate
from relaykit.strategies.base import get_strategy
from relaykit.strategies.speculative import SpeculativeConfig


def hf_greedy(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.hf.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
        pad_token_id=model.tokenizer.pad_token_id,
    )
    generated = out[0, len(prompt) :].tolist()
    eos = model.tokenizer.eos_token_id
    return generated[: generated.index(eos) + 1] if eos in generated else generated


def pair(models, arch):
    return {"large": models[(arch, "large")], "small": models[(arch, "small")]}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_single_greedy_equals_hf_generate(models, arch):
    model = models[(arch, "large")]
    batch = prompts(model.tokenizer, 6, seed=7)
    strategy = get_strategy("single")({"large": model}, stop=StopConfig(max_new_tokens=24))
    batched = generate(strategy, batch)
    for prompt, result in zip(batch, batched):
        expected = hf_greedy(model, prompt, 24)
        assert result.token_ids == expected
        assert generate(strategy, [prompt])[0].token_ids == expected


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("k", [1, 4, 8])
def test_speculative_greedy_equals_large_greedy(models, arch, k):
    batch = prompts(models[(arch, "large")].tokenizer, 20, seed=k)
    stop = StopConfig(max_new_tokens=30)
    single = get_strategy("single")(pair(models, arch), stop=stop)
    speculative = get_strategy("speculative")(pair(models, arch), SpeculativeConfig(k=k, fit_load=False), stop=stop)
    expected = [r.token_ids for r in generate(single, batch)]
    assert [r.token_ids for r in generate(speculative, batch)] == expected  # batched
    for prompt, tokens in list(zip(batch, expected))[:5]:
        result = generate(speculative, [prompt])[0]
        assert result.token_ids == tokens
        assert set(result.provenance) <= {"small", "large"}


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_speculative_greedy_in_low_precision_equals_greedy_run_alone(checkpoints, dtype):
    """bfloat16 and int8 weights on the native engine: products are row by row the same whatever
    the batch, and a short chunk of one row attends position by position, so a verification forward
    computes each position's logits bit for bit as decoding it alone does. Speculative greedy then
    equals greedy token for token for a prompt run alone (batched rows share masks: not exact)."""
    from relaykit.decoding.sequence import Sequence
    from relaykit.models.loading import load_model
    from relaykit.runtime.local_runner import LocalRunner

    low = {role: load_model(str(checkpoints[("llama", role)]), name=role, dtype=dtype) for role in ("large", "small")}
    assert low["large"].dtype == dtype
    batch = prompts(low["large"].tokenizer, 8, seed=11)
    stop = StopConfig(max_new_tokens=30)
    single = get_strategy("single")(low, stop=stop)
    speculative = get_strategy("speculative")(low, SpeculativeConfig(k=4, fit_load=False), stop=stop)
    for prompt in batch:
        assert generate(speculative, [prompt])[0].token_ids == generate(single, [prompt])[0].token_ids
    tokens = batch[0] + list(range(10, 19))
    chunked, decoded = Sequence(tokens[:-6]), Sequence(tokens[:-6])
    chunk_runner, decode_runner = LocalRunner(low["large"]), LocalRunner(low["large"])
    chunk_runner.next_logits([chunked])
    chunked.extend(tokens[-6:], "other")
    logits = chunk_runner.score([chunked], 6)[0]
    decode_runner.next_logits([decoded])
    for i, token in enumerate(tokens[-6:]):
        decoded.append(token, "other")
        assert torch.equal(decode_runner.next_logits([decoded])[0], logits[i])


def test_speculative_with_itself_as_draft_accepts_everything(models):
    model = models[("llama", "large")]
    speculative = get_strategy("speculative")(
        {"large": model, "small": model}, SpeculativeConfig(k=4, fit_load=False), stop=StopConfig(max_new_tokens=21)
    )
    result = generate(speculative, prompts(model.tokenizer, 1, seed=9))[0]
    if len(result.token_ids) == 21:  # no early eos: 4 rounds of 4 drafts + 1 bonus, one last step
        assert result.usage["large"].forward_calls == 5
        assert result.provenance.count("large") == 5


def test_adaptive_k_and_draft_confidence_stay_greedy_exact(models):
    batch = prompts(models[("llama", "large")].tokenizer, 8, seed=11)
    stop = StopConfig(max_new_tokens=30)
    expected = [r.token_ids for r in generate(get_strategy("single")(pair(models, "llama"), stop=stop), batch)]
    adaptive = get_strategy("speculative")(pair(models, "llama"), SpeculativeConfig(k=2, adaptive=True, fit_load=False),
                                           stop=stop)
    assert [r.token_ids for r in generate(adaptive, batch)] == expected
    confident = get_strategy("speculative")(pair(models, "llama"),
                                            SpeculativeConfig(k=6, draft_confidence=0.5, fit_load=False), stop=stop)
    assert [r.token_ids for r in generate(confident, batch)] == expected


def chi_square_quantile(df: int, z: float = 3.09) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (z = 3.09: p = 0.001)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    n = counts.sum()
    expected = probs * n
    big = expected >= 5
    observed = torch.cat([counts[big], counts[~big].sum()[None]])
    expect = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = expect > 0
    statistic = ((observed[keep] - expect[keep]) ** 2 / expect[keep]).sum()
    return float(statistic), int(keep.sum()) - 1


@pytest.mark.parametrize(
    "sampling", [SamplingConfig(temperature=2.0, seed=0), SamplingConfig(temperature=1.5, top_k=20, top_p=0.9, seed=1)]
)
def test_speculative_sampling_follows_the_large_distribution(models, sampling):
    large, small = models[("llama", "large")], models[("llama", "small")]
    prompt = prompts(large.tokenizer, 1, seed=12)[0]
    draws = 3000
    speculative = get_strategy("speculative")(
        {"large": large, "small": small}, SpeculativeConfig(k=3, fit_load=False), sampling, StopConfig(max_new_tokens=4)
    )
    results = generate(speculative, [prompt] * draws)
    first = torch.tensor([r.token_ids[0] for r in results])
    counts = torch.bincount(first, minlength=len(large.tokenizer)).float()
    from relaykit.decoding.sampler import Sampler

    with torch.no_grad():
        warp = Sampler(sampling).probs
        p_large = warp(large.hf(torch.tensor([prompt])).logits[0, -1].float())
        p_small = warp(small.hf(torch.tensor([prompt])).logits[0, -1].float())
    statistic, df = chi_square(counts, p_large)
    assert statistic < chi_square_quantile(df), (statistic, df)
    # the test has power: the draft model's own distribution is rejected
    statistic, df = chi_square(counts, p_small)
    assert statistic > chi_square_quantile(df)


def test_stop_strings_and_budget(models):
    model = models[("llama", "large")]
    prompt = prompts(model.tokenizer, 1, seed=13)[0]
    free = generate(get_strategy("single")({"large": model}, stop=StopConfig(max_new_tokens=20)), [prompt])[0]
    assert free.finish_reason in {"length", "stop"} and len(free.token_ids) <= 20
    if len(free.text) >= 6:
        needle = free.text[3:5]
        stopped = generate(get_strategy("single")(
            {"large": model}, stop=StopConfig(max_new_tokens=20, stop_strings=[needle])
        ), [prompt])[0]
        assert stopped.finish_reason == "stop" and stopped.text.endswith(needle)
        assert free.text.startswith(stopped.text)


def test_ngram_index_proposes_what_followed_the_latest_earlier_occurrence():
    from relaykit.strategies.lookup import NgramIndex

    index = NgramIndex(longest=3)
    assert index.propose([5], 4) == []
    tokens = [1, 2, 3, 9, 1, 2, 3, 7, 8, 1, 2, 3]
    assert index.propose(tokens, 4) == [7, 8, 1, 2]  # the latest earlier "1 2 3", not the first
    assert index.propose(tokens + [7, 4], 2) == []  # "7 4", "4": never seen before
    assert index.propose(tokens + [7, 4, 8], 3) == [1, 2, 3]  # falls back to the 1-gram "8"


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_lookup_greedy_equals_greedy(models, arch):
    model = models[(arch, "large")]
    batch = prompts(model.tokenizer, 8, seed=5)
    batch = [p + p[:3] for p in batch]  # a repeated n-gram, so drafts are proposed from the start
    stop = StopConfig(max_new_tokens=40)
    expected = [r.token_ids for r in generate(get_strategy("single")({"large": model}, stop=stop), batch)]
    lookup = get_strategy("lookup")({"large": model}, stop=stop)
    assert [r.token_ids for r in generate(lookup, batch)] == expected  # batched
    assert [generate(lookup, [p])[0].token_ids for p in batch[:3]] == expected[:3]


def test_lookup_greedy_equals_greedy_on_the_toy_world_and_checks_several_tokens_a_forward(shipped_pair):
    from relaykit.decoding.prompt import encode_prompt
    from relaykit.toyworld import load_split

    large = shipped_pair["large"]
    batch = [encode_prompt(large.tokenizer, p.question) for p in load_split("test", 3)]
    stop = StopConfig(max_new_tokens=160)
    expected = generate(get_strategy("single")({"large": large}, stop=stop), batch)
    results = generate(get_strategy("lookup")({"large": large}, stop=stop), batch)
    assert [r.token_ids for r in results] == [r.token_ids for r in expected]
    tokens = sum(len(r.token_ids) for r in results)
    assert sum(r.usage["large"].forward_calls for r in results) < tokens / 1.5  # the check rounds repeat


@pytest.mark.parametrize("name", ["lookup", "suffix"])
def test_drafts_from_the_context_sample_as_the_model_does(models, name):
    from relaykit.decoding.sampler import Sampler
    from relaykit.strategies.drafting import SuffixConfig
    from relaykit.strategies.lookup import LookupConfig

    model = models[("llama", "large")]
    prompt = prompts(model.tokenizer, 1, seed=12)[0]
    prompt = prompt + prompt[:2]  # the first token is a checked draft: what followed "prompt[:2]"
    sampling = SamplingConfig(temperature=2.0, seed=0)
    config = LookupConfig(k=3) if name == "lookup" else SuffixConfig(fit_load=False, recent=False)
    drafting = get_strategy(name)({"large": model}, config, sampling, StopConfig(max_new_tokens=3))
    results = generate(drafting, [prompt] * 3000)
    assert sum(r.usage["large"].checks for r in results) >= 3000
    counts = torch.bincount(torch.tensor([r.token_ids[0] for r in results]), minlength=len(model.tokenizer)).float()
    with torch.no_grad():
        p = Sampler(sampling).probs(model.hf(torch.tensor([prompt])).logits[0, -1].float())
    statistic, df = chi_square(counts, p)
    assert statistic < chi_square_quantile(df), (statistic, df)
    assert counts[prompt[2]] < 0.9 * len(results)  # the draft is not simply kept


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_suffix_greedy_equals_greedy(models, arch):
    from relaykit.strategies.drafting import SuffixConfig

    model = models[(arch, "large")]
    batch = [p + p[:3] for p in prompts(model.tokenizer, 8, seed=5)]  # a repeated n-gram: drafts from the start
    stop = StopConfig(max_new_tokens=40)
    expected = [r.token_ids for r in generate(get_strategy("single")({"large": model}, stop=stop), batch)]
    for config in (SuffixConfig(fit_load=False), SuffixConfig()):  # every proposal checked; only what pays
        suffix = get_strategy("suffix")({"large": model}, config, stop=stop)
        results = generate(suffix, batch)
        assert [r.token_ids for r in results] == expected
        assert [generate(suffix, [p])[0].token_ids for p in batch[:3]] == expected[:3]
        if not config.fit_load:  # (what pays depends on timings)
            assert sum(r.usage["large"].checks for r in results) > 0


def test_suffix_and_its_compositions_write_the_large_models_greedy_text_on_the_toy_world(shipped_pair):
    from relaykit.decoding.prompt import encode_prompt
    from relaykit.toyworld import load_split

    large = shipped_pair["large"]
    batch = [encode_prompt(large.tokenizer, p.question) for p in load_split("test", 3)]
    stop = StopConfig(max_new_tokens=160)
    expected = [r.token_ids for r in generate(get_strategy("single")({"large": large}, stop=stop), batch)]
    for spec in ("suffix", "speculative[suffix=true k=4]", "self-consistency[inner=suffix n=2 stop=fixed]",
                 "best-of-n[inner=suffix n=2]"):
        results = generate(api.build_strategy(spec, shipped_pair, stop=stop), batch)
        assert [r.token_ids for r in results] == expected, spec
        assert sum(r.usage["large"].checks for r in results) > 0, spec
    results = generate(get_strategy("suffix")({"large": large}, stop=stop), batch)
    assert sum(r.usage["large"].forward_calls for r in results) < sum(len(r.token_ids) for r in results) / 1.5
    # RelayGen's large turns drafting from the suffix index: the same text as without (greedy; its
    # drafts that end a turn wait for the next check, as the small model's do)
    for base, drafting in (("relaygen[speculative=0]", "relaygen[speculative=0 suffix=true]"),
                           ("relaygen", "relaygen[suffix=true]")):
        alone = generate(api.build_strategy(base, shipped_pair, stop=stop), batch)
        drafted = generate(api.build_strategy(drafting, shipped_pair, stop=stop), batch)
        assert [r.token_ids for r in drafted] == [r.token_ids for r in alone], drafting


def test_speculative_does_not_draft_where_drafting_costs_more_than_it_saves(models):
    # the drafter has four times the verifier's layers: a draft costs more than a token written alone
    upside_down = {"large": models[("llama", "small")], "small": models[("llama", "large")]}
    stop = StopConfig(max_new_tokens=24)
    batch = prompts(upside_down["large"].tokenizer, 1, seed=9)
    session = Session(upside_down)  # its loads measured over a warm-up first: a handful of forwards fit noisily
    session.generate(get_strategy("speculative")(upside_down, SpeculativeConfig(k=4, fit_load=False), stop=stop),
                     prompts(upside_down["large"].tokenizer, 8, seed=10))
    fixed = session.generate(get_strategy("speculative")(upside_down, SpeculativeConfig(k=4, fit_load=False),
                                                         stop=stop), batch)[0]
    fitted = session.generate(get_strategy("speculative")(upside_down, SpeculativeConfig(k=4), stop=stop), batch)[0]
    assert fitted.token_ids == fixed.token_ids
    assert fitted.usage["large"].checks < fixed.usage["large"].checks
    assert fitted.usage["small"].decode_tokens < fixed.usage["small"].decode_tokens
