"""The library entry point: load models, build strategies, evaluate them.

The command line, the benchmarks and the server assemble a run through these functions, so a
rule such as the shipped toy pair's calibrated cues holds for all of them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .decoding.sampler import SamplingConfig
from .decoding.stopping import StopConfig
from .errors import OptionError, RelaykitError
from .evals.datasets import load_dataset, token_budget
from .evals.harness import EvalSettings, evaluate
from .evals.report import write_report
from .models.kv import KVPolicy
from .models.kv import make_policy as kv_policy
from .models.loading import Model, load_model
from .models.remote import RemoteModel, is_remote, load_remote
from .options import config_from_dict, flag, split_variants, variant_text
from .resolve import Loader, resolve
from .strategies.base import Strategy, get_strategy, parse_variant
from .toyworld.presets import default_model, shipped_experts
from .tuned import Settings, Tuned, find_tuned
from .vocabulary import EXPERT_PREFIX, EXPERTS, expert_role, expert_roles

__all__ = [
    "build_strategies", "build_strategy", "default_model", "evaluate_strategies", "kv_policy", "load_models",
    "sampling_and_stop", "split_variants", "required_roles", "token_budget", "tuned_for", "tuned_settings",
]


def load_models(
    specs: dict[str, str | None],
    *,
    tokenizer: str | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    engine: str = "auto",
) -> dict[str, Model | RemoteModel]:
    """Load role -> spec: a checkpoint folder, a .gguf file, `pkg:PACKAGE`, a hub id or an
    endpoint `URL#MODEL` (whose tokenizer is `tokenizer`, else MODEL); None: the shipped toy
    checkpoint for the role. The role `EXPERTS` ("expert:*") takes a dict name -> spec of domain
    experts (None: the shipped ones), loaded as roles "expert:NAME". `engine`: see
    `relaykit.models.loading.load_model`."""
    specs = dict(specs)
    if EXPERTS in specs:
        experts = specs.pop(EXPERTS) or shipped_experts()
        if not experts:
            raise RelaykitError("no expert models given (--expert NAME=PATH) and no shipped toy experts found")
        specs.update({expert_role(name): spec for name, spec in experts.items()})
    models = {}
    for role, given in specs.items():
        spec = given or default_model(role)
        if spec is None:
            raise RelaykitError(f"no {role} model given (--{role} PATH) and no shipped toy {role} checkpoint found")
        if is_remote(spec):
            models[role] = load_remote(spec, tokenizer, name=role)
        else:
            models[role] = load_model(spec, name=role, dtype=dtype, device=device, engine=engine,
                                      trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    return models


def sampling_and_stop(
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    max_new_tokens: int = 256,
    stop_strings: list[str] | None = None,
    stop_token_ids: list[int] | None = None,
) -> tuple[SamplingConfig, StopConfig]:
    """Validated sampling and stopping settings (0 temperature: greedy; eos always stops)."""
    if max_new_tokens < 1:
        raise RelaykitError(f"max-new-tokens must be >= 1, got {max_new_tokens}")
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    stop = StopConfig(max_new_tokens=max_new_tokens, stop_strings=list(stop_strings or []),
                      stop_token_ids=list(stop_token_ids or []))
    return sampling, stop


def tuned_settings(large: str | None, small: str | None, given: str | None = None) -> Tuned | None:
    """The tuned settings of the pair named by the model specs `large` and `small` (None: the
    shipped toy checkpoints): the settings file `given` ("none": no tuned settings), else the one
    `relaykit calibrate settings` wrote beside the large model for this small one."""
    return find_tuned(large or default_model("large"), small or default_model("small"), given)


def tuned_for(models: dict) -> Tuned | None:
    """The tuned settings of loaded models' pair (see `tuned_settings`)."""
    sources = [getattr(models.get(role), "source", None) for role in ("large", "small")]
    return find_tuned(*sources) if all(sources) else None


def _with_tuned(cls: type[Strategy], given: dict, tuned: Tuned | None) -> tuple[dict, Settings]:
    """A variant's options: `given` alone when it names one of the options the strategy tunes (or
    it tunes none), else the pair's tuned settings under `given`. A strategy whose default could
    lose the answer (`tuning_required`) is refused without tuned settings; so is one whose
    calibration kept no setting."""
    named = not cls.tunes or set(given) & set(cls.tunes)
    entry = tuned.entry(cls.name) if tuned is not None and not named else None
    if entry is None:
        if cls.tuning_required and not named:
            example = variant_text(cls.name, {key: getattr(cls.Config(), key) for key in cls.tunes})
            raise RelaykitError(
                f"{cls.name} has no settings tuned for this pair, and its default rule can lose the answer "
                f"(relaykit calibrate settings measures one); to run a rule anyway, name it: {example}")
        return given, Settings(given, "given" if given else "defaults")
    if "refused" in entry:
        raise RelaykitError(f"{cls.name}: no setting kept the large model's accuracy on this pair "
                            f"({entry['refused']}; {tuned.path}); name one to run it anyway")
    return {**entry["options"], **given}, Settings(entry["options"], f"tuned: {tuned.path}")


