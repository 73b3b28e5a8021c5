"""``make setup`` (and so ``make test``) keeps what a researcher installed into ``.venv``.

A plug-in algorithm lives in its own package, installed into the project's environment
(``uv pip install -e ../myalgo``). Plain ``uv sync`` removes every package the lock does
not name; the Makefile syncs with ``--inexact`` so the plug-in survives. Checked with the
Makefile's own command (``make -n``) as a dry run against this environment, holding an
extra installed distribution that the lock does not know.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = "zz-safebench-plugin-probe"


def _sync_command() -> list[str]:
    """The ``uv sync`` line ``make setup`` runs, as it would run it here."""
    shown = subprocess.run(
        ["make", "-n", "-B", ".venv/.synced"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    line = next(x for x in shown.splitlines() if " sync " in f" {x} ")
    return shlex.split(line)


@pytest.fixture
def installed_probe() -> Iterator[str]:
    """A minimal installed distribution (a ``*.dist-info`` folder) in this environment."""
    site = Path(sysconfig.get_paths()["purelib"])
    info = site / f"{PROBE.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    try:
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: 0.1\n")
        (info / "INSTALLER").write_text("uv\n")
        (info / "RECORD").write_text(f"{info.name}/METADATA,,\n")
        yield PROBE
    finally:
        shutil.rmtree(info)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_setup_keeps_packages_installed_by_hand(installed_probe: str) -> None:
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("runs inside the project's .venv only (the environment make setup syncs)")
    command = _sync_command()
    assert "--frozen" in command and "--inexact" in command

    def dry_run(cmd: list[str]) -> str:
        done = subprocess.run(
            [*cmd, "--dry-run", "--offline"], cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    assert installed_probe not in dry_run(command)
    # the same sync without --inexact would remove it: what the flag is there for
    exact = [a for a in command if a != "--inexact"]
    assert f"- {installed_probe}==0.1" in dry_run(exact)
