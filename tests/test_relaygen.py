"""RelayGen and the segment baselines: cue and sentence matching, exact equalities with one
model alone, hand-off cost, the budget answer, provenance of every strategy."""

import re

import pytest
import torch

from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.result import Event
from relaykit.decoding.sampler import SamplingConfig
from relaykit.decoding.sequence import PROMPT
from relaykit.decoding.stopping import StopConfig
from relaykit.errors import RelaykitError
from relaykit.models.loading import load_model
from relaykit.resolve import load_cues, resolve
from relaykit.runtime.session import Session, generate
from relaykit.strategies.base import get_strategy
from relaykit.strategies.random_switch import RandomSwitchConfig
from relaykit.strategies.relaygen import RelayGenConfig
from relaykit.strategies.speculative_thinking import SpeculativeThinkingConfig
from relaykit.strategies.uncertainty import UncertaintyConfig
from relaykit.text import THINK_END, cue_pattern, decoder, ends_sentence, ends_thinking, find_cue, parse_cues
from relaykit.toyworld.tasks import load_split

QUESTIONS = ["What is 347 * 6 + 58?", "Take the largest of 1, 2", "Check it 2 times.", "x", "So what is 12 * 7?", "Now"]


def build_toy_checkpoint(folder, layers: int, seed: int):
    """A random Llama with the toy tokenizer (it has <think>, </think> and a chat template)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from relaykit.toyworld.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def toy_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-random")
    return {
        "large": load_model(build_toy_checkpoint(root / "large", 2, seed=1), name="large"),
        "small": load_model(build_toy_checkpoint(root / "small", 1, seed=2), name="small"),
    }


def toy_prompts(pair):
    return [encode_prompt(pair["large"].tokenizer, q) for q in QUESTIONS]


def run(pair, name, config=None, max_new_tokens=40, sampling=None, batch=None):
    cls = get_strategy(name)
    config, models = resolve(cls, config or cls.Config(), pair)  # files the options name are read first
    strategy = cls(models, config, sampling, StopConfig(max_new_tokens=max_new_tokens))
    return generate(strategy, batch or toy_prompts(pair))


def words_of(pair, max_new_tokens=40):
    """Standalone words of the large model's greedy outputs (they make cues that fire)."""
    texts = [r.text for r in run(pair, "single", max_new_tokens=max_new_tokens)]
    return texts, sorted({w for t in texts for w in re.findall(r"(?<!\w)[A-Za-z]{2,}(?=\W)", t)})


# matching


def test_cues_match_at_word_boundaries_only():
    pattern = cue_pattern(["now", "Now", "Wait,", "Any"])
    assert find_cue("I know", pattern, 0) is None and find_cue("I know it", pattern, 0) is None
    assert find_cue("Anyway,", pattern, 0) is None
    assert find_cue("Nowhere", pattern, 0) is None and find_cue("Now", pattern, 0) is None  # undecided yet
    assert find_cue("x.\nNow ", pattern, 5) == "Now"
    assert find_cue("ok. Wait,", pattern, 8) == "Wait,"
    assert find_cue("ok. Wait, so", pattern, 10) is None  # completed earlier: fires once
    assert find_cue("and now,", pattern, 7, start=4) == "now" and find_cue("and now,", pattern, 7, start=5) is None


def test_sentence_ends_are_not_decimal_points():
    assert not ends_sentence("x = 3.", 0)  # undecided until the next character
    assert not ends_sentence("x = 3.5", 6)
    assert not ends_sentence("x = 3.5 and", 8)
    assert ends_sentence("x = 3.5.\n", 8) and ends_sentence("Done! ", 5) and ends_sentence("a\n\n", 2)
    assert ends_thinking("so 4\n</think>", 12) and not ends_thinking("</think> more", 9)
    assert parse_cues("Wait,|So") == ["Wait,", "So"] and parse_cues("") == [] and "now," in parse_cues(None)


