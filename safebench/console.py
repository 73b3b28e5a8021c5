"""The command line's consoles and its small formatting helpers (no heavy imports here: every
command, ``status`` included, pays for what this module imports)."""

from __future__ import annotations

import re
from collections import Counter

from rich.console import Console

__all__ = ["ago", "console", "err_console", "short_env_ids"]

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
