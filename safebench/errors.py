"""User-facing errors: the CLI prints their message on one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a YAML field, a CLI flag, an env id, a config key, ...).

    The message must name the offending field or value and say how to fix it.
    """


class RunInterrupted(Exception):
    """A run stopped on request (``should_stop``, Ctrl-C, a cancelled task); its checkpoint is
    kept and launching it again resumes it (an OmniSafe run restarts from scratch)."""


class WriteError(UserError):
    """A file that cannot be written (permission denied, read-only file system, disk full).

    The message names the path and the fix; the write was atomic, so every file already
    there is as it was (``store.atomic_write``).
    """
