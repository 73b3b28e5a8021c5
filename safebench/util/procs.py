"""Process liveness, and a worker that does not outlive the process that started it.

A killed launcher (or a killed parent of an OmniSafe child) cannot stop what it started;
a watchdog thread in the started process ends it instead, so nothing keeps writing into a
run directory that the next launch resumes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

__all__ = ["exit_when_gone", "pid_alive"]

_WATCHING: set[int] = set()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


def exit_when_gone(pid: int, *, poll_s: float = 0.05, name: str = "safebench-watchdog") -> None:
    """End this process (``os._exit(1)``) as soon as process ``pid`` is gone.

    A daemon thread polls ``pid``; one watchdog per watched pid and process. ``os._exit``
    skips cleanup on purpose: the run's last checkpoint is what the next launch resumes from,
    and anything written after the owner died could race that launch.
    """
    if pid in _WATCHING:
        return

    def watch() -> None:
        while pid_alive(pid):
            time.sleep(poll_s)
        os._exit(1)

    _WATCHING.add(pid)
    threading.Thread(target=watch, name=name, daemon=True).start()
