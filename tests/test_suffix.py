"""The suffix index, the recent outputs' bound, which sequences a drafter sees, the measured load,
and the acceptance metrics in results and the server."""

import random

import pytest

from relaykit import api
from relaykit.decoding.sampler import SamplingConfig
from relaykit.decoding.stopping import StopConfig
from relaykit.decoding.suffix import RecentOutputs, SuffixIndex, propose
from relaykit.runtime.load import Load
from relaykit.runtime.session import Session
from relaykit.strategies.drafting import Siblings


def substrings(index: SuffixIndex) -> dict[tuple, tuple[int, int]]:
    """Every path of the trie with its (count, followed), for comparing two indexes."""
    out, stack = {}, [((), 0)]
    while stack:
        path, node = stack.pop()
        for token, child in index.children(node):
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
    proposal, sources = propose([(index, index.ends([9, 1, 2, 3]))], limit=8, spec_factor=1.0, min_prob=0.1)
    assert proposal.tokens == [4, 5, 1] and proposal.match == 3  # at most spec_factor x the match's length
    assert proposal.probs[0] == 1.0 and proposal.probs[1] == pytest.approx(2 / 3) and sources == [0, 0, 0]
    strict, _ = propose([(index, index.ends([9, 1, 2, 3]))], limit=8, spec_factor=4.0, min_prob=0.9)
    assert strict.tokens == [4]  # "5" follows "1 2 3 4" in two of three occurrences
    nothing, _ = propose([(index, index.ends([7]))], limit=8)
    assert nothing.tokens == []


def test_recent_outputs_hold_at_most_their_size_and_evict_the_oldest():
    recent = RecentOutputs(capacity=50, depth=4)
    outputs = [[i] * 20 for i in range(6)]
    for output in outputs:
        recent.add(output)
        assert recent.held <= 50 and recent.index.tokens == recent.held
    assert list(recent.outputs.values()) == outputs[-2:]
    assert [recent.index.documents[key].tokens for key in recent.outputs] == outputs[-2:]
    recent.add(list(range(80)))  # longer than the cache: its newest 50 tokens
    assert recent.held == 50 and recent.index.tokens == 50
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
    assert first.request.recent_outputs() is None

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
    recent = handles[0].request.recent_outputs()
    assert recent is not None and 0 < recent.held <= 64
    assert list(recent.outputs.values())[-1] == outputs[-1][-64:]
    other = api.build_strategy("suffix", {"large": large}, stop=stop)  # another strategy: a cache of its own
    assert kept.submit(other, prompt).request.recent_outputs() is not recent
    assert Session({"large": large}, recent_tokens=0).submit(suffix, prompt).request.recent_outputs() is None


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
