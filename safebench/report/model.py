"""The values a report section returns: text, tables and figures, nothing written yet.

A :class:`Section` is a heading and an ordered tuple of blocks — :class:`Paragraph`,
:class:`Items`, :class:`Table` (full-precision data for the CSV, a formatted display for
Markdown / LaTeX / the page) and :class:`Plot` (a matplotlib figure) — plus the notes it
adds to the report's "Notes". Sections are built by the pure functions of the section
modules (``verdict``, ``protocol``, ``aggregate``, ...) and written by
:mod:`safebench.report.render`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure

__all__ = ["Block", "Items", "Links", "Paragraph", "Plot", "Section", "Table"]


@dataclass(frozen=True)
class Paragraph:
    """One paragraph; ``**bold**`` and ```code``` spans are kept in every output."""

    text: str


@dataclass(frozen=True)
class Items:
    """A bulleted list (nothing is shown when it is empty)."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Links:
    """A bulleted list of links ``(text, href)`` to files the report does not hold (videos),
    ``href`` relative to the report folder: linked from the page, never embedded."""

    links: tuple[tuple[str, str], ...]


@dataclass(frozen=True, eq=False)
class Table:
    """A table named ``name``: ``tables/<name>.csv`` holds ``data`` at full precision.

    With a ``display`` frame (strings) it is also written as ``tables/<name>.md`` and
    ``.tex`` under ``caption`` and shown on the page; without one it is a data file only
    (``tables/runs.csv``).
    """

    name: str
    data: pd.DataFrame
    display: pd.DataFrame | None = None
    caption: str = ""


@dataclass(frozen=True, eq=False)
class Plot:
    """A finished (laid-out) figure, written as ``figures/<name>.<format>``."""

    name: str
    figure: Figure
    caption: str


Block = Paragraph | Items | Links | Table | Plot


@dataclass(frozen=True, eq=False)
class Section:
    """A heading of ``level`` (1 = the page title, 2 = a section) and its blocks;
    ``summary``: the lines ``safebench report`` prints on the terminal (the answer)."""

    title: str
    blocks: tuple[Block, ...] = ()
    notes: tuple[str, ...] = ()
    level: int = 2
    summary: tuple[str, ...] = ()

    @property
    def tables(self) -> dict[str, Table]:
        return {b.name: b for b in self.blocks if isinstance(b, Table)}

    @property
    def plots(self) -> dict[str, Plot]:
        return {b.name: b for b in self.blocks if isinstance(b, Plot)}


def failed(what: str, exc: Exception) -> tuple[Paragraph, str]:
    """The page paragraph and the note for a part of a section that could not be computed."""
    return Paragraph(f"**{what} not computed**: {exc}"), f"{what} not computed: {exc}"
