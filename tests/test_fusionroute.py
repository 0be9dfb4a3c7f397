"""FusionRoute and its baselines on tiny real models: routing picks the arg-max expert, a zero
router with a one-hot routing head reproduces that expert, an expert catches up on exactly what
it missed, CDPO's loss by hand with gradients only in the router, the router checkpoint format,
merging, logit averaging and query routing."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from conftest import build_checkpoint, prompts
from relaykit.decoding.stopping import StopConfig
from relaykit.errors import RelaykitError
from relaykit.models.loading import load_model
from relaykit.models.router import make_router, router_experts, save_router
from relaykit.resolve import resolve
from relaykit.runtime.session import generate
from relaykit.strategies.base import get_strategy
from relaykit.strategies.single import Single
from relaykit.train.dpo import dpo_loss
from relaykit.train.fusionroute import _expert_view, fused_logprobs, router_outputs, router_sft_loss
from relaykit.train.loop import copy_tokenizer_files

NAMES = ("a", "b", "c")
STOP = StopConfig(max_new_tokens=24)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three tiny experts and a smaller router over them with a random routing head."""
    root = tmp_path_factory.mktemp("fusionroute")
    experts = {name: load_model(str(build_checkpoint(root / f"expert-{name}", layers=2, seed=10 + i)), name=name)
               for i, name in enumerate(NAMES)}
    base = build_checkpoint(root / "router-base", layers=1, hidden=32, seed=20)
    hf = AutoModelForCausalLM.from_pretrained(str(base))
    head = make_router(hf, list(NAMES))
    torch.manual_seed(0)
    with torch.no_grad():
        head.routing.weight.normal_(0, 1.0)
    save_router(hf, root / "router")
    copy_tokenizer_files(base, root / "router")
    router = load_model(str(root / "router"), name="router")
    return {"router": router, **{f"expert:{n}": m for n, m in experts.items()}, "root": root}


def models_of(world, **replaced):
    return {**{k: v for k, v in world.items() if k != "root"}, **replaced}


def routing_of(router, tokens: list[int]) -> torch.Tensor:
    """The router's routing weights after every position of `tokens` (a plain full forward)."""
    with torch.no_grad():
        return router.hf(input_ids=torch.tensor([tokens])).logits[0, :, -len(NAMES):]


def test_routing_picks_the_arg_max_expert(world):
    strategy = get_strategy("fusionroute")(models_of(world), stop=STOP)
    questions = prompts(world["router"].tokenizer, 3)
    used = set()
    for question, result in zip(questions, generate(strategy, questions)):
        weights = routing_of(world["router"], question + result.token_ids)
        start = len(question) - 1
        expected = [f"expert:{NAMES[int(weights[start + i].argmax())]}" for i in range(len(result.token_ids))]
        assert result.provenance == expected
        used |= set(expected)
    assert len(used) >= 2  # the random head does switch experts


def test_zero_router_with_one_hot_head_is_that_expert(world):
    router = copy.deepcopy(world["router"])
    head = router.hf.lm_head
    with torch.no_grad():
        head.lm_head.weight.zero_()
        head.routing.weight.zero_()
        head.routing.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
    strategy = get_strategy("fusionroute")(models_of(world, router=router), stop=STOP)
    alone = Single({"large": world["expert:b"]}, stop=STOP)
    questions = prompts(router.tokenizer, 3, seed=1)
    routed, reference = generate(strategy, questions), generate(alone, questions)
    assert [r.token_ids for r in routed] == [r.token_ids for r in reference]
    assert all(set(r.provenance) == {"expert:b"} for r in routed)


def test_an_expert_catches_up_on_exactly_the_tokens_it_missed(world):
    strategy = get_strategy("fusionroute")(models_of(world), stop=STOP)
    question = prompts(world["router"].tokenizer, 1, seed=2)[0]
    result = generate(strategy, [question])[0]
    assert len(set(result.provenance)) >= 2
    for role in strategy.experts:
        written = [i for i, w in enumerate(result.provenance) if w == role]
        usage = result.usage.get(role)
        if not written:
            assert usage is None or usage.prefill_tokens + usage.decode_tokens == 0
            continue
        # asked last before generated token `written[-1]`: it has read every token before it, once
        assert usage.prefill_tokens + usage.decode_tokens == len(question) + written[-1]
        assert usage.forward_calls == len(written)  # catch-up and next token in one forward
    router = result.usage["router"]
    assert router.prefill_tokens + router.decode_tokens == len(question) + len(result.token_ids) - 1


def test_the_router_checkpoint_round_trips_and_bad_routers_are_named(world, tmp_path):
    router = world["router"]
    assert router_experts(router.hf) == list(NAMES)
    tokens = prompts(router.tokenizer, 1)[0]
    again = load_model(str(world["root"] / "router"))
    assert torch.equal(routing_of(router, tokens), routing_of(again, tokens))
    with pytest.raises(RelaykitError, match="not a router"):
        get_strategy("fusionroute")(models_of(world, router=world["expert:a"]))
    missing = models_of(world)
    del missing["expert:c"]
    with pytest.raises(RelaykitError, match="no model given for c"):
        get_strategy("fusionroute")(missing)


