"""How safebench writes numbers and tables: one place, shared by the report and ``reproduce``.

Numbers get a precision that suits their size (:func:`num`), estimates their interval
(:func:`ci`, :func:`with_ci`), rates a percentage (:func:`pct_ci`). A table of such
strings (a "display" frame) becomes Markdown (:func:`md_table`), HTML (:func:`html_table`)
or LaTeX (:func:`latex_table`); ``**bold**`` and ```code``` spans in cells and captions are
carried over into HTML and LaTeX markup.
"""

from __future__ import annotations

import html
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = [
    "ci",
    "flag",
    "html_table",
    "inline_html",
    "inline_latex",
    "latex_table",
    "md_cell",
    "md_table",
    "num",
    "pct_ci",
    "short_env_ids",
    "with_ci",
]


def num(x: Any) -> str:
    """A number with precision that suits its size; '–' for missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return "–"
    value = float(x)
    if value != 0 and abs(value) < 0.01:
        return f"{value:.2e}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ci(point: Any, low: Any, high: Any) -> str:
    """``point [low, high]``."""
    return f"{num(point)} [{num(low)}, {num(high)}]"


def with_ci(value: float, low: float, high: float, spread: float = math.nan) -> str:
    """Like :func:`ci`, but each part only where present, and an optional ``± spread``."""
    text = num(value) if not math.isnan(value) else ""
    if not math.isnan(low):
        text = f"{text} [{num(low)}, {num(high)}]".strip()
    if not math.isnan(spread):
        text += f" ± {num(spread)}"
    return text or "–"


def pct_ci(rate: Any, low: Any, high: Any) -> str:
    """A rate in whole percent with its interval: ``40% [12, 74]``."""
    if rate is None or (isinstance(rate, float) and math.isnan(rate)):
        return "–"
    return f"{100 * rate:.0f}% [{100 * low:.0f}, {100 * high:.0f}]"


def flag(value: Any) -> str:
    """A nullable boolean as ``yes`` / ``no`` / ``–``."""
    return "–" if value is None or pd.isna(value) else ("yes" if value else "no")


_ENV_AFFIXES = re.compile(r"^(?:safebench/)?(?:Safety(?=[A-Z]))?(.+?)(?:-v\d+)?$")


def short_env_ids(envs: Sequence[str]) -> dict[str, str]:
    """Env ids without ``safebench/``, ``Safety`` and ``-vN`` where that keeps them distinct.

    ``SafetyPointGoal1-v0`` -> ``PointGoal1``, ``SafetyPointGoal1-v0 @ d=15`` (a task of a
    cost-limit sweep) -> ``PointGoal1 @ d=15``; ids that would collide stay whole.
    """

    def shorten(env: str) -> str:
        env_id, at, limit = env.partition(" @ ")
        return _ENV_AFFIXES.sub(r"\1", env_id) + at + limit

    short = {env: shorten(env) for env in envs}
    counts = Counter(short.values())
    return {env: name if counts[name] == 1 else env for env, name in short.items()}


_INLINE = re.compile(r"(\*\*[^*]+\*\*|`[^`]+`)")


def inline_html(text: str) -> str:
    """Markdown's **bold** and `code` spans as HTML; everything else escaped."""
    parts = []
    for piece in _INLINE.split(text):
        if piece.startswith("**") and piece.endswith("**") and len(piece) > 4:
            parts.append(f"<strong>{html.escape(piece[2:-2])}</strong>")
        elif piece.startswith("`") and piece.endswith("`") and len(piece) > 2:
            parts.append(f"<code>{html.escape(piece[1:-1])}</code>")
        else:
            parts.append(html.escape(piece))
    return "".join(parts)


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "–": "--",
    "−": "$-$",
    "≤": r"$\le$",
    "±": r"$\pm$",
    "✓": r"\checkmark",
}


def inline_latex(text: str) -> str:
    """LaTeX-escaped text with **bold** and `code` spans as ``\\textbf`` / ``\\texttt``."""

    def escape(s: str) -> str:
        return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in s)

    parts = []
    for piece in _INLINE.split(text):
        if piece.startswith("**") and piece.endswith("**") and len(piece) > 4:
            parts.append(rf"\textbf{{{escape(piece[2:-2])}}}")
        elif piece.startswith("`") and piece.endswith("`") and len(piece) > 2:
            parts.append(rf"\texttt{{{escape(piece[1:-1])}}}")
        else:
            parts.append(escape(piece))
    return "".join(parts)


def md_cell(value: Any) -> str:
    """A value as one Markdown table cell (pipes escaped, no line breaks)."""
    return str(value).replace("|", r"\|").replace("\n", " ")


def md_table(display: pd.DataFrame) -> str:
    """A display frame as a Markdown (GitHub) table."""
    header = "| " + " | ".join(md_cell(c) for c in display.columns) + " |"
    rule = "|" + "|".join("---" for _ in display.columns) + "|"
    rows = ["| " + " | ".join(md_cell(v) for v in row) + " |" for row in display.to_numpy()]
    return "\n".join([header, rule, *rows])


_BRACKETS = re.compile(r"\[[^\[\]]*\]")


def _keep_intervals_whole(text: str) -> str:
    """Non-breaking spaces inside ``[low, high]``: a cell wraps before an interval, not in it."""
    return _BRACKETS.sub(lambda m: m.group(0).replace(" ", "\u00a0"), text)


def html_table(display: pd.DataFrame) -> str:
    """A display frame as an HTML table (cells through :func:`inline_html`)."""
    head = "".join(f"<th>{inline_html(str(c))}</th>" for c in display.columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{inline_html(_keep_intervals_whole(str(v)))}</td>" for v in row)
        + "</tr>"
        for row in display.to_numpy()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def latex_table(display: pd.DataFrame, caption: str) -> str:
    """A display frame as a booktabs ``table`` environment with ``caption``."""
    align = "l" * min(2, display.shape[1]) + "r" * max(0, display.shape[1] - 2)
    lines = [
        "% generated by safebench report; needs \\usepackage{booktabs} (and amssymb for ✓)",
        "\\begin{table}[ht]",
        "\\centering",
        f"\\caption{{{inline_latex(caption)}}}",
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        " & ".join(inline_latex(str(c)) for c in display.columns) + r" \\",
        "\\midrule",
        *(" & ".join(inline_latex(str(v)) for v in row) + r" \\" for row in display.to_numpy()),
        "\\bottomrule",
        "\\end{tabular}",
        "\\end{table}",
        "",
    ]
    return "\n".join(lines)
