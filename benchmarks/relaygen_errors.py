"""Where RelayGen's plain hand-off goes wrong on unseen problems: for every problem the
large model alone gets right and `relaygen[check=inf]` gets wrong in a `bench_relaygen_fresh.py`
run, the first place the two texts part: who wrote it, inside which segment (the cue that opened
it, or the answer) and the two versions. Also whether the checked `relaygen` got it back.

    python benchmarks/relaygen_errors.py runs/bench-relaygen-fresh
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from relaykit.text import CUE_WORDS, THINK_END

CUE = re.compile(r"\b(?:" + "|".join(CUE_WORDS) + r")\b,?", re.IGNORECASE)


def first_departure(large_text: str, segments: list) -> dict:
    """Where `segments` (text, writer) first differ from `large_text`: writer, opening cue, snippets."""
    offset = 0
    for index, (text, writer) in enumerate(segments):
        for i, char in enumerate(text):
            if offset + i >= len(large_text) or large_text[offset + i] != char:
                at = offset + i
                cues = CUE.findall(segments[index - 1][0]) if index else []
                opened = cues[-1] if cues else "(no cue)"
                before = "".join(t for t, _ in segments)
                return {
                    "writer": writer,
                    "where": ("answer" if THINK_END in before[:at]
                              else f"after {opened!r}" if writer == "small" else "large turn"),
                    "relaygen": before[max(0, at - 12) : at + 6].replace("\n", " "),
                    "large": large_text[max(0, at - 12) : at + 6].replace("\n", " "),
                }
        offset += len(text)
    return {"writer": "?", "where": "length", "relaygen": "", "large": ""}


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench-relaygen-fresh")
    kinds, regained, lost = Counter(), 0, 0
    for results in sorted(root.glob("seed-*/results.json")):
        strategies = json.loads(results.read_text())["strategies"]
        large, plain, checked = (strategies[n]["problems"] for n in ("large", "relaygen[check=inf]", "relaygen"))
        for a, b, c in zip(large, plain, checked):
            if a["correct"] and not b["correct"]:
                lost += 1
                regained += c["correct"]
                departure = first_departure(a["text"], b["segments"])
                kinds[(departure["writer"], departure["where"])] += 1
                print(f"{results.parent.name} {a['id']}: {departure['writer']} {departure['where']}: "
                      f"{departure['relaygen']!r} (large: {departure['large']!r}); checked relaygen "
                      f"{'right' if c['correct'] else 'wrong'}")
    print(f"\n{lost} problems lost by the plain hand-off; the checked relaygen gets {regained} of them back")
    for (writer, where), count in kinds.most_common():
        print(f"  {count:>3}  first departure by {writer}, {where}")


if __name__ == "__main__":
    main()
