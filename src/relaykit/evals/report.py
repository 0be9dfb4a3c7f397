"""Reports of an evaluation run: tables, an accuracy-versus-cost plot, and the coloured trajectories'
page (`trajectories`).

The input is the harness's results dict::

    {"dataset": str, "n_problems": int,
     "strategies": {NAME: {"accuracy", "large_token_share", "switches_per_problem", "flops",
                           "wall_seconds", "tokens_per_second", "speedup_vs_large", "samples_per_problem",
                           "outcome_efficiency", "process_efficiency", "length_stops", "cut_by_length",
                           "max_new_tokens", "settings", "endpoints", "acceptance", "problems": [...]}}}

where each problem has id, prediction, reference, correct, text, segments ([text, writer]
runs) and usage.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rich import box
from rich.table import Table
from rich.text import Text

from ..options import options_text
from .harness import LENGTH_FLAG
from .trajectories import trajectories_html

_MARKER_AREA = 60  # of a plotted point, in points squared
_NAME_WIDTH = 21  # the strategy column's width in an 80-column terminal
_COLUMNS = ("strategy", "accuracy", "large-token share", "switches/problem", "FLOPs", "wall s", "tokens/s",
            "speed-up vs large", "samples/problem", "outcome efficiency", "process efficiency", "stopped at length")
CUT_NOTE = f"! answers stopped at the length limit on over {LENGTH_FLAG:.0%} of problems: raise --max-new-tokens"


def markdown_table(results: dict) -> str:
    """A Markdown table with one row per strategy, and a note under it when a strategy's answers
    were cut by the token budget (`cut_by_length`)."""
    table = _markdown([_COLUMNS, *(_row(results, name) for name in results["strategies"])])
    notes = ([CUT_NOTE] if _any_cut(results) else []) + [f"- {line}" for line in settings_lines(results)]
    return table + "".join(f"\n{note}" for note in notes) + ("\n" if notes else "")


def settings_lines(results: dict) -> list[str]:
    """One line per strategy that ran tuned settings: which, and from where."""
    lines = []
    for name, s in results["strategies"].items():
        settings = s.get("settings") or {}
        if settings.get("source", "").startswith("tuned"):
            lines.append(f"{name}: {options_text(settings['options'])} ({settings['source']})")
    return lines


def _any_cut(results: dict) -> bool:
    return any(s.get("cut_by_length") for s in results["strategies"].values())


def _cut_mark(s: dict) -> str:
    return " !" if s.get("cut_by_length") else ""


def _markdown(rows: list) -> str:
    """Rows (the first is the header) as a Markdown table, figures right-aligned."""
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join(["---"] + ["---:"] * (len(rows[0]) - 1)) + "|")
    return "\n".join(lines) + "\n"


def group_rows(results: dict, group: str) -> list[tuple[str, ...]] | None:
    """Header and one row per strategy: accuracy per `group` ("domain" or "level") and their mean
    (None when the problems have none)."""
    entries = results["strategies"]
    key = f"by_{group}"
    names = sorted({g for s in entries.values() for g in s.get(key, {})})
    if not names:
        return None
    rows = [("strategy", *names, f"mean over {group}s")]
    for name, s in entries.items():
        accuracies = [s[key][g]["accuracy"] if g in s[key] else None for g in names]
        known = [a for a in accuracies if a is not None]
        rows.append((name, *("-" if a is None else f"{100 * a:.1f}%" for a in accuracies),
                     f"{100 * sum(known) / len(known):.1f}%" if known else "-"))
    return rows


def groups_markdown(results: dict) -> str:
    text = ""
    for group in ("domain", "level"):
        rows = group_rows(results, group)
        if rows is None:
            continue
        text += f"\nAccuracy per {group}:\n\n" + _markdown(rows)
    return text


def endpoints_markdown(results: dict) -> str:
    """Per strategy and model behind an endpoint, per problem: requests, tokens sent, positions
    scored, kilobytes and seconds (in-process models have FLOPs in the table above instead)."""
    rows = [(name, role, f"{e['requests']:.1f}", f"{e['tokens_sent']:.0f}", f"{e['tokens_scored']:.0f}",
             f"{e['kilobytes']:.1f}", f"{e['seconds']:.2f}")
            for name, s in results["strategies"].items() for role, e in s.get("endpoints", {}).items()]
    if not rows:
        return ""
    header = ("strategy", "model", "requests", "tokens sent", "positions scored", "kB", "seconds")
    return "\nModels behind endpoints, per problem:\n\n" + _markdown([header, *rows])


def acceptance_markdown(results: dict) -> str:
    """Per strategy and model that checked drafts: checks, drafts, the mean accepted per check, the
    acceptance rate and the accepted lengths (checks that kept 0, 1, 2, ... drafts)."""
    rows = [(name, role, str(a["checks"]), str(a["drafted"]), f"{a['mean_accepted']:.2f}",
             "-" if a["acceptance_rate"] is None else f"{a['acceptance_rate']:.1%}",
             " ".join(f"{length}:{count}" for length, count in a["accepted_lengths"].items()))
            for name, s in results["strategies"].items() for role, a in s.get("acceptance", {}).items()]
    if not rows:
        return ""
    header = ("strategy", "model", "checks", "drafts", "accepted per check", "acceptance",
              "accepted lengths (length:checks)")
    return "\nDrafts checked:\n\n" + _markdown([header, *rows])


def curves_markdown(results: dict) -> str:
    """One table per curve (variants that differ only in n): accuracy against FLOPs and tokens."""
    baseline = _large_baseline(results)
    text = ""
    for family, points in results.get("curves", {}).items():
        against = f" vs {baseline}" if baseline else ""
        lines = [f"| n | accuracy | FLOPs{against} | tokens generated{against} | samples/problem |",
                 "|---:|---:|---:|---:|---:|"]
        for p in points:
            flops, tokens = (_relative(results, p["strategy"], key) for key in ("flops", "tokens_generated"))
            lines.append(f"| {p['n']} | {100 * p['accuracy']:.1f}% | " + " | ".join(
                _scientific(p[key]) if value is None else f"{value:.2f}x"
                for key, value in (("flops", flops), ("tokens_generated", tokens)))
                + f" | {p['samples_per_problem']:.1f} |")
        text += f"\nCurve of {family}:\n\n" + "\n".join(lines) + "\n"
    return text


def rich_group_tables(results: dict) -> list[Table]:
    """Accuracy per domain and per level, for a terminal."""
    tables = []
    for group in ("domain", "level"):
        rows = group_rows(results, group)
        if rows is None:
            continue
        table = Table(title=f"accuracy per {group}", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                      collapse_padding=True)
        table.add_column(rows[0][0], overflow="fold", max_width=_NAME_WIDTH)
        for header in rows[0][1:]:
            table.add_column(header.replace(f"mean over {group}s", "mean"), justify="right", no_wrap=True)
        for row in rows[1:]:
            table.add_row(_wrappable(row[0]), *row[1:])
        tables.append(table)
    return tables


def rich_table(results: dict) -> Table:
    """The comparison for a terminal, readable at 80 columns: short headers, whole figures,
    long strategy names wrapped, FLOPs and speed-ups relative to the large baseline when there is
    one (else absolute FLOPs and no speed-up), and a one-line legend."""
    relative = all(_relative(results, name, "flops") is not None for name in results["strategies"])
    headers = (["strategy", "acc", "large %", "switch/pb", "FLOPs", "wall s", "tok/s"]
               + (["speed-up"] if relative else []))
    legend = "large %: tokens by large · switch/pb: switches per problem" + (" · x: vs large" if relative else "")
    legend += f"\n{CUT_NOTE}" if _any_cut(results) else ""
    title = f"{results.get('dataset', '')} ({results.get('n_problems', '?')} problems)"
    caption = Text(legend, no_wrap=True, overflow="ignore")  # whole lines, even under a narrow table
    table = Table(title=title, caption=caption, caption_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, collapse_padding=True)
    table.add_column(headers[0], overflow="fold", max_width=_NAME_WIDTH)
    for header in headers[1:]:
        table.add_column(header, justify="right", no_wrap=True)
    for name in results["strategies"]:
        table.add_row(_wrappable(name), *_terminal_row(results, name, relative))
    return table


def _wrappable(name: str) -> Text:
    """A long variant label broken where it reads well: the options on lines of their own, whole
    options per line where they fit in `_NAME_WIDTH`, else broken after "=" ("uncertainty" /
    "[margin_threshold=" / "0.4]"). Text, so brackets are not read as markup."""
    if len(name) <= _NAME_WIDTH:
        return Text(name)
    base, bracket, options = name.partition("[")
    pieces = []
    for option in re.split(r"(?<= )", bracket + options):
        pieces += [option] if len(option.rstrip()) <= _NAME_WIDTH else re.split(r"(?<==)", option)
    lines, line = [base], ""
    for piece in pieces:
        if line and len(line) + len(piece.rstrip()) > _NAME_WIDTH:
            lines.append(line.rstrip())
            line = ""
        line += piece
    return Text("\n".join([*lines, line.rstrip()] if line else lines))


def _terminal_row(results: dict, name: str, relative: bool) -> list[str]:
    s = results["strategies"][name]
    row = [
        f"{100 * s['accuracy']:.1f}%{_cut_mark(s)}",
        f"{100 * s['large_token_share']:.1f}%",
        f"{s.get('switches_per_problem', 0.0):.1f}",
        f"{_relative(results, name, 'flops'):.2f}x" if relative else _scientific(s["flops"]),
        f"{s['wall_seconds']:.1f}",
        f"{s['tokens_per_second']:.0f}",
    ]
    if relative:
        speedup = s.get("speedup_vs_large")
        row.append("-" if speedup is None else f"{speedup:.2f}x")
    return row


def _scientific(value: float) -> str:
    """8.00e8 rather than 8.00e+08."""
    return f"{value:.2e}".replace("e+0", "e").replace("e+", "e")


def _row(results: dict, name: str) -> tuple[str, ...]:
    s = results["strategies"][name]
    flops = _scientific(s["flops"])
    relative = _relative(results, name, "flops")
    if relative is not None:
        flops += f" ({relative:.2f}x)"
    speedup = s.get("speedup_vs_large")
    return (
        name,
        f"{100 * s['accuracy']:.1f}%",
        f"{100 * s['large_token_share']:.1f}%",
        f"{s.get('switches_per_problem', 0.0):.1f}",
        flops,
        f"{s['wall_seconds']:.1f}",
        f"{s['tokens_per_second']:.1f}",
        "-" if speedup is None else f"{speedup:.2f}x",
        f"{s.get('samples_per_problem', 1.0):.1f}",
        *("-" if s.get(key) is None else f"{s[key]:.2f}" for key in ("outcome_efficiency", "process_efficiency")),
        f"{100 * s.get('length_stops', 0.0):.1f}%{_cut_mark(s)}",
    )


def _large_baseline(results: dict) -> str | None:
    """The strategy that runs the large model alone: the one named "large", else "large-..."."""
    names = list(results["strategies"])
    exact = [n for n in names if n.lower() == "large"]
    prefixed = [n for n in names if re.match(r"large\b", n.lower())]
    return (exact or prefixed or [None])[0]


def _relative(results: dict, name: str, key: str) -> float | None:
    """`key` of strategy `name` divided by the large baseline's, when there is one."""
    baseline = _large_baseline(results)
    if baseline is None or not results["strategies"][baseline][key]:
        return None
    return results["strategies"][name][key] / results["strategies"][baseline][key]


