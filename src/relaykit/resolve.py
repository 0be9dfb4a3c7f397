"""Reading what strategy options name, before a strategy is built: cues files, calibrated
thresholds, prompt classifiers, model checkpoints and the options of inner strategies. Strategies
do no I/O; every file they use is read here, models on the device and in the dtype of the models
already loaded. On the shipped toy pair, options left unnamed take the pair's presets
(`relaykit.toyworld.presets`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .errors import RelaykitError
from .models.loading import DTYPES, Model, load_model
from .options import config_from_dict
from .strategies.base import Strategy, Variant, parse_variant
from .strategies.expert_baselines import Classifier
from .text import looks_like_file, parse_cues
from .toyworld.presets import preset, preset_models

THRESHOLDS = ("answer_at", "more_at")


class Loader:
    """Loads the checkpoints strategies add to the given models, once each, on their device and
    in their dtype."""

    def __init__(self, device: str = "cpu", dtype: str = "auto"):
        self.device, self.dtype = device, dtype
        self.loaded: dict[tuple[str, str], Model] = {}

    @classmethod
    def like(cls, models: dict) -> "Loader":
        """A loader matching the in-process models of `models` (the first one's device and dtype)."""
        for model in models.values():
            if getattr(model, "hf", None) is not None:
                dtype = model.dtype if model.dtype in DTYPES or model.dtype == "int8" else "auto"
                return cls(str(next(model.hf.parameters()).device), dtype)
        return cls()

    def model(self, path: str | Path, role: str) -> Model:
        key = (str(path), role)
        if key not in self.loaded:
            self.loaded[key] = load_model(str(path), name=role, device=self.device, dtype=self.dtype)
        return self.loaded[key]


def resolve(cls: type[Strategy], config, models: dict, loader: Loader | None = None) -> tuple[object, dict]:
    """`config` with every field a strategy `reads` read (see `relaykit.strategies.base.reads`),
    and the models it runs on (the given ones, plus or instead of the checkpoints it names)."""
    loader = loader or Loader.like(models)
    models = dict(models)
    for role, path in preset_models(cls.name, models).items():
        models[role] = loader.model(path, role)
    changes: dict = {}
    for field in dataclasses.fields(config):
        kind = field.metadata.get("reads")
        if kind is None:
            continue
        value = getattr(config, field.name)
        if value is None or value == "":
            value = preset(kind, config, models) or value
        if kind == "strategy":
            changes[field.name] = resolve_variant(value, models, loader)
        elif kind == "cues":
            changes.update(_cues(value, config, models))
        elif kind == "thresholds" and value and value != "none":
            changes.update(load_thresholds(value, config.signal), **{field.name: "none"})
        elif kind == "classifier" and isinstance(value, str) and value:
            changes[field.name] = load_classifier(value)
        elif kind == "model" and value:
            models[field.name] = loader.model(value, field.name)  # the field names the role it fills
            changes[field.name] = ""
    return dataclasses.replace(config, **changes), models


def resolve_variant(spec: str | Variant, models: dict, loader: Loader) -> Variant:
    """An inner strategy `NAME[...]` with its own files read (it runs on its parent's models)."""
    if isinstance(spec, Variant):
        return spec
    cls, options = parse_variant(spec)
    config, _ = resolve(cls, config_from_dict(cls, options), models, loader)
    return Variant(spec, cls, config)


def _cues(spec, config, models: dict) -> dict:
    """RelayGen's cues, from a file or as written. A cues.json also carries the check threshold it
    was calibrated with, which an unset check takes when the large model gives logits (on the
    shipped pair, the shipped one for any cues)."""
    cues, check = load_cues(spec)
    changes: dict = {"cues": cues}
    large = models.get("large")
    if config.check is None and large is not None and large.scoring_refusal() is None:
        shipped = preset("cues", config, models)
        if check is None and shipped:
            check = load_cues(shipped)[1]
        if check is not None:
            changes["check"] = check
    return changes


def load_cues(spec: str | list[str] | None) -> tuple[list[str], float | None]:
    """Cues (and the check threshold a cues.json of `relaykit calibrate` carries) from a cues.json,
    a text file of one cue per line, or anything `relaykit.text.parse_cues` reads."""
    if not isinstance(spec, str) or not (looks_like_file(spec) or Path(spec).is_file()):
        return parse_cues(spec), None
    path = Path(spec).expanduser()
    if not path.is_file():
        raise RelaykitError(f"no such cues file: {spec}")
    if path.suffix != ".json":
        return [line.rstrip("\n") for line in path.read_text().splitlines() if line.strip()], None
    try:
        calibrated = json.loads(path.read_text())
        return [c for c in calibrated["selected"] if c], calibrated.get("check")
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise RelaykitError(f"{spec} is not a calibration file with a 'selected' list ({error})") from None


def load_thresholds(path: str, signal: str = "samples") -> dict:
    """answer_at and more_at from an adaptive.json of `relaykit calibrate adaptive` for `signal`."""
    if not Path(path).is_file():
        raise RelaykitError(f"adaptive calibration file not found: {path}")
    try:
        chosen = json.loads(Path(path).read_text())
        thresholds = {name: float(chosen[name]) for name in THRESHOLDS}
    except (ValueError, KeyError, TypeError) as error:
        raise RelaykitError(f"{path}: not an adaptive.json of `relaykit calibrate adaptive` ({error})") from None
    if chosen.get("signal", "samples") != signal:
        raise RelaykitError(f"{path} was calibrated for signal={chosen.get('signal', 'samples')}, not signal={signal}")
    return thresholds


def load_classifier(path: str | Path) -> Classifier:
    """A query-routing prompt classifier (safetensors: `weight`, `bias`, expert names in the metadata)."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise RelaykitError(f"no such classifier file: {path}")
    with safe_open(str(path), "pt") as file:
        names = (file.metadata() or {}).get("experts", "")
        experts = names.split(",") if names else []
        return Classifier(file.get_tensor("weight"), file.get_tensor("bias"), experts, str(path))
