"""Calibration of RelayGen's segment check (ours; benchmarks/RESULTS.md, "RelayGen on unseen
problems"): the margin, in logits, at which the large model's catch-up forward cuts a segment the
small model wrote.

RelayGen runs on the calibration problems with the selected cues under each candidate threshold;
threshold 0 cuts at every disagreement, which keeps the large model's greedy text. Among the
thresholds that lose no problem against threshold 0 (nor does any smaller one), the one that
leaves the large model the fewest tokens is kept, the strictest on a tie: leniency is taken only
where it buys speed. The margins of threshold 0's cuts are reported beside it.
"""

from __future__ import annotations

from ..decoding.stopping import StopConfig
from ..errors import RelaykitError

THRESHOLDS = (0.0, 1.0, 2.0, 4.0, 8.0)


def calibrate_check(models: dict, problems: list, cues: list[str], thresholds=THRESHOLDS,
                    max_new_tokens: int = 512, batch_size: int = 8) -> dict:
    """The check threshold for `models` ("large", "small") on evaluation `problems` (with references)."""
    from ..evals.harness import EvalSettings, evaluate
    from ..strategies.relaygen import RelayGen, RelayGenConfig

    if not problems or not hasattr(problems[0], "reference"):
        raise RelaykitError("calibrating the check needs evaluation problems with references (a dataset)")
    thresholds = sorted(thresholds)
    stop = StopConfig(max_new_tokens=max_new_tokens)
    strategies = {t: RelayGen(models, RelayGenConfig(cues=list(cues), check=t), stop=stop) for t in thresholds}
    results = evaluate({f"check={t:g}": s for t, s in strategies.items()}, problems, "calibration",
                       EvalSettings(batch_size=batch_size))
    entries = {t: results["strategies"][f"check={t:g}"] for t in thresholds}
    safe = []
    for t in thresholds:
        if entries[t]["accuracy"] < entries[thresholds[0]]["accuracy"]:
            break
        safe.append(t)
    chosen = min(safe, key=lambda t: (entries[t]["large_token_share"], t))
    margins = sorted(e["detail"]["margin"] for p in entries[thresholds[0]]["problems"] for e in p["events"]
                     if e["reason"] == "check")
    return {
        "check": chosen,
        "check_sweep": {f"{t:g}": {"accuracy": e["accuracy"], "large_token_share": round(e["large_token_share"], 4)}
                        for t, e in entries.items()},
        "check_cut_margins": [round(m, 2) for m in margins],
    }