def write_report(results: dict, out_dir: str | Path, max_problems: int = 5) -> dict[str, Path]:
    """Write results.json, results.md, plot.png and trajectories.html into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "markdown": out / "results.md",
        "plot": out / "plot.png",
        "html": out / "trajectories.html",
    }
    paths["json"].write_text(json.dumps(results, indent=2), encoding="utf-8")
    heading = f"# {results.get('dataset', 'results')} ({results.get('n_problems', '?')} problems)\n\n"
    paths["markdown"].write_text(
        heading + markdown_table(results) + groups_markdown(results) + endpoints_markdown(results)
        + acceptance_markdown(results) + curves_markdown(results), encoding="utf-8")
    _plot(results, paths["plot"])
    paths["html"].write_text(trajectories_html(results, max_problems), encoding="utf-8")
    return paths


def _plot(results: dict, path: Path) -> None:
    """Accuracy against FLOPs, tokens and wall time, relative to the large model when the results
    include it; one labelled point per strategy, labels moved off each other and the points;
    variants that differ only in n joined by a line (the report's `curves`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(14, 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3, sharey=True)
    baseline = _large_baseline(results)
    # a curve's points are labelled by their n, its last point by its whole name
    labels = {p["strategy"]: f"n={p['n']}" for points in results.get("curves", {}).values() for p in points[:-1]}
    for ax, key, label in ((axes[0], "flops", "FLOPs"), (axes[1], "tokens_generated", "tokens generated"),
                           (axes[2], "wall_seconds", "wall time")):
        relative = all(_relative(results, name, key) is not None for name in results["strategies"])
        where = {}
        for i, (name, s) in enumerate(results["strategies"].items()):
            x = _relative(results, name, key) if relative else s[key]
            y = 100 * s["accuracy"]
            where[name] = (x, y)
            ax.scatter([x], [y], s=_MARKER_AREA, color=f"C{i % 10}", zorder=3)
            ax.annotate(labels.get(name, name), (x, y), textcoords="offset points", xytext=(6, 5), fontsize=9,
                        color=f"C{i % 10}")
        for points in results.get("curves", {}).values():
            xs, ys = zip(*(where[p["strategy"]] for p in points))
            ax.plot(xs, ys, color="grey", linewidth=1, zorder=2)
        ax.set_xlabel(f"{label} relative to {baseline}" if relative else label)
        ax.margins(x=0.15, y=0.1)
        if relative:
            ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].set_ylim(-5, 105)
    figure.suptitle(f"Accuracy vs cost: {results.get('dataset', '')}")
    figure.tight_layout()
    _separate_labels(figure, axes)
    figure.savefig(path)


