"""The suffix index, the recent outputs' bound, which sequences a drafter sees, the measured load,
and the acceptance metrics in results and the server."""

import random

import pytest

from relaykit import api
from relaykit.decoding.sampler import SamplingConfig
from relaykit.decoding.stopping import StopConfig
from relaykit.decoding.suffix import NONE, RecentOutputs, SuffixIndex, propose
from relaykit.runtime.load import Load
from relaykit.runtime.session import Session
from relaykit.strategies.drafting import Siblings, SuffixConfig, recent_outputs


def substrings(index: SuffixIndex) -> dict[tuple, tuple[int, int]]:
    """Every path of the trie with its (count, followed), for comparing two indexes."""
    out, stack = {}, [((), 0)]
    while stack:
        path, node = stack.pop()
        several = index.branches.get(node)
        only = [(index.token[node], index.child[node])] if index.child[node] != NONE else []
        for token, child in several.items() if several is not None else only:
            out[path + (token,)] = (index.count[child], index.followed[child])
            stack.append((path + (token,), child))
    return out


def test_an_index_grown_and_cut_back_equals_one_built_from_what_is_left():
    rng = random.Random(0)
    grown, tokens = SuffixIndex(depth=6), []
    other = [rng.randrange(4) for _ in range(30)]
    grown.sync("other", other)
    for _ in range(200):
        if tokens and rng.random() < 0.3:
            keep = rng.randrange(len(tokens))
            tokens = tokens[:keep]
            grown.sync("doc", tokens, same=keep)
        else:
            tokens = tokens + [rng.randrange(4) for _ in range(rng.randrange(1, 5))]
            grown.sync("doc", tokens)
        built = SuffixIndex(depth=6)
        built.sync("other", other)
        built.sync("doc", tokens)
        assert substrings(grown) == substrings(built)
        counted = [[(index.count[n], index.followed[n]) for n in ends]
                   for index, ends in ((grown, grown.ends(tokens, key="doc")), (built, built.ends(tokens)))]
        assert counted[0] == counted[1]
    grown.remove("doc")
    grown.remove("other")
    assert substrings(grown) == {} and grown.followed[0] == 0 and not grown.branches


def test_a_proposal_follows_the_most_frequent_continuation_of_the_longest_match():
    index = SuffixIndex(depth=8)
    index.sync(0, [1, 2, 3, 4, 5, 1, 2, 3, 4, 6, 1, 2, 3, 4, 5])
    proposal, source = propose([(index, index.ends([9, 1, 2, 3]))], limit=8, spec_factor=1.0, min_prob=0.1)
    assert proposal.tokens == [4, 5, 1] and proposal.match == 3  # at most spec_factor x the match's length
    assert proposal.probs[0] == 1.0 and proposal.probs[1] == pytest.approx(2 / 3) and source == 0
    strict, _ = propose([(index, index.ends([9, 1, 2, 3]))], limit=8, spec_factor=4.0, min_prob=0.9)
    assert strict.tokens == [4]  # "5" follows "1 2 3 4" in two of three occurrences
    nothing, _ = propose([(index, index.ends([7]))], limit=8)
    assert nothing.tokens == []


def held(index: SuffixIndex) -> int:
    return sum(len(document.tokens) for document in index.documents.values())


def test_recent_outputs_hold_at_most_their_size_and_evict_the_oldest():
    recent = RecentOutputs(capacity=50, depth=4)
    outputs = [[i] * 20 for i in range(6)]
    for output in outputs:
        recent.add(output)
        assert recent.held <= 50 and held(recent.index) == recent.held
    assert list(recent.outputs.values()) == outputs[-2:]
    assert [recent.index.documents[key].tokens for key in recent.outputs] == outputs[-2:]
    recent.add(list(range(80)))  # longer than the cache: its newest 50 tokens
    assert recent.held == 50 and held(recent.index) == 50
    built = SuffixIndex(4)
    built.sync(0, list(range(30, 80)))
    assert substrings(recent.index) == substrings(built)


def family_uids(request) -> set[int]:
    siblings = next(v for v in request.family.values() if isinstance(v, Siblings))
    return set(siblings.index.documents)


def test_siblings_share_a_family_index_that_never_crosses_requests(shipped_pair):
    large = shipped_pair["large"]
    prompt = large.tokenizer("What is 12 * 3? Check it 2 times.")["input_ids"]
    stop = StopConfig(max_new_tokens=40)
    sampling = SamplingConfig(temperature=1.0, seed=3)
    session = Session({"large": large}, recent_tokens=0)
    suffix = api.build_strategy("suffix", {"large": large}, sampling=sampling, stop=stop)
    first, second = session.submit(suffix, prompt), session.submit(suffix, prompt)
    first.result(), second.result()
    assert family_uids(first.request) == {first.request.uid}
    assert family_uids(second.request) == {second.request.uid}
    assert first.request.across_requests() is None

    # a server's n choices of one prompt are siblings
    choices = session.submit_n(suffix, prompt, [sampling] * 3, stop)
    [handle.result() for handle in choices]
    assert family_uids(choices[0].request) == {handle.request.uid for handle in choices}

    # a composite's samples are siblings too
    consistency = api.build_strategy("self-consistency[inner=suffix n=3 stop=fixed]", {"large": large},
                                     sampling=sampling, stop=stop)
    handle = session.submit(consistency, prompt)
    handle.result()
    assert family_uids(handle.request) == {child.uid for child in handle.request.children}


