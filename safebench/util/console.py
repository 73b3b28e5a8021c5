"""The command line's consoles and its small formatting helpers (no heavy imports here: every
command, ``status`` included, pays for what this module imports)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["ago", "config_table", "console", "err_console", "short_env_ids"]

console = Console()
err_console = Console(stderr=True)

_ENV_AFFIXES = re.compile(r"^(?:safebench/)?(?:Safety(?=[A-Z]))?(.+?)(?:-v\d+)?$")


def short_env_ids(envs: list[str]) -> dict[str, str]:
    """Env ids without ``safebench/``, ``Safety`` and ``-vN`` where they stay distinct
    (``SafetyPointGoal1-v0`` -> ``PointGoal1``): a table of runs fits 80 columns.

    The report's ``short_env_ids`` does the same; importing the report package would cost
    ``status`` seconds (matplotlib, rliable), hence this copy of three lines.
    """
    short = {env: _ENV_AFFIXES.sub(r"\1", env) for env in envs}
    counts = Counter(short.values())
    return {env: name if counts[name] == 1 else env for env, name in short.items()}


def ago(seconds: float) -> str:
    """``42s``, ``7m``, ``3h``, ``2d``: how long ago, compactly."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def config_table(name: str, fields: Mapping[str, Any]) -> Table:
    """An algorithm's config keys, defaults and source notes (its pydantic ``model_fields``):
    what ``safebench list algorithms --config NAME`` prints, and what the algorithm contract
    (:mod:`safebench.experiment.conformance`) reads back."""
    table = Table("key", "default", "source / confidence", title=f"{name} config")
    for key, field in fields.items():
        table.add_row(key, repr(field.default), field.description or "")
    return table