def _variants(names: list[str], options: dict | None, add_baseline: bool,
              tuned: Tuned | None = None) -> dict[str, tuple[type[Strategy], dict, Settings]]:
    """label -> (strategy class, its options: the pair's tuned settings unless it names a tuned
    option, the shared ones it has, then its own; where they came from); the `large` baseline
    first when `add_baseline`. An option that no variant has is an error."""
    parsed = {name.strip(): parse_variant(name) for name in names}
    if add_baseline:
        parsed = {"large": parsed.pop("large", (get_strategy("large"), {})), **parsed}
    classes = {label: cls for label, (cls, _) in parsed.items()}
    shared = {key: value for key, value in (options or {}).items() if value is not None}
    owned = {key for cls in classes.values() for key in _option_names(cls)}
    if set(shared) - owned:
        flags = ", ".join(flag(key) for key in sorted(set(shared) - owned))
        raise OptionError(f"no chosen strategy ({', '.join(parsed)}) has the option(s) {flags}")
    return {
        label: (cls, *_with_tuned(cls, {**{k: v for k, v in shared.items() if k in _option_names(cls)},
                                         **parsed[label][1]}, tuned))
        for label, cls in classes.items()
    }


def _option_names(cls: type[Strategy]) -> set[str]:
    return {field.name for field in dataclasses.fields(cls.Config)}


def required_roles(names: list[str], options: dict | None = None, add_baseline: bool = True,
                   tuned: Tuned | None = None) -> tuple[str, ...]:
    """The models ("large", "small") that the strategy variants `names` need, with the pair's
    `tuned` settings. Checks the names and the shared `options` as `build_strategies` does, so a
    mistake shows before any model loads."""
    variants = _variants(names, options, add_baseline, tuned)
    roles = (role for cls, values, _ in variants.values() for role in cls.roles_of(config_from_dict(cls, values)))
    return tuple(dict.fromkeys(roles))


def build_strategies(
    names: list[str],
    models: dict[str, Model | RemoteModel],
    options: dict | None = None,
    sampling: SamplingConfig | None = None,
    stop: StopConfig | None = None,
    add_baseline: bool = True,
    tuned: Tuned | None = None,
    loader: Loader | None = None,
) -> dict[str, Strategy]:
    """label -> strategy for the variants `names` (NAME or NAME[option=value ...]), sharing
    `models`. Each shared option in `options` goes to the strategies that have it; with
    `add_baseline`, the `large` strategy (speed-ups are measured against it) comes first. A
    variant that names none of the options its strategy tunes runs the pair's `tuned` settings
    (`tuned_for(models)`); each strategy's `settings` say what it ran with. Files that options
    name are read first (`relaykit.resolve`; on the shipped pair unnamed ones take its presets,
    e.g. RelayGen's calibrated cues and RelayLLM's trained small model; `loader` loads added
    checkpoints). A variant `expert` without a name becomes one entry per loaded expert."""
    experts = [role.removeprefix(EXPERT_PREFIX) for role in expert_roles(models)]
    loader = loader or Loader.like(models)
    variants = _variants(names, options, add_baseline, tuned)
    for label, (cls, values, settings) in list(variants.items()):
        if cls.one_entry_per_expert and not values.get("name"):  # `expert`: each expert, one entry
            del variants[label]
            variants.update({f"{label}[name={name}]": (cls, {**values, "name": name}, settings) for name in experts})
    strategies = {}
    for label, (cls, values, settings) in variants.items():
        config, mine = resolve(cls, config_from_dict(cls, values), models, loader)
        strategies[label] = cls(mine, config, sampling, stop)
        strategies[label].settings = settings
    return strategies


def build_strategy(
    spec: str,
    models: dict[str, Model | RemoteModel],
    options: dict | None = None,
    sampling: SamplingConfig | None = None,
    stop: StopConfig | None = None,
    tuned: Tuned | None = None,
    loader: Loader | None = None,
) -> Strategy:
    """One strategy from NAME or NAME[option=value ...], as `build_strategies` builds it."""
    built = build_strategies([spec], models, options, sampling, stop, add_baseline=False, tuned=tuned, loader=loader)
    return next(iter(built.values()))


def evaluate_strategies(
    strategies: dict[str, Strategy],
    dataset: str,
    limit: int | None = None,
    batch_size: int = 8,
    raw: bool = False,
    out: str | Path | None = None,
    kv: KVPolicy | None = None,
) -> tuple[dict, dict[str, Path]]:
    """Run every strategy on the same problems of `dataset` (see `load_dataset`), with the KV
    policy `kv` on every in-process model, and, when `out` is a folder, write the report there.
    Returns the results dict and the written paths."""
    if batch_size < 1:
        raise RelaykitError(f"batch-size must be >= 1, got {batch_size}")
    problems = load_dataset(dataset, limit)
    results = evaluate(strategies, problems, dataset, EvalSettings(batch_size=batch_size, raw=raw), kv)
    paths = write_report(results, out) if out is not None else {}
    return results, paths
