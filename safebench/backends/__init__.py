"""Foreign implementations run as safebench runs.

``omnisafe:<NAME>`` names an OmniSafe algorithm trained by OmniSafe's own code
(:mod:`safebench.backends.omnisafe`); its light half, names and config checks
(:mod:`safebench.backends.omnisafe_config`), is what the registry and the experiment
schema use without importing OmniSafe or starting a process.
"""

from __future__ import annotations

__all__ = ["OMNISAFE_PREFIX", "is_omnisafe", "omnisafe_label"]

OMNISAFE_PREFIX = "omnisafe:"
"""``omnisafe:<NAME>`` runs OmniSafe's algorithm NAME in its own training loop."""


def is_omnisafe(name: str) -> bool:
    """Whether ``name`` asks for an OmniSafe algorithm (``omnisafe:<NAME>``)."""
    return name.startswith(OMNISAFE_PREFIX)


def omnisafe_label(name: str) -> str:
    """The default results label of ``omnisafe:<NAME>``: ``omnisafe-<name>`` (``:`` cannot be
    part of a directory name), e.g. ``omnisafe:PPOLag`` -> ``omnisafe-ppolag``."""
    return "omnisafe-" + name[len(OMNISAFE_PREFIX) :].lower()