def test_recent_outputs_cross_requests_only_when_the_session_keeps_them(shipped_pair):
    large = shipped_pair["large"]
    prompt = large.tokenizer("What is 12 * 3? Check it 2 times.")["input_ids"]
    stop = StopConfig(max_new_tokens=40)
    suffix = api.build_strategy("suffix", {"large": large}, stop=stop)
    kept = Session({"large": large}, recent_tokens=64)
    handles = [kept.submit(suffix, prompt) for _ in range(3)]
    outputs = [handle.result().token_ids for handle in handles]
    recent = recent_outputs(handles[0].request, SuffixConfig())
    assert recent is not None and 0 < recent.held <= 64
    assert list(recent.outputs.values())[-1] == outputs[-1][-64:]
    other = api.build_strategy("suffix", {"large": large}, stop=stop)  # another strategy: a cache of its own
    assert recent_outputs(kept.submit(other, prompt).request, SuffixConfig()) is not recent
    assert recent_outputs(Session({"large": large}, recent_tokens=0).submit(suffix, prompt).request,
                          SuffixConfig()) is None


def test_the_load_is_fitted_from_forwards():
    load = Load()
    for tokens in (32, 64, 160, 32, 96):
        load.observe(tokens, 0.004 + 0.0001 * tokens)
    load.stepped([3] * 20 + [1] * 12)
    assert load.fixed == pytest.approx(0.004) and load.per_token == pytest.approx(0.0001)
    assert load.step_seconds(1) == pytest.approx(0.004 / 32 + 0.0001)
    assert load.feed == 3 and load.padding_seconds(3) == 0  # no longer than the median feed: no padding added
    assert load.padding_seconds(4) == pytest.approx(0.0001 * 31)  # 31 rows padded by one token
    assert load.padding_seconds(4, alike=32) == 0  # every row drafts as many
    assert load.padding_seconds(9) == pytest.approx(0.004)  # padding 31 rows by 6 would cost more: it runs apart
    one = Load()
    one.observe(10, 0.002)
    assert one.measured and one.fixed + 10 * one.per_token == pytest.approx(0.002)


def test_acceptance_reaches_results_and_the_report(shipped_pair, tmp_path):
    from relaykit.evals.datasets import load_dataset
    from relaykit.evals.harness import EvalSettings, evaluate
    from relaykit.evals.report import write_report

    large = shipped_pair["large"]
    strategies = {"large": api.build_strategy("large", {"large": large}),
                  "suffix": api.build_strategy("suffix[fit_load=false]", {"large": large})}
    results = evaluate(strategies, load_dataset("toy:test", 2), "toy:test", EvalSettings(progress=False))
    acceptance = results["strategies"]["suffix"]["acceptance"]["large"]
    per_problem = [p["usage"]["large"] for p in results["strategies"]["suffix"]["problems"]]
    assert acceptance["checks"] == sum(u["checks"] for u in per_problem) > 0
    assert acceptance["accepted"] == sum(u["accepted"] for u in per_problem)
    assert sum(acceptance["accepted_lengths"].values()) == acceptance["checks"]
    assert acceptance["mean_accepted"] == pytest.approx(acceptance["accepted"] / acceptance["checks"])
    assert "acceptance" not in results["strategies"]["large"]
    assert "Drafts checked" in write_report(results, tmp_path)["markdown"].read_text()


def test_beams_draft_from_each_other_and_write_what_they_write_alone(shipped_pair):
    large = shipped_pair["large"]
    prompt = large.tokenizer("What is 12 * 3? Check it 2 times.")["input_ids"]
    stop = StopConfig(max_new_tokens=60)
    greedy = SamplingConfig(temperature=0.0)
    options = "n=4 beam_width=2 writer=large scorer=likelihood"
    alone = api.build_strategy(f"beam-search[{options}]", {"large": large}, sampling=greedy, stop=stop)
    drafting = api.build_strategy(f"beam-search[{options} suffix=true]", {"large": large}, sampling=greedy, stop=stop)
    session = Session({"large": large})
    expected, handle = session.submit(alone, prompt).result(), session.submit(drafting, prompt)
    assert handle.result().token_ids == expected.token_ids
    assert handle.result().usage["large"].checks > 0
    assert len(family_uids(handle.request)) > 1  # the beams' steps


def test_drafting_with_a_seed_is_reproducible_and_a_spent_budget_ends_the_loop(shipped_pair):
    """A seeded sampling's drafts do not follow timings (the load is not read for it), and a loop with
    no tokens left returns instead of asking for none."""
    pair = {"large": shipped_pair["large"], "small": shipped_pair["small"]}
    prompt = pair["large"].tokenizer("What is 12 * 3? Check it 2 times.")["input_ids"]
    sampling = SamplingConfig(temperature=1.0, seed=5)
    for spec in ("suffix", "speculative", "speculative[suffix=true]", "relaygen[suffix=true]"):
        strategy = api.build_strategy(spec, pair, sampling=sampling, stop=StopConfig(max_new_tokens=60))
        runs = [Session(strategy.models).generate(strategy, [prompt, prompt])[1].token_ids for _ in range(2)]
        assert runs[0] == runs[1], spec
        if not spec.startswith("relaygen"):  # (RelayGen closes its thinking even then)
            spent = api.build_strategy(spec, pair, stop=StopConfig(max_new_tokens=0))
            assert Session(spent.models).generate(spent, [prompt])[0].token_ids == [], spec
