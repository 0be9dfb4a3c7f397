"""The scheduler's contract, over every registered strategy and every KV policy under `single`, on
the shipped pair: batched == alone == arriving at different steps (greedy), budgets, provenance,
usage that sums to the runners' totals, cancellation that frees rows; then streaming, fork,
composition, a background loop and a failing request."""

from __future__ import annotations

import threading

import pytest
import torch

from relaykit import api
from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.sequence import PROMPT, Sequence
from relaykit.decoding.stopping import StopConfig
from relaykit.errors import RelaykitError
from relaykit.models.kv import load_all as kv_policies
from relaykit.models.kv import make_policy
from relaykit.runtime.local_runner import LocalRunner
from relaykit.runtime.session import Session, generate
from relaykit.strategies.base import get_strategy, load_all
from relaykit.strategies.single import Single
from relaykit.toyworld import FUSIONROUTE, load_split

BUDGET = 48
KV_OPTIONS = {  # small enough that 48 tokens see compression steps
    "full": {},
    "rpc": dict(interval=16, window=4, ratio=2.0),
    "h2o": dict(budget=40, window=8, interval=4),
    "streaming": dict(budget=40, sinks=2, interval=4),
}
VARIANTS = ["adaptive[signal=difficulty]"]  # a strategy whose options change which models it runs
CASES = ([(name, "full") for name in sorted(load_all())] + [(variant, "full") for variant in VARIANTS]
         + [("single", policy) for policy in sorted(kv_policies()) if policy != "full"])


@pytest.fixture(scope="module")
def questions(shipped_pair):
    return [encode_prompt(shipped_pair["large"].tokenizer, p.question) for p in load_split("test", 4)]


# options a strategy cannot do without on the shipped models
OPTIONS = {"expert": {"name": "add"}, "query-route": {"classifier": str(FUSIONROUTE / "query-classifier.safetensors")},
           "early-exit": {"threshold": 0.95}}  # early exit runs only a rule it is given (or tuned settings)


def make(pair, variant: str, budget: int = BUDGET):
    name = variant.split("[")[0]
    return api.build_strategy(variant, pair, OPTIONS.get(name), stop=StopConfig(max_new_tokens=budget))


def kv(policy: str):
    return make_policy(policy, **KV_OPTIONS[policy])


def wait(handles) -> list:
    return [handle.result() for handle in handles]


def usage_totals(results, role: str) -> tuple:
    used = [r.usage[role] for r in results if role in r.usage]
    return tuple(sum(getattr(u, key) for u in used) for key in ("prefill_tokens", "decode_tokens", "flops"))


def test_every_kv_policy_has_contract_options():
    assert set(KV_OPTIONS) == set(kv_policies())


@pytest.mark.parametrize("name,policy", CASES)
def test_contract(shipped_pair, questions, name, policy):
    strategy = make(shipped_pair, name)
    alone = [generate(strategy, [q], kv=kv(policy))[0] for q in questions]
    batched = generate(strategy, questions, kv=kv(policy))
    assert [r.token_ids for r in batched] == [r.token_ids for r in alone]
    for result in batched:
        assert 0 < len(result.token_ids) <= BUDGET and result.finish_reason in ("stop", "length")
        assert len(result.provenance) == len(result.token_ids)
        assert set(result.provenance) <= {*strategy.roles, PROMPT}

    # requests arriving at different steps, other strategies' requests beside them
    session = Session({**shipped_pair, **strategy.models}, kv(policy))  # a merged model is the strategy's own
    scheduler = session.scheduler
    neighbour = make(session.models, "speculative")  # on the strategy's models (RelayLLM's own small)
    handles, others = [], []
    for i, question in enumerate(questions):
        handles.append(session.submit(strategy, question))
        others.append(session.submit(neighbour, questions[-1 - i]))
        for _ in range(i + 1):
            scheduler.step()
    results = wait(handles)
    assert [r.token_ids for r in results] == [r.token_ids for r in alone]
    everything = results + wait(others)
    for role, runner in scheduler.runners.items():
        total = runner.usage
        assert usage_totals(everything, role) == pytest.approx((total.prefill_tokens, total.decode_tokens, total.flops))
        assert runner.rows == [] and runner.kv_bytes == 0  # every row freed

    # cancelling one request mid-way frees its rows; the others are not disturbed
    session = Session({**shipped_pair, **strategy.models}, kv(policy))
    scheduler = session.scheduler
    handles = [session.submit(strategy, q) for q in questions]
    for _ in range(6):
        scheduler.step()
    handles[1].cancel()
    scheduler.step()
    assert handles[1].result().finish_reason == "cancelled"
    request = handles[1].request
    cancelled = {s.uid for r in (request, *request.children) for s in r.sequences}  # a best-of-n's samples too
    for runner in scheduler.runners.values():
        live = [row for row in runner.rows if row is not None]
        assert not cancelled & {row.sequence.uid for row in live}
        held = sum(int(runner.engine.cache.lengths[runner.index[row.sequence.uid]]) for row in live)
        assert runner.kv_bytes == held * runner.engine.cache.slot_bytes()  # the cancelled rows hold nothing
    rest = wait([h for i, h in enumerate(handles) if i != 1])
    assert [r.token_ids for r in rest] == [r.token_ids for i, r in enumerate(alone) if i != 1]


