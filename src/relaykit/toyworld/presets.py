"""The shipped toy pair's presets: what a strategy uses on the shipped checkpoints when its
options leave a file unnamed. The one place that knows which shipped artefact goes with which
strategy option (the resolver applies them, `relaykit.resolve`)."""

from __future__ import annotations

from pathlib import Path

from ..vocabulary import BASE, DIFFICULTY, EXPERT_PREFIX, LARGE, PROBER, ROUTER, SMALL, VERIFIER
from . import (
    FUSIONROUTE,
    SHIPPED_ADAPTIVE,
    SHIPPED_ADAPTIVE_DIFFICULTY,
    SHIPPED_CUES,
    TOY_DIFFICULTY,
    TOY_LARGE,
    TOY_PROBER,
    TOY_SMALL,
    TOY_SMALL_RELAY,
    TOY_VERIFIER,
    is_shipped_pair,
)

# role -> the shipped checkpoint loaded for it when no model is given
ROLES = {LARGE: TOY_LARGE, SMALL: TOY_SMALL, VERIFIER: TOY_VERIFIER, PROBER: TOY_PROBER, DIFFICULTY: TOY_DIFFICULTY,
         ROUTER: FUSIONROUTE / "router", BASE: TOY_LARGE}
# strategy -> role -> the shipped model it runs instead on the shipped pair (RelayLLM's trained small)
MODELS = {"relayllm": {SMALL: TOY_SMALL_RELAY}}
CLASSIFIER = FUSIONROUTE / "query-classifier.safetensors"  # query routing over the shipped experts


def shipped_experts() -> dict[str, str]:
    """name -> folder of each shipped toy domain expert (FusionRoute)."""
    return {folder.name.removeprefix("expert-"): str(folder) for folder in sorted(FUSIONROUTE.glob("expert-*"))
            if (folder / "config.json").is_file()}


def default_model(role: str) -> str | None:
    """The shipped toy checkpoint for `role` ("large", "small", "verifier", "router", "base",
    "expert:NAME"), when present."""
    if role.startswith(EXPERT_PREFIX):
        return shipped_experts().get(role.removeprefix(EXPERT_PREFIX))
    folder = ROLES.get(role)
    return str(folder) if folder is not None and (folder / "config.json").is_file() else None


def has_shipped_experts(models: dict) -> bool:
    experts = {role.removeprefix(EXPERT_PREFIX): str(model.source) for role, model in models.items()
               if role.startswith(EXPERT_PREFIX)}
    return bool(experts) and experts == shipped_experts()


def preset(kind: str, config, models: dict) -> str | None:
    """The shipped file for an unnamed option of `kind` (see `relaykit.strategies.base.reads`),
    when the models are the shipped ones; None elsewhere."""
    if kind == "cues" and is_shipped_pair(models):
        return str(SHIPPED_CUES)
    if kind == "thresholds" and is_shipped_pair(models):
        shipped = SHIPPED_ADAPTIVE if config.signal == "samples" else SHIPPED_ADAPTIVE_DIFFICULTY
        return str(shipped) if shipped.is_file() else None
    if kind == "classifier" and has_shipped_experts(models) and CLASSIFIER.is_file():
        return str(CLASSIFIER)
    return None


def preset_models(strategy: str, models: dict) -> dict[str, Path]:
    """role -> the shipped checkpoint `strategy` runs instead of `models[role]` on the shipped pair."""
    return dict(MODELS.get(strategy, {})) if is_shipped_pair(models) else {}
