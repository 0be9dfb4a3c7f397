"""Benchmark (d): RelayGen and its baselines on the toy pair, in one `relaykit eval` run.

1. Calibrate the switch cues on the toy calibration split (unless --cues is given).
2. Measure, on the dev split, the share of thinking sentences RelayGen gives the small model, so
   that random switching runs at the same share (the paper's random baseline).
3. One eval on the test split, batch 1 (per-request latency, as the paper reports), strategies
   taking turns problem by problem: large, small, speculative (k=4; k=K stopping drafts below 0.4
   confidence; the best settings found on unseen problems, 128 drafts stopping below 0.8), RelayGen
   (calibrated cues; every candidate cue; answer hand-off only; a cue allowed right after a
   hand-back; speculative large turns, also stopping drafts below 0.4 confidence, and the best
   settings found on unseen problems, 32 drafts stopping below 0.8), random switching, uncertainty
   routing, Speculative Thinking.
Ends with one JSON line: accuracy against large, speed-up, small-token share, switches.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from relaykit.cli import main as relaykit
from relaykit.text import SENTENCE_END, THINK_END


def thinking_sentence_share(results: dict, name: str) -> float:
    """Share of thinking sentences that a cue handed to the small model."""
    handed = sentences = 0
    for problem in results["strategies"][name]["problems"]:
        thinking = problem["text"].split(THINK_END)[0]
        sentences += len(SENTENCE_END.findall(thinking + "\n"))
        handed += sum(1 for e in problem["events"] if e["reason"] == "cue")
    return handed / max(sentences, 1)


def run(argv: list[str]) -> None:
    code = relaykit(argv)
    if code:
        raise SystemExit(f"relaykit {' '.join(argv)} failed with exit code {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cues", help="a cues.json (default: calibrate first)")
    parser.add_argument("--limit", type=int, default=100, help="test problems")
    parser.add_argument("--speculative", type=int, default=8, help="drafts per large turn for relaygen[speculative=K]")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--out", default="runs/bench-relaygen")
    args = parser.parse_args()
    out = Path(args.out)
    common = ["--threads", args.threads]
    cues = args.cues or str(out / "cues.json")
    if not args.cues:
        run(["calibrate", "--limit", "100", "--out", cues, *common])
    run(["eval", "--strategy", "relaygen", "--cues", cues, "--dataset", "toy:dev", "--limit", "30",
         "--out", str(out / "dev"), *common])
    share = thinking_sentence_share(json.loads((out / "dev" / "results.json").read_text()), "relaygen")
    print(f"RelayGen hands {share:.0%} of thinking sentences to the small model; random-switch runs at that share")
    k = args.speculative
    strategies = ["large", "small", "speculative", f"speculative[k={k} draft_confidence=0.4]", "relaygen",
                  "relaygen[cues=all]", "relaygen[cues=none]",
                  "relaygen[min_large_tokens=1]", f"relaygen[speculative={k}]",
                  f"relaygen[speculative={k} draft_confidence=0.4]",
                  f"relaygen[speculative={k} draft_confidence=0.4 min_large_tokens=1]",
                  "speculative[k=128 max_k=128 draft_confidence=0.8]", "relaygen[speculative=32 draft_confidence=0.8]",
                  f"random-switch[small_share={share:.3f}]", "uncertainty", "speculative-thinking"]
    run(["eval", "--strategy", ",".join(strategies), "--cues", cues, "--dataset", "toy:test",
         "--limit", str(args.limit), "--batch-size", "1", "--out", str(out / "test"), *common])
    results = json.loads((out / "test" / "results.json").read_text())["strategies"]
    large = results["large"]["accuracy"]
    figures = {
        re.sub(r"small_share=[0-9.]+", "small_share", name): {
            "accuracy_minus_large": round(entry["accuracy"] - large, 3),
            "speedup": round(entry["speedup_vs_large"], 3),
            "small_token_share": round(1 - entry["large_token_share"], 3),
            "switches_per_problem": round(entry["switches_per_problem"], 2),
        }
        for name, entry in results.items()
    }
    print(json.dumps({"benchmark": "relaygen", "large_accuracy": large, "random_switch_share": round(share, 3),
                      "strategies": figures}))


if __name__ == "__main__":
    main()