@pytest.mark.parametrize("name", ["large", "speculative", "relaygen", "speculative-thinking", "best-of-n"])
def test_streamed_tokens_are_final_and_add_up_to_the_result(shipped_pair, questions, name):
    """A streamed token is never cut afterwards (the sequence refuses it), and the stream is the text."""
    strategy = get_strategy(name)(shipped_pair, stop=StopConfig(max_new_tokens=80))
    if name == "relaygen":
        strategy.config.speculative = 3  # drafts that may be rejected
    handle = Session(strategy.models).submit(strategy, questions[0])
    chunks = list(handle.stream())
    assert [token for chunk in chunks for token, _ in chunk] == handle.result().token_ids
    assert [writer for chunk in chunks for _, writer in chunk] == handle.result().provenance
    assert len(chunks) > 1 or name == "best-of-n"


def test_fork_shares_what_was_read_and_survives_a_cut_into_it(models):
    model = models[("llama", "large")]
    runner = LocalRunner(model, "large")
    parent = Sequence([5, 6, 7, 8, 9, 10])
    parent.extend([11, 12, 13, 14, 15], "large")
    runner.prefill([parent])
    children = [parent.fork() for _ in range(3)]
    runner.fork(parent, children)
    children[0].truncate(8)  # back into the shared part
    children[0].extend([20, 21], "small")
    children[1].extend([30], "small")
    read_before = runner.usage.prefill_tokens + runner.usage.decode_tokens
    logits = runner.next_logits(children + [parent])
    for row, sequence in enumerate(children + [parent]):
        with torch.no_grad():
            expected = model.hf(torch.tensor([sequence.tokens])).logits[0, -1].float()
        assert (logits[row] - expected).abs().max() <= 1e-4
    # the copies and the parent read only what the prefill left (the last token) and their own new
    # tokens; the cut copy reads its two new tokens after the cut
    assert runner.usage.prefill_tokens + runner.usage.decode_tokens - read_before == 2 + (1 + 1) + 1 + 1


def test_best_of_reads_the_prompt_once_and_rolls_up_its_children(shipped_pair, questions):
    best_of = get_strategy("best-of-n")(shipped_pair, get_strategy("best-of-n").Config(n=5, inner="large"),
                                      stop=StopConfig(max_new_tokens=20))
    result = generate(best_of, questions[:1])[0]
    single = generate(make(shipped_pair, "large", budget=20), questions[:1])[0]
    assert result.token_ids == single.token_ids
    prompt = len(questions[0])
    assert result.usage["large"].prefill_tokens == prompt - 1 + 5  # once, then each copy's last prompt token
    assert result.usage["large"].decode_tokens == 5 * (len(single.token_ids) - 1)
    assert [e.reason for e in result.events] == ["vote"]


def test_a_background_loop_serves_several_threads(shipped_pair, questions):
    strategy = make(shipped_pair, "speculative")
    expected = [r.token_ids for r in generate(strategy, questions)]
    session = Session(strategy.models)
    session.start()
    got = [None] * len(questions)

    def client(i):
        got[i] = session.submit(strategy, questions[i]).result().token_ids

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    session.stop()
    assert got == expected


class Failing(Single):
    """A strategy whose loop fails half-way (a bug in a method must not stop other requests)."""

    name = "failing"

    def run(self, request):
        yield from super().run(request)
        raise RelaykitError("this method failed")


def test_a_failing_request_fails_alone(shipped_pair, questions):
    good = make(shipped_pair, "large")
    bad = Failing({"large": shipped_pair["large"]}, stop=StopConfig(max_new_tokens=8))
    session = Session(shipped_pair)
    handles = [session.submit(bad, questions[0]), session.submit(good, questions[1])]
    assert wait(handles[1:])[0].token_ids == generate(good, questions[1:2])[0].token_ids
    with pytest.raises(RelaykitError, match="failed"):
        handles[0].result()
    with pytest.raises(RelaykitError, match="small model this session does not hold"):
        lookalike = {"large": shipped_pair["large"], "small": shipped_pair["large"]}
        session.submit(make(lookalike, "speculative"), questions[0])


def test_the_hf_engine_keeps_each_rows_cache_when_rows_leave(tmp_path):
    """A non-Llama model (GPT-2, the generic engine): requests leaving at different steps move the
    last row into the freed one; every result still equals the request run alone."""
    from conftest import build_gpt2

    model = build_gpt2(tmp_path, name="large")
    assert not model.native
    strategy = get_strategy("large")({"large": model}, stop=StopConfig(max_new_tokens=20, ignore_eos=True))
    prompts = [[5 + i, 9, 14, 20 + i][: 2 + i % 3] for i in range(5)]
    budgets = [StopConfig(max_new_tokens=n, ignore_eos=True) for n in (4, 20, 9, 15, 6)]
    alone = [generate(strategy, [p], stop)[0].token_ids for p, stop in zip(prompts, budgets)]
    session = Session({"large": model})
    handles = [session.submit(strategy, p, stop=stop) for p, stop in zip(prompts, budgets)]
    assert [r.token_ids for r in wait(handles)] == alone


def test_n_requests_on_one_prompt_read_it_once(shipped_pair, questions):
    """`submit_n`: the prompt is prefilled once and copied into each request's row."""
    strategy = make(shipped_pair, "relaygen", budget=40)
    alone = generate(strategy, questions[:1])[0]
    session = Session(shipped_pair)
    handles = session.submit_n(strategy, questions[0], [strategy.sampling] * 4)
    results = wait(handles)
    assert all(r.token_ids == alone.token_ids for r in results)
    large = session.runners["large"].usage
    assert large.prefill_tokens == sum(r.usage["large"].prefill_tokens for r in results)
    assert large.prefill_tokens == 4 * alone.usage["large"].prefill_tokens - 3 * (len(questions[0]) - 1)