def test_the_fast_decoder_equals_the_tokenizers_decode():
    """`decoder` skips the tokenizer's Python wrapper only where the text stays the same."""
    from relaykit.toyworld.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    problem = load_split("test", 1)[0]
    ids = tokenizer(problem.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    decode = decoder(tokenizer)
    for start, stop in [(0, len(ids)), (3, 9), (5, 6), (len(ids) - 4, len(ids)), (2, 2)]:
        assert decode(ids[start:stop]) == tokenizer.decode(ids[start:stop], skip_special_tokens=False)
    assert THINK_END in decode(ids)
    tokenizer.clean_up_tokenization_spaces = True  # then the wrapper's clean-up must run: no shortcut
    assert decoder(tokenizer)(ids) == tokenizer.decode(ids, skip_special_tokens=False)


def test_a_cue_inside_a_word_never_fires(toy_pair):
    texts, _ = words_of(toy_pair)
    inner = {w[1:] for t in texts for w in re.findall(r"[A-Za-z]{4,}", t)}
    standalone = lambda cue: any(cue_pattern([cue]).search(t + " ") for t in texts)  # noqa: E731
    cues = sorted(c for c in inner if not standalone(c))
    assert cues, texts
    config = RelayGenConfig(cues=cues, min_large_tokens=0, answer_handoff=False)
    for result, expected in zip(run(toy_pair, "relaygen", config), run(toy_pair, "single")):
        assert result.events == [] and result.token_ids == expected.token_ids


# exact properties


@pytest.mark.parametrize("speculative", [0, 3])
def test_no_cues_no_answer_handoff_equals_large_greedy(toy_pair, models, speculative):
    config = RelayGenConfig(cues="", answer_handoff=False, speculative=speculative)
    for pair in (toy_pair, {"large": models[("qwen2", "large")], "small": models[("qwen2", "small")]}):
        batch = toy_prompts(toy_pair) if pair is toy_pair else [[5, 9, 14, 20], [30, 7], [11] * 6]
        expected = [r.token_ids for r in run(pair, "single", batch=batch)]
        assert [r.token_ids for r in run(pair, "relaygen", config, batch=batch)] == expected


def test_speculative_large_turns_keep_the_relay_output(toy_pair):
    _, words = words_of(toy_pair)
    config = RelayGenConfig(cues=words, min_large_tokens=2)
    plain = run(toy_pair, "relaygen", config)
    assert any(e.handoff == ("large", "small") and e.reason == "cue" for r in plain for e in r.events)
    config.speculative = 3
    fast = run(toy_pair, "relaygen", config)
    assert [r.token_ids for r in fast] == [r.token_ids for r in plain]
    config.draft_confidence = 0.6  # drafting stops early on unsure tokens; the output stays exact
    assert [r.token_ids for r in run(toy_pair, "relaygen", config)] == [r.token_ids for r in plain]
    config.draft_confidence = 0.0
    assert ([[(e.position, e.cue) for e in r.events] for r in fast]
            == [[(e.position, e.cue) for e in r.events] for r in plain])
    alone = [run(toy_pair, "relaygen", config, batch=[p])[0].token_ids for p in toy_prompts(toy_pair)[:3]]
    assert alone == [r.token_ids for r in plain[:3]]  # batched rows in different turns == one row


def test_a_handoff_costs_only_the_other_models_new_tokens(toy_pair):
    _, words = words_of(toy_pair)
    strategy = get_strategy("relaygen")(toy_pair, RelayGenConfig(cues=words, min_large_tokens=2),
                                        stop=StopConfig(max_new_tokens=40))
    prompts = toy_prompts(toy_pair)
    results = generate(strategy, prompts)
    switches = 0
    for prompt, result in zip(prompts, results):
        writers = ["prompt"] * len(prompt) + result.provenance
        switches += sum(e.handoff is not None for e in result.events)
        for role in ("large", "small"):
            usage = result.usage[role]
            written = [i for i, w in enumerate(writers) if w == role]
            read = writers[: written[-1]] if written else []  # a model has read everything before its last token
            assert usage.prefill_tokens == sum(w != role for w in read)  # each hand-off: only the new tokens
            assert usage.decode_tokens == sum(w == role for w in read)
            assert usage.forward_calls == len(written)  # one forward per token, catch-up included
    assert switches >= 4


def test_a_budget_ending_inside_think_still_gets_the_small_models_answer(toy_pair):
    close = toy_pair["large"].tokenizer.convert_tokens_to_ids(THINK_END)
    results = run(toy_pair, "relaygen", RelayGenConfig(cues="", answer_reserve=8), max_new_tokens=30)
    free = run(toy_pair, "single", max_new_tokens=30)
    checked = 0
    for result, alone in zip(results, free):
        if close in alone.token_ids[:21] or alone.finish_reason == "stop":
            continue  # this row's thinking ends by itself
        checked += 1
        at = result.token_ids.index(close)
        assert result.provenance[at] == PROMPT and set(result.provenance[:at]) <= {"large", PROMPT}
        assert result.provenance[at + 1 :] and set(result.provenance[at + 1 :]) == {"small"}
        assert len(result.token_ids) <= 30 and at + 1 + 8 <= 30
        assert [e.reason for e in result.events][-2:] == ["budget", "answer"]
        inserted = result.provenance.index(PROMPT)  # "\n" may come before </think>
        assert result.token_ids[:inserted] == alone.token_ids[:inserted]
    assert checked


# the segment check (ours; benchmarks/RESULTS.md, "RelayGen on unseen problems")


@pytest.mark.parametrize("speculative", [0, 3])
def test_a_check_above_every_margin_keeps_the_plain_relay(toy_pair, speculative):
    _, words = words_of(toy_pair)
    plain = run(toy_pair, "relaygen", RelayGenConfig(cues=words, min_large_tokens=2, speculative=speculative))
    lenient = run(toy_pair, "relaygen",
                  RelayGenConfig(cues=words, min_large_tokens=2, speculative=speculative, check=1e9))
    assert [(r.token_ids, r.provenance) for r in lenient] == [(r.token_ids, r.provenance) for r in plain]
    assert any(w == "small" for r in plain for w in r.provenance)
    assert not any(e.reason == "check" for r in lenient for e in r.events)


@pytest.mark.parametrize("speculative", [0, 3])
def test_a_strict_check_without_answer_handoff_equals_large_greedy(toy_pair, shipped_pair, speculative):
    """On random models (every segment is cut) and on the shipped pair (segments stay)."""
    _, words = words_of(toy_pair)
    config = RelayGenConfig(cues=words, min_large_tokens=2, answer_handoff=False, check=0.0, speculative=speculative)
    results = run(toy_pair, "relaygen", config)
    assert [r.token_ids for r in results] == [r.token_ids for r in run(toy_pair, "single")]
    assert any(e.reason == "check" and e.detail["margin"] > 0 for r in results for e in r.events)
    pair = {role: shipped_pair[role] for role in ("large", "small")}
    batch = [encode_prompt(pair["large"].tokenizer, p.question) for p in load_split("test", 4)]
    config = RelayGenConfig(cues="all", answer_handoff=False, check=0.0, speculative=speculative)
    results = run(pair, "relaygen", config, max_new_tokens=200, batch=batch)
    assert [r.token_ids for r in results] == [r.token_ids for r in run(pair, "single", max_new_tokens=200, batch=batch)]
    assert sum(w == "small" for r in results for w in r.provenance) > 100


def test_drafts_at_cues_wait_for_the_next_check_and_keep_the_text(toy_pair, shipped_pair):
    """Drafts that end a large turn wait, even behind other unchecked tokens (`max_unchecked`):
    the same text as checking them at once, in fewer large forwards; on random models (every
    segment cut) still the large model's greedy text."""
    _, words = words_of(toy_pair)
    config = RelayGenConfig(cues=words, min_large_tokens=2, answer_handoff=False, check=0.0, speculative=3,
                            max_unchecked=1000)
    assert [r.token_ids for r in run(toy_pair, "relaygen", config)] == [r.token_ids for r in run(toy_pair, "single")]
    pair = {role: shipped_pair[role] for role in ("large", "small")}
    batch = [encode_prompt(pair["large"].tokenizer, p.question) for p in load_split("test", 4)]
    results = {m: run(pair, "relaygen", RelayGenConfig(speculative=8, draft_confidence=0.8, max_unchecked=m),
                      max_new_tokens=200, batch=batch)
               for m in (0, 1000)}
    assert [r.token_ids for r in results[0]] == [r.token_ids for r in results[1000]]
    forwards = {m: sum(r.usage["large"].forward_calls for r in rs) for m, rs in results.items()}
    assert forwards[1000] < forwards[0]


def test_the_answer_check_leaves_the_large_models_answer(toy_pair):
    """The budget closes the thinking and the small model answers; a strict check makes the answer
    the large model's greedy one after the same text."""
    results = run(toy_pair, "relaygen", RelayGenConfig(cues="", answer_reserve=8, check=0.0), max_new_tokens=30)
    checked = 0
    for prompt, result in zip(toy_prompts(toy_pair), results):
        if "budget" not in [e.reason for e in result.events]:
            continue
        at = len(result.provenance) - result.provenance[::-1].index(PROMPT)  # after the inserted </think>
        alone = run(toy_pair, "single", batch=[prompt + result.token_ids[:at]], max_new_tokens=30 - at)[0]
        assert result.token_ids[at:] == alone.token_ids
        checked += 1
        # large tokens: cuts
        assert ("large" in result.provenance[at:]) == any(e.reason == "check" for e in result.events)


def test_a_checked_relay_streams_only_tokens_it_keeps(toy_pair):
    _, words = words_of(toy_pair)
    strategy = get_strategy("relaygen")(toy_pair, RelayGenConfig(cues=words, min_large_tokens=2, check=0.0),
                                        stop=StopConfig(max_new_tokens=40))
    cuts = 0
    for prompt in toy_prompts(toy_pair):
        handle = Session(strategy.models).submit(strategy, prompt)
        chunks = list(handle.stream())  # a streamed token that is cut later would raise here
        result = handle.result()
        assert [token for chunk in chunks for token, _ in chunk] == result.token_ids
        cuts += sum(e.reason == "check" for e in result.events)
    assert cuts


def test_the_shipped_pair_takes_its_calibration_by_default(shipped_pair, toy_pair):
    from relaykit import api
    from relaykit.toyworld import SHIPPED_CUES

    pair = {role: shipped_pair[role] for role in ("large", "small")}
    strategy = api.build_strategy("relaygen", pair)
    assert strategy.cues == load_cues(str(SHIPPED_CUES))[0]
    assert strategy.check == 0.0  # the threshold calibrated with those cues
    assert api.build_strategy("relaygen[cues=all]", pair).check == 0.0  # other cues: the pair's check
    assert api.build_strategy("relaygen[cues=all check=inf]", pair).check is None
    mine = api.build_strategy("relaygen", toy_pair)  # another pair: every candidate cue, no check
    assert mine.cues == parse_cues("all") and mine.check is None
    assert get_strategy("relaygen")(pair).cues == parse_cues("all")  # built without the resolver: no presets


def test_a_check_needs_the_large_models_logits():
    assert get_strategy("relaygen").needs_logits(RelayGenConfig(check=2.0)) == ("large",)
    assert get_strategy("relaygen").needs_logits(RelayGenConfig(check=float("inf"))) == ()
    with pytest.raises(RelaykitError, match="check"):
        RelayGenConfig(check=-1.0)


# baselines


def valid(results, roles=("large", "small")):
    for result in results:
        assert len(result.provenance) == len(result.token_ids) > 0
        assert set(result.provenance) <= {*roles, PROMPT}
        assert set(result.usage) == set(roles)
        for event in result.events:
            assert isinstance(event, Event)
            assert 0 <= event.position <= len(result.token_ids)
    return results


def test_random_switch_runs_and_its_extremes_are_exact(toy_pair):
    single = [r.token_ids for r in run(toy_pair, "single")]
    off = valid(run(toy_pair, "random-switch", RandomSwitchConfig(small_share=0.0, answer_handoff=False)))
    assert [r.token_ids for r in off] == single
    on = valid(run(toy_pair, "random-switch", RandomSwitchConfig(small_share=1.0), max_new_tokens=60))
    again = run(toy_pair, "random-switch", RandomSwitchConfig(small_share=1.0), max_new_tokens=60)
    assert [r.token_ids for r in on] == [r.token_ids for r in again]  # seeded
    valid(run(toy_pair, "random-switch", RandomSwitchConfig(small_share=0.5, speculative=2),
              sampling=SamplingConfig(temperature=1.0, seed=3)))


def test_random_switch_flips_depend_on_the_problem_not_its_batch(shipped_pair):
    """Problems run one at a time each get their own flips, the same as in a batch (the shipped
    pair, whose thinking has sentence ends to flip at)."""
    prompts = [encode_prompt(shipped_pair["large"].tokenizer, p.question) for p in load_split("test", 4)]
    config = RandomSwitchConfig(small_share=0.5)
    batched = run(shipped_pair, "random-switch", config, max_new_tokens=80, batch=prompts)
    alone = [run(shipped_pair, "random-switch", config, max_new_tokens=80, batch=[p])[0] for p in prompts]
    assert [r.token_ids for r in alone] == [r.token_ids for r in batched]
    assert len({tuple(e.position for e in r.events) for r in alone}) > 1


def test_uncertainty_routing_runs_and_its_extremes_are_exact(toy_pair):
    small = [r.token_ids for r in run(toy_pair, "small")]
    large = [r.token_ids for r in run(toy_pair, "single")]
    assert [r.token_ids for r in valid(run(toy_pair, "uncertainty", UncertaintyConfig(margin_threshold=0.0)))] == small
    assert [r.token_ids for r in valid(run(toy_pair, "uncertainty", UncertaintyConfig(margin_threshold=1.0)))] == large
    mixed = valid(run(toy_pair, "uncertainty", UncertaintyConfig(margin_threshold=0.5)))
    for result in mixed:
        changes = sum(a != b for a, b in zip(["small"] + result.provenance, result.provenance))
        assert len(result.events) == changes


def test_speculative_thinking_runs_and_hands_reflections_to_the_large_model(toy_pair):
    small = [r.token_ids for r in run(toy_pair, "small")]
    quiet = SpeculativeThinkingConfig(reflection_words="", answer_handoff=False)
    assert [r.token_ids for r in valid(run(toy_pair, "speculative-thinking", quiet))] == small
    texts = [r.text for r in run(toy_pair, "small", max_new_tokens=60)]
    words = sorted({w for t in texts for w in re.findall(r"[A-Za-z]{2,}", t)})
    results = valid(run(toy_pair, "speculative-thinking", SpeculativeThinkingConfig(reflection_words="|".join(words)),
                        max_new_tokens=60))
    events = [e for r in results for e in r.events if e.reason == "reflection"]
    assert events and all(e.handoff == ("small", "large") for e in events)
    assert any("large" in r.provenance for r in results)
