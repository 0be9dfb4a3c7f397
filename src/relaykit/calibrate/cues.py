"""RelayGen cue calibration (Song, Kim and Kim 2026).

The large model writes reasoning traces (the `single` strategy, batched); the small model reads
each whole trace in one forward (`Runner.score`) and gives a score per token. For every candidate
cue, the region after each occurrence (to the first sentence end) is what the small model would
write at run time. A cue's delta is the mean score inside its regions minus the mean score
elsewhere; cues whose delta is above `threshold` with at least `min_occurrences` regions are
selected. Only the thinking part (before `</think>`) is used.

The score (`statistic`): the paper's is the small model's margin p(top1) - p(top2). Ours, the
default, is the agreement p_large(small's top) / p_large(large's top), the large model reading the
same trace in one forward too: 1 where the two agree or where the large model deems both choices
alike, near 0 where the small model would write an error. The margin is low wherever the small
model faces a free choice (a wording), which then reads as difficulty; agreement is low only where
the large model would cut, which is what the segment check costs. On the shipped pair both select
the same 16 cues; on a pair fine-tuned with free wordings the margin keeps 4 of them, agreement 14.

Besides the paper's candidates, the words that open sentences in the large model's traces at
least `min_occurrences` times are candidates too (ours; `discover=False` keeps the paper's list):
a pair's own easy openings ("Its last two digits are ...") then qualify by the same statistic,
and the segment check (`check.py`) guards what they hand over.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

from ..decoding.prompt import encode_prompt
from ..decoding.sequence import Sequence
from ..decoding.stopping import StopConfig
from ..errors import RelaykitError
from ..models.loading import Model, check_same_tokenizer
from ..runtime.runners import BatchedRunner
from ..runtime.session import Session
from ..text import CANDIDATE_CUES, THINK_END, cue_pattern, cue_regions

STATISTICS = ("margin", "agreement")
# a capitalised word opening a sentence or a line (or the thinking), with its comma if it has one
SENTENCE_OPENING = re.compile(r"(?:^|[.!?]\s+|\n|>)[ \t]*([A-Z][A-Za-z]*)(,?)(?=\W)")


def calibrate(
    large: Model,
    small: Model,
    problems: list,
    cues: list[str] | None = None,
    threshold: float = 0.0,
    min_occurrences: int = 5,
    max_new_tokens: int = 512,
    batch_size: int = 8,
    discover: bool = True,
    statistic: str | None = None,
) -> dict:
    """Cue statistics for `large`'s traces on `problems` as read by `small` (see `cue_statistics`),
    scored by `statistic` ("margin" or "agreement", see above; None: agreement, or margin when the
    large model is an endpoint, whose logits are out of reach).

    `problems`: prompt strings, token-id lists, evaluation problems (`.prompt`) or toy problems
    (`.question`). `cues`: the candidates (default: `relaykit.text.CANDIDATE_CUES`, plus the
    traces' frequent sentence openings with `discover`).
    """
    from ..strategies.single import LargeOnly

    check_same_tokenizer(large, small)
    statistic = statistic or ("agreement" if large.in_process else "margin")
    if statistic not in STATISTICS:
        raise RelaykitError(f"unknown cue statistic {statistic!r}; choose from {', '.join(STATISTICS)}")
    if not problems:
        raise RelaykitError("calibration needs at least one problem")
    prompts = [_prompt_ids(large.tokenizer, p) for p in problems]
    session = Session({"large": large, "small": small})
    writer = LargeOnly(session.models, stop=StopConfig(max_new_tokens=max_new_tokens))
    traces = []
    for start in range(0, len(prompts), batch_size):
        traces += [r.token_ids for r in session.generate(writer, prompts[start : start + batch_size])]
    reader = session.runners["small"]
    judge = session.runners["large"] if statistic == "agreement" else None
    scored = []
    for prompt, trace in zip(prompts, traces):
        if trace:
            scored.append((token_pieces(small.tokenizer, prompt, trace), token_scores(reader, judge, prompt, trace)))
    candidates = list(cues) if cues is not None else list(CANDIDATE_CUES)
    discovered = (sentence_openings(["".join(pieces) for pieces, _ in scored], min_occurrences)
                  if cues is None and discover else [])
    result = cue_statistics(scored, list(dict.fromkeys(candidates + discovered)), threshold, min_occurrences)
    result.update(statistic=statistic, large=large.source, small=small.source, problems=len(prompts),
                  max_new_tokens=max_new_tokens, discovered=[c for c in discovered if c not in candidates])
    return result


def sentence_openings(texts: list[str], min_occurrences: int) -> list[str]:
    """Words opening a sentence of the thinking at least `min_occurrences` times in `texts`, each
    with and without a comma (as the paper's candidates), most frequent first."""
    counts = Counter(match.group(1) for text in texts for match in SENTENCE_OPENING.finditer(text.split(THINK_END)[0]))
    words = [word for word, n in counts.most_common() if n >= min_occurrences]
    return [cue for word in words for cue in (word, word + ",")]


def _prompt_ids(tokenizer, problem) -> list[int]:
    if isinstance(problem, list):
        return problem
    if isinstance(problem, str):
        return encode_prompt(tokenizer, problem)
    if hasattr(problem, "reference"):  # an evaluation problem: the prompt text the harness would use
        from ..evals.harness import prompt_text

        return encode_prompt(tokenizer, prompt_text(problem))
    return encode_prompt(tokenizer, problem.question)


def token_scores(small: BatchedRunner, large: BatchedRunner | None, prompt: list[int], trace: list[int]) -> list[float]:
    """Teacher forcing, one forward a model: before each trace token, the small model's
    p(top1) - p(top2) (`large` None: the paper's margin), or p_large(small's top) / p_large(large's top)."""
    logits = _read(small, prompt + trace, len(trace) + 1)[:-1]
    if large is None:
        top = logits.softmax(-1).topk(2, dim=-1).values
        return (top[:, 0] - top[:, 1]).tolist()
    judged = _read(large, prompt + trace, len(trace) + 1)[:-1]
    chosen = judged.gather(-1, logits.argmax(-1, keepdim=True))[:, 0]
    return (chosen - judged.max(-1).values).exp().tolist()


def _read(runner: BatchedRunner, tokens: list[int], k: int):
    """Logits [k, V] after the last k tokens of a sequence the runner reads once and forgets."""
    sequence = Sequence(tokens)
    logits = runner.score([sequence], k)[0].float()
    runner.release(sequence)
    return logits


def token_pieces(tokenizer, prompt: list[int], trace: list[int], context: int = 4) -> list[str]:
    """Each trace token's text, decoded after a few tokens of context (so that spaces and
    multi-token characters come out as in the whole text)."""
    tokens = prompt[-context:] + trace
    pieces = []
    for i in range(len(trace)):
        window = tokens[i : i + context + 1]
        before = tokenizer.decode(window[:-1], skip_special_tokens=False)
        text = tokenizer.decode(window, skip_special_tokens=False)
        pieces.append(text[len(before) :] if text.startswith(before)
                      else tokenizer.decode(window[-1:], skip_special_tokens=False))
    return pieces


def cue_statistics(traces: list[tuple[list[str], list[float]]], cues: list[str], threshold: float = 0.0,
                   min_occurrences: int = 5) -> dict:
    """Per cue: regions (occurrences), their tokens, mean score inside them (`mean_margin`, whatever
    the statistic), mean score on every other thinking token, delta = inside - elsewhere and its
    standard error (regions as clusters inside, tokens outside). `traces`: (token texts, per-token
    scores) pairs. Selected: delta > threshold and occurrences >= min_occurrences, best first."""
    thinking = [_thinking_part(pieces, margins) for pieces, margins in traces]
    all_margins = [m for _, _, margins in thinking for m in margins]
    stats = {}
    for cue in dict.fromkeys(cues):
        pattern = cue_pattern([cue])
        regions: list[list[float]] = []
        outside: list[float] = []
        for text, starts, margins in thinking:
            inside = [False] * len(margins)
            for _, begin, end in cue_regions(text, pattern):
                tokens = [i for i, s in enumerate(starts) if begin <= s < end]
                if tokens:
                    regions.append([margins[i] for i in tokens])
                    for i in tokens:
                        inside[i] = True
            outside += [m for m, flag in zip(margins, inside) if not flag]
        stats[cue] = _cue_entry(regions, outside)
    selected = [c for c, s in stats.items()
                if s["occurrences"] >= min_occurrences and s["delta"] is not None and s["delta"] > threshold]
    selected.sort(key=lambda c: -stats[c]["delta"])
    return {
        "selected": selected,
        "threshold": threshold,
        "min_occurrences": min_occurrences,
        "traces": len(traces),
        "thinking_tokens": len(all_margins),
        "mean_margin": sum(all_margins) / len(all_margins) if all_margins else None,
        "cues": stats,
    }


def _thinking_part(pieces: list[str], margins: list[float]) -> tuple[str, list[int], list[float]]:
    """The text before `</think>`, each kept token's start offset, and the kept margins."""
    starts, offset = [], 0
    for piece in pieces:
        starts.append(offset)
        offset += len(piece)
    text = "".join(pieces)
    end = text.find(THINK_END)
    keep = len(pieces) if end < 0 else sum(1 for s in starts if s < end)
    return (text if end < 0 else text[:end]), starts[:keep], margins[:keep]


def _cue_entry(regions: list[list[float]], outside: list[float]) -> dict:
    tokens = sum(len(r) for r in regions)
    if not tokens or not outside:
        return {"occurrences": len(regions), "tokens": tokens, "mean_margin": None, "mean_margin_elsewhere": None,
                "delta": None, "stderr": None}
    inside_mean = sum(sum(r) for r in regions) / tokens
    outside_mean = sum(outside) / len(outside)
    # cluster-robust variance of a ratio mean (tokens of one region are not independent)
    inside_var = sum((sum(r) - len(r) * inside_mean) ** 2 for r in regions) / tokens**2
    outside_var = sum((m - outside_mean) ** 2 for m in outside) / max(len(outside) - 1, 1) / len(outside)
    return {
        "occurrences": len(regions),
        "tokens": tokens,
        "mean_margin": inside_mean,
        "mean_margin_elsewhere": outside_mean,
        "delta": inside_mean - outside_mean,
        "stderr": math.sqrt(inside_var + outside_var),
    }


def write_calibration(result: dict, out_path: str | Path) -> dict[str, Path]:
    """Write the result as JSON (`out_path`, e.g. cues.json; RelayGen's `cues` option reads its
    "selected" list and its "check" threshold) and a plot of delta per cue with +-1 standard error next to it (.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    json_path = Path(out_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    plot_path = json_path.with_suffix(".png")
    seen = sorted(((c, s) for c, s in result["cues"].items() if s["delta"] is not None),
                  key=lambda item: item[1]["delta"])
    figure, axes = plt.subplots(figsize=(7, 1.5 + 0.25 * max(len(seen), 1)))
    if seen:
        names = [f"{c!r} (n={s['occurrences']})" for c, s in seen]
        colours = ["tab:green" if c in result["selected"] else "tab:gray" for c, _ in seen]
        axes.barh(names, [s["delta"] for _, s in seen], xerr=[s["stderr"] for _, s in seen], color=colours, capsize=2)
    axes.axvline(result["threshold"], color="black", linewidth=0.8, linestyle="--")
    score = ("large model's agreement with the small one" if result.get("statistic") == "agreement"
             else "small-model margin")
    axes.set_xlabel(f"{score} after the cue minus elsewhere (+-1 s.e.; green: selected)")
    axes.set_title("RelayGen cue calibration")
    figure.tight_layout()
    figure.savefig(plot_path, dpi=120)
    plt.close(figure)
    return {"json": json_path, "plot": plot_path}


def summary(result: dict) -> str:
    """A short text table of the cues that occurred, best first, and the selection."""
    rows = sorted(((c, s) for c, s in result["cues"].items() if s["occurrences"]),
                  key=lambda item: -(item[1]["delta"] or -9))
    lines = [f"{'cue':<16}{'n':>6}{result.get('statistic', 'margin'):>10}{'delta':>9}{'s.e.':>8}"]
    for cue, s in rows:
        if s["delta"] is not None:
            lines.append(f"{cue!r:<16}{s['occurrences']:>6}{s['mean_margin']:>10.3f}{s['delta']:>9.3f}{s['stderr']:>8.3f}")
    lines.append(f"selected ({len(result['selected'])}): {', '.join(map(repr, result['selected'])) or 'none'}")
    if "check" in result:
        sweep = ", ".join(f"{t}: {e['accuracy']:.1%}" for t, e in result["check_sweep"].items())
        lines.append(f"check threshold: {result['check']:g} logits (accuracy by threshold: {sweep})")
    return "\n".join(lines)


def run_calibrate_command(models: dict[str, Model], problems: list, out: str | Path, check: bool = True,
                          **options) -> tuple[dict, dict[str, Path]]:
    """What `relaykit calibrate` does: `calibrate(models["large"], models["small"], problems, **options)`,
    then, with `check`, the segment check's threshold for the selected cues (`calibrate_check`),
    then `write_calibration` to `out`. Returns the result and the written paths."""
    from .check import calibrate_check

    result = calibrate(models["large"], models["small"], problems, **options)
    if check:
        result.update(calibrate_check(models, problems, result["selected"], max_new_tokens=result["max_new_tokens"],
                                      batch_size=options.get("batch_size", 8)))
    return result, write_calibration(result, out)
