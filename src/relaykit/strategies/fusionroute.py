"""FusionRoute (Xiong et al. 2026, arXiv 2601.05106): token-level routing among domain experts.

At each step the router (a small LM with a routing head) gives routing weights and its own
next-token logits; the expert with the largest weight writes the token from softmax(its logits +
the router's logits). Only the router and the chosen expert run a forward: an expert that was not
chosen catches up on the tokens it missed when it is chosen again.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RelaykitError
from ..models.router import router_experts
from ..runtime.asks import Logits
from ..vocabulary import EXPERTS, ROUTER, EventKind, expert_role
from .base import Strategy, reads, register


@dataclass
class FusionRouteConfig:
    # add the router's logits to the chosen expert's (the paper's complementary logits); false:
    # token-level expert selection alone (the paper's ablation)
    complement: bool = True
    # another router checkpoint than the loaded one, so that ablations (router-sft: no CDPO;
    # router-no-routing-loss) run beside the full method in one evaluation
    router: str = reads("model", "")


@register("fusionroute")
class FusionRoute(Strategy):
    roles: tuple[str, ...] = (ROUTER, EXPERTS)
    Config = FusionRouteConfig
    in_demo = False  # the demo's toy problems are not the domain-expert world

    def __init__(self, models: dict, config=None, *args, **kwargs):
        if config is not None and config.router:
            raise RelaykitError(f"fusionroute router={config.router}: load it first (relaykit.resolve)")
        router = models.get(ROUTER)
        if router is None:
            raise RelaykitError("strategy 'fusionroute' needs a router model (--router PATH)")
        names = router_experts(router.hf)
        if names is None:
            raise RelaykitError(f"{router.source} is not a router: its checkpoint has no routing head "
                                "(relaykit train fusionroute writes one)")
        missing = [name for name in names if expert_role(name) not in models]
        if missing:
            raise RelaykitError(f"the router routes to experts {', '.join(names)}; no model given for "
                                f"{', '.join(missing)} (--expert NAME=PATH)")
        self.experts = [expert_role(name) for name in names]
        self.roles = (ROUTER, *self.experts)
        super().__init__(models, config, *args, **kwargs)

    def run(self, request):
        sequence, writer, count = request.sequence, None, len(self.experts)
        while not sequence.finished:
            routed = (yield Logits(ROUTER, sequence))[-1]
            expert = self.experts[int(routed[-count:].argmax())]
            logits = (yield Logits(expert, sequence))[-1]
            if self.config.complement:
                logits = logits + routed[:-count]
            if expert != writer:
                if writer is not None:
                    request.event(EventKind.ROUTE, (writer, expert))
                writer = expert
            sequence.append(request.sample(logits), expert)
            request.finish_if_done(sequence)