def test_cdpo_loss_is_dpo_on_fused_log_probabilities_and_trains_only_the_router(world):
    router = copy.deepcopy(world["router"].hf).train()
    experts = [copy.deepcopy(world[f"expert:{n}"].hf) for n in NAMES]
    prompt = prompts(world["router"].tokenizer, 1, seed=3)[0]
    chosen, rejected = prompt + [5, 6, 7, 8], prompt + [9, 10, 11]
    chosen_experts, rejected_experts = [0, 2, 2, 1], [1, 1, 0]
    logits_c = _expert_view(experts, chosen, len(prompt), chosen_experts)[0]
    logits_r = _expert_view(experts, rejected, len(prompt), rejected_experts)[0]
    reference = torch.tensor([-3.0, -4.5])
    policy = fused_logprobs(router_outputs(router, [chosen, rejected]), [chosen, rejected], [len(prompt)] * 2,
                            [logits_c, logits_r])
    loss = dpo_loss(policy[:1], policy[1:], reference[:1], reference[1:], beta=0.1)

    def by_hand(ids, which):
        total = 0.0
        for i, expert in enumerate(which):
            position = len(prompt) + i
            with torch.no_grad():
                expert_logits = experts[expert](input_ids=torch.tensor([ids[:position]])).logits[0, -1]
            router_logits = router(input_ids=torch.tensor([ids[:position]])).logits[0, -1, : expert_logits.shape[0]]
            total = total + F.log_softmax(expert_logits + router_logits, -1)[ids[position]]
        return total

    expected = -F.logsigmoid(0.1 * ((by_hand(chosen, chosen_experts) - reference[0])
                                    - (by_hand(rejected, rejected_experts) - reference[1])))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    loss.backward()
    assert all(p.grad is None for expert in experts for p in expert.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in router.parameters())


def test_sft_routing_loss_only_where_experts_disagree(world):
    router = copy.deepcopy(world["router"].hf)
    ids = torch.tensor(prompts(world["router"].tokenizer, 2, seed=4)[:1] * 2)
    labels = ids.clone()
    same = [world["expert:a"].hf] * 3
    _, figures = router_sft_loss(router, same, ids, labels, routing_weight=1.0)
    assert figures["informative"] == 0 and figures["routing"] == 0
    _, figures = router_sft_loss(router, [world[f"expert:{n}"].hf for n in NAMES], ids, labels, routing_weight=1.0)
    assert figures["informative"] > 0 and figures["routing"] > 0


def test_merging_identical_experts_gives_the_expert_and_task_arithmetic_at_zero_the_base(world):
    from relaykit.models.merging import merge

    a = world["expert:a"]
    merged = merge([a, a], world["expert:b"], "average")
    assert all(torch.equal(x, y) for x, y in zip(merged.hf.state_dict().values(), a.hf.state_dict().values()))
    merged = merge([a, world["expert:c"]], world["expert:b"], "task-arithmetic", scale=0.0)
    assert all(torch.equal(x, y)
               for x, y in zip(merged.hf.state_dict().values(), world["expert:b"].hf.state_dict().values()))
    with pytest.raises(RelaykitError, match="fine-tuned from the base"):
        merge([a], world["router"])


def test_logit_average_of_one_expert_and_query_routing_by_the_classifier(world, tmp_path):
    one = {"expert:a": world["expert:a"]}
    questions = prompts(world["router"].tokenizer, 3, seed=5)
    averaged = generate(get_strategy("logit-average")(one, stop=STOP), questions)
    alone = generate(Single({"large": world["expert:a"]}, stop=STOP), questions)
    assert [r.token_ids for r in averaged] == [r.token_ids for r in alone]

    vocabulary = len(world["router"].tokenizer)
    path = tmp_path / "classifier.safetensors"
    save_file({"weight": torch.zeros(3, vocabulary), "bias": torch.tensor([0.0, 0.0, 1.0])}, str(path),
              metadata={"experts": "a,b,c"})
    cls = get_strategy("query-route")
    config, models = resolve(cls, cls.Config(classifier=str(path)), models_of(world))
    routed = generate(cls(models, config, stop=STOP), questions)
    reference = generate(Single({"large": world["expert:c"]}, stop=STOP), questions)
    assert [r.token_ids for r in routed] == [r.token_ids for r in reference]
    assert all(set(r.provenance) == {"expert:c"} for r in routed)
    with pytest.raises(RelaykitError, match="no expert 'z'"):
        get_strategy("expert")(models_of(world), get_strategy("expert").Config(name="z"))