def _separate_labels(figure, axes) -> None:
    """Move each axes' point labels up or down (in the final layout) where they would overlap
    one another or a point."""
    renderer = figure.canvas.get_renderer()
    radius = _MARKER_AREA**0.5 / 2 * figure.dpi / 72  # pixels
    for ax in axes:
        frame = ax.get_window_extent(renderer)
        points = ax.transData.transform([text.xy for text in ax.texts])
        markers = [(x - radius, y - radius, x + radius, y + radius) for x, y in points]
        boxes = [tuple(text.get_window_extent(renderer).extents) for text in ax.texts]
        for text, shift in zip(ax.texts, stack_labels(boxes, (frame.y0 + frame.y1) / 2, obstacles=markers)):
            text.xyann = (text.xyann[0], text.xyann[1] + shift * 72 / figure.dpi)  # pixels to points


def stack_labels(boxes: list[tuple[float, float, float, float]], middle: float, gap: float = 1.0,
                 obstacles: list[tuple[float, float, float, float]] = ()) -> list[float]:
    """Vertical shifts that keep label boxes (x0, y0, x1, y1) off each other and off `obstacles`.
    Boxes are placed in order; one that meets a placed box or an obstacle moves past it, down when
    it lies above `middle` (towards the plot's centre), else up."""
    placed = list(obstacles)
    shifts = []
    for x0, y0, x1, y1 in boxes:
        down, shift = (y0 + y1) / 2 > middle, 0.0
        while hit := next((p for p in placed if _overlap(p, (x0, y0 + shift, x1, y1 + shift))), None):
            shift = hit[1] - gap - y1 if down else hit[3] + gap - y0
        placed.append((x0, y0 + shift, x1, y1 + shift))
        shifts.append(shift)
    return shifts


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
