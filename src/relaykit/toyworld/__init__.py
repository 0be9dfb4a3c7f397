"""The embedded toy world: task generator, tokenizer and the shipped toy-small / toy-large pair."""

from pathlib import Path

from relaykit.toyworld.tasks import DOMAINS, Problem, fresh, load_split, make_problem, split_of

CHECKPOINTS = Path(__file__).parent / "checkpoints"
TOY_SMALL = CHECKPOINTS / "toy-small"
TOY_LARGE = CHECKPOINTS / "toy-large"
TOY_SMALL_RELAY = CHECKPOINTS / "toy-small-relay"  # toy-small trained to call toy-large (RelayLLM)
TOY_VERIFIER = CHECKPOINTS / "toy-verifier"  # toy-small trained to rate reasoning steps (search)
TOY_PROBER = CHECKPOINTS / "toy-prober"  # toy-small trained to answer from a cut thinking (early exit)
TOY_DIFFICULTY = CHECKPOINTS / "toy-difficulty"  # toy-small trained to predict where it is right (adaptive)
# FusionRoute: toy-large fine-tuned per domain (expert-NAME), a router from toy-small, the query
# classifier of the query-level routing baseline
FUSIONROUTE = CHECKPOINTS / "fusionroute"
SHIPPED_CUES = CHECKPOINTS / "cues.json"  # RelayGen's switch cues and check threshold calibrated for the pair
SHIPPED_ADAPTIVE = CHECKPOINTS / "adaptive.json"  # adaptive's thresholds calibrated for the pair
SHIPPED_ADAPTIVE_DIFFICULTY = CHECKPOINTS / "adaptive-difficulty.json"  # the same for signal=difficulty


def is_shipped_pair(models: dict) -> bool:
    """Whether the large and small models are the shipped toy checkpoints."""
    return all(
        role in models and Path(getattr(models[role], "source", "")).resolve() == folder.resolve()
        for role, folder in (("large", TOY_LARGE), ("small", TOY_SMALL))
    )


__all__ = ["DOMAINS", "Problem", "fresh", "load_split", "make_problem", "split_of", "TOY_SMALL", "TOY_LARGE",
           "TOY_SMALL_RELAY", "TOY_VERIFIER", "TOY_PROBER", "TOY_DIFFICULTY", "FUSIONROUTE", "SHIPPED_CUES",
           "SHIPPED_ADAPTIVE", "SHIPPED_ADAPTIVE_DIFFICULTY", "is_shipped_pair"]
