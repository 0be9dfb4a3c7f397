"""Tuned settings: the options a strategy runs with when it is named bare, measured for one
large/small pair by `relaykit calibrate settings` and stored beside the large model
(`relaykit-settings.json` in its folder, or `FILE.gguf.relaykit-settings.json`); the shipped toy
pair ships its own. A strategy declares which of its options are tuned (`Strategy.tunes`); naming
any of them (`speculative[k=8]`, `--k 8`) runs the config's defaults with the options given."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import RelaykitError

FILE_NAME = "relaykit-settings.json"


@dataclass
class Tuned:
    """A pair's tuned settings: strategy name -> its entry ({"options": {...}, measurements} or
    {"refused": why no setting kept the large model's accuracy}), read from `path`."""

    path: Path
    large: str
    small: str
    strategies: dict

    def entry(self, name: str) -> dict | None:
        return self.strategies.get(name)


@dataclass
class Settings:
    """The options a strategy variant ran with and where they came from (reports show both)."""

    options: dict
    source: str  # "tuned: PATH", "given" or "defaults"


def settings_path(large: str) -> Path | None:
    """Where the settings of a pair whose large model is `large` (a folder or a file) live; None
    for models that are not local (hub ids, endpoints)."""
    path = Path(large)
    if path.is_dir():
        return path / FILE_NAME
    if path.is_file():
        return path.with_name(f"{path.name}.{FILE_NAME}")
    return None


def load_tuned(path: str | Path) -> Tuned:
    """Read a settings file; a missing or malformed file is an error naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return Tuned(path, data["large"], data["small"], dict(data["strategies"]))
    except FileNotFoundError:
        raise RelaykitError(f"no settings file {path} (relaykit calibrate settings writes one)") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RelaykitError(f"{path} is not a settings file of relaykit calibrate settings ({error})") from None


def find_tuned(large: str | None, small: str | None, given: str | None = None) -> Tuned | None:
    """The tuned settings for the pair of model sources `large` and `small`: the file `given`
    ("none": no tuned settings), else the one beside the large model when it was measured with
    this small model; None when there is none."""
    if given == "none":
        return None
    if given:
        return load_tuned(given)
    path = settings_path(large) if large else None
    if path is None or not path.is_file():
        return None
    tuned = load_tuned(path)
    return tuned if small and _local(tuned.small, path.parent) == _local(small, Path.cwd()) else None


def _local(source: str, folder: Path) -> str:
    """A model source as a resolved path when it names a local file or folder (relative to
    `folder`), else as given (a hub id, an endpoint)."""
    path = folder / source
    return str(path.resolve()) if path.exists() else source


def write_tuned(path: str | Path, large: str, small: str, strategies: dict) -> Path:
    """Write a settings file: the pair (local models relative to the file, so that it moves with
    them) and each strategy's entry; entries of other strategies already in the file for this pair
    stay (a strategy can be calibrated again on its own)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pair = {role: os.path.relpath(source, path.parent) if Path(source).exists() else source
            for role, source in (("large", large), ("small", small))}
    if path.is_file():
        kept = load_tuned(path)
        same_large = _local(kept.large, path.parent) == _local(large, Path.cwd())
        if same_large and _local(kept.small, path.parent) == _local(small, Path.cwd()):
            strategies = {**kept.strategies, **strategies}
    path.write_text(json.dumps({**pair, "strategies": strategies}, indent=2) + "\n")
    return path
