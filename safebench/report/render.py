"""Writes a list of sections: tables, figures, ``report.md``, ``report.html``; publishes them.

Every table goes to ``tables/<name>.csv`` (full precision) and, when it has a display,
``.md`` and ``.tex``; every figure to ``figures/<name>.<format>``; the page is rendered
twice from the same blocks: ``report.md`` links ``figures/*.png``, ``report.html`` embeds
them as base64 data URIs (one self-contained file). Link lists (videos) are links in both,
relative to the report folder; their files are not copied. All of it goes into a staging
directory that replaces the output folder only once complete (:func:`publish`).
"""

from __future__ import annotations

import base64
import html
import os
import shutil
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import matplotlib
import pandas as pd

from safebench.report.format import html_table, inline_html, latex_table, md_table
from safebench.report.inputs import MARKER
from safebench.report.model import Items, Links, Paragraph, Plot, Section, Table

__all__ = ["Written", "page_html", "page_markdown", "publish", "replaceable", "write_sections"]

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
    "padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0;"
    "font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}"
    "img{max-width:100%}figure{margin:1em 0}figcaption{color:#555;font-size:0.85em}"
    "code{background:#f3f3f3;padding:0 3px}"
    ".table-wrap{overflow-x:auto;max-width:100%}"
    ".table-verdict th,.table-verdict td{text-align:left}"
    ".table-ours td:nth-child(3),.table-ours td:nth-child(8){text-align:left}"
)


@dataclass
class Written:
    """What :func:`write_sections` wrote: files in order, table data, PNG sizes."""

    files: list[Path] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, tuple[int, int]] = field(default_factory=dict)


def _write_text(path: Path, text: str, written: Written) -> None:
    path.write_text(text, encoding="utf-8")
    written.files.append(path)


def _write_table(root: Path, table: Table, written: Written) -> None:
    written.tables[table.name] = table.data
    tables = root / "tables"
    _write_text(tables / f"{table.name}.csv", table.data.to_csv(index=False), written)
    if table.display is None:
        return
    md = f"{table.caption}\n\n{md_table(table.display)}\n"
    _write_text(tables / f"{table.name}.md", md, written)
    _write_text(tables / f"{table.name}.tex", latex_table(table.display, table.caption), written)


def _write_plot(root: Path, plot: Plot, formats: Sequence[str], dpi: int, written: Written) -> None:
    for fmt in formats:
        path = root / "figures" / f"{plot.name}.{fmt}"
        # no creation date in SVG metadata and element ids from a fixed salt instead of a
        # random one, so equal reports give equal files
        metadata = {"Date": None} if fmt == "svg" else None
        with matplotlib.rc_context({"svg.hashsalt": "safebench-report"}):
            plot.figure.savefig(path, format=fmt, dpi=dpi, metadata=metadata)
        written.files.append(path)
    # the PNG's own header (IHDR: width, height), exactly what a viewer will show
    header = (root / "figures" / f"{plot.name}.png").read_bytes()[16:24]
    width, height = struct.unpack(">II", header)
    written.figures[plot.name] = (int(width), int(height))


def write_sections(
    root: Path, sections: Sequence[Section], formats: Sequence[str], dpi: int
) -> Written:
    """Every table and figure of ``sections`` into ``root/tables`` and ``root/figures``."""
    (root / "tables").mkdir(parents=True, exist_ok=True)
    (root / "figures").mkdir(parents=True, exist_ok=True)
    written = Written()
    for section in sections:
        for block in section.blocks:
            if isinstance(block, Table):
                _write_table(root, block, written)
            elif isinstance(block, Plot):
                _write_plot(root, block, formats, dpi, written)
    return written


def page_markdown(sections: Sequence[Section]) -> str:
    """``report.md``: headings, paragraphs, lists, tables (caption first), linked PNGs."""
    out: list[str] = []
    for section in sections:
        out.append("#" * section.level + " " + section.title)
        for block in section.blocks:
            if isinstance(block, Paragraph):
                out.append(block.text)
            elif isinstance(block, Items):
                if block.items:
                    out.append("\n".join(f"- {item}" for item in block.items))
            elif isinstance(block, Links):
                out.append("\n".join(f"- [{text}]({quote(href)})" for text, href in block.links))
            elif isinstance(block, Table):
                if block.display is not None:
                    out += [block.caption, md_table(block.display)]
            else:
                out.append(f"![{block.caption}](figures/{block.name}.png)")
    return "\n\n".join(out) + "\n"


def page_html(sections: Sequence[Section], root: Path, title: str) -> str:
    """``report.html``, self-contained: the PNGs under ``root/figures`` are embedded."""
    body: list[str] = []
    for section in sections:
        tag = f"h{section.level}"
        body.append(f"<{tag}>{inline_html(section.title)}</{tag}>")
        for block in section.blocks:
            if isinstance(block, Paragraph):
                body.append(f"<p>{inline_html(block.text)}</p>")
            elif isinstance(block, Items):
                if block.items:
                    items = "".join(f"<li>{inline_html(i)}</li>" for i in block.items)
                    body.append(f"<ul>{items}</ul>")
            elif isinstance(block, Links):
                items = "".join(
                    f'<li><a href="{html.escape(quote(href))}">{html.escape(text)}</a></li>'
                    for text, href in block.links
                )
                body.append(f'<ul class="links">{items}</ul>')
            elif isinstance(block, Table):
                if block.display is not None:
                    body.append(f"<p>{inline_html(block.caption)}</p>")
                    # a table wider than the page scrolls inside its box, not the page
                    wrapped = html_table(block.display)
                    body.append(f'<div class="table-wrap table-{block.name}">{wrapped}</div>')
            else:
                png = (root / "figures" / f"{block.name}.png").read_bytes()
                data = base64.b64encode(png).decode("ascii")
                caption = html.escape(block.caption)
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                    f"<figcaption>{caption}</figcaption></figure>"
                )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def replaceable(out: Path) -> bool:
    """``out`` may receive a report: absent, empty, or a previous report."""
    return not out.exists() or (
        out.is_dir() and (not any(out.iterdir()) or (out / MARKER).exists())
    )


def publish(stage: Path, out: Path) -> None:
    """Put the finished staging directory at ``out``, replacing a previous report."""
    if not out.exists():
        os.rename(stage, out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
    os.rename(out, old)
    try:
        os.rename(stage, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
