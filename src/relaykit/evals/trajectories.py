"""Trajectories coloured by writer: a self-contained HTML page and rich text for a terminal."""

from __future__ import annotations

import html
import re

from rich.text import Text

_HTML_COLOURS = {"small": "#cfe3ff", "large": "#ffd6a5", "prompt": "#e9e9e9"}
_HTML_PALETTE = ("#caffbf", "#ffc6ff", "#fdffb6", "#9bf6ff", "#ffadad", "#bdb2ff")
_RICH_STYLES = {"small": "cyan", "large": "bold magenta", "prompt": "dim"}
_RICH_PALETTE = ("green", "yellow", "blue", "red", "bright_cyan", "bright_magenta")


def trajectories_html(results: dict, max_problems: int = 5) -> str:
    """A self-contained HTML page showing, per strategy, the first `max_problems` outputs with
    each segment in a `<span class="writer-NAME" data-model="NAME">` coloured by its writer."""
    writers = _writers(results)
    colours = _assign(writers, _HTML_COLOURS, _HTML_PALETTE)
    css = "\n".join(f".{_css_class(w)} {{ background: {colours[w]}; }}" for w in writers)
    legend = " ".join(_span(w, w) for w in writers)
    body = []
    for name, s in results["strategies"].items():
        body.append(f"<h2>{html.escape(name)}</h2>")
        for problem in s["problems"][:max_problems]:
            verdict = "correct" if problem.get("correct") else "wrong"
            body.append(
                f'<div class="problem {verdict}"><h3>{html.escape(str(problem["id"]))}: '
                f"{verdict}, predicted {html.escape(str(problem.get('prediction')))}, "
                f"reference {html.escape(str(problem.get('reference')))}</h3>"
            )
            segments = problem.get("segments") or [[problem.get("text", ""), "unknown"]]
            body.append("<pre>" + "".join(_span(text, writer) for text, writer in segments) + "</pre></div>")
    title = html.escape(f"relaykit trajectories: {results.get('dataset', '')}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
pre {{ white-space: pre-wrap; font-family: monospace; line-height: 1.5; }}
.problem {{ border-left: 4px solid #bbb; padding-left: 1em; margin-bottom: 1.5em; }}
.problem.correct {{ border-color: #3a3; }} .problem.wrong {{ border-color: #c33; }}
h3 {{ font-size: 1em; font-weight: normal; }}
.legend span {{ padding: 0.2em 0.6em; margin-right: 0.5em; }}
{css}
</style></head>
<body><h1>{title}</h1>
<p class="legend">Written by: {legend}</p>
{chr(10).join(body)}
</body></html>
"""


def _writers(results: dict) -> list[str]:
    """Every writer in the segments, in order of first appearance."""
    seen: dict[str, None] = {}
    for s in results["strategies"].values():
        for problem in s["problems"]:
            for _, writer in problem.get("segments") or [["", "unknown"]]:
                seen.setdefault(writer, None)
    return list(seen)


def _assign(writers: list[str], fixed: dict[str, str], palette: tuple[str, ...]) -> dict[str, str]:
    others = [w for w in writers if w not in fixed]
    return {w: fixed.get(w) or palette[others.index(w) % len(palette)] for w in writers}


def _css_class(writer: str) -> str:
    return "writer-" + re.sub(r"[^A-Za-z0-9_-]", "-", writer)


def _span(text: str, writer: str) -> str:
    return (
        f'<span class="{_css_class(writer)}" data-model="{html.escape(writer, quote=True)}">'
        f"{html.escape(text)}</span>"
    )


def rich_trajectory(segments) -> Text:
    """`segments` ([text, writer] runs) as rich Text coloured by writer."""
    writers = list(dict.fromkeys(writer for _, writer in segments))
    styles = _assign(writers, _RICH_STYLES, _RICH_PALETTE)
    text = Text()
    for chunk, writer in segments:
        text.append(chunk, style=styles[writer])
    return text
