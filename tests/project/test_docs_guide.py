"""docs/adding-an-algorithm.md, followed as written: from an empty folder to a report.

The page's files (code blocks whose info string names a path: ``python mylab/...``) are
written into an empty folder; the package is built and installed with uv as the page says
(into a target folder on ``PYTHONPATH`` instead of the project's ``.venv``, so the test leaves
the environment as it found it, and without build isolation, so it needs no network); then
the page's commands run through the real CLI: ``check-algorithm``, the experiment's smoke grid,
and ``report``, whose opening section must be the comparison the page promises.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "adding-an-algorithm.md"
FENCE = re.compile(r"```(\w+) ([^\s`]+)\n(.*?)```", re.S)


def _uv() -> list[str] | None:
    if shutil.which("uv"):
        return ["uv"]
    probe = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True)
    return [sys.executable, "-m", "uv"] if probe.returncode == 0 else None


def guide_files() -> dict[str, str]:
    """``{path: text}`` of every code block of the guide that names a file."""
    return {path: text for _, path, text in FENCE.findall(GUIDE.read_text())}


def test_guide_names_its_files_and_commands() -> None:
    text = GUIDE.read_text()
    assert set(guide_files()) == {
        "mylab/mylab/simple_lag.py",
        "mylab/pyproject.toml",
        "mine.yaml",
    }
    for command in (
        "uv pip install --python .venv/bin/python -e ../mylab",
        "safebench check-algorithm simple-lag",
        "safebench run mine.yaml --smoke",
        "safebench report results/mine-vs-baselines",
    ):
        assert command in text, command


@pytest.mark.skipif(_uv() is None, reason="uv is not installed (make setup installs it)")
def test_following_the_guide_from_an_empty_folder_to_the_report(tmp_path: Path) -> None:
    uv = _uv()
    assert uv is not None
    for path, text in guide_files().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    (tmp_path / "mylab" / "mylab" / "__init__.py").write_text("")  # the layout's empty file
    site = tmp_path / "site"
    install = [*uv, "pip", "install", "--python", sys.executable, "--target", str(site)]
    install += ["--no-deps", "--no-build-isolation", "--offline", str(tmp_path / "mylab")]
    done = subprocess.run(install, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    env = {**os.environ, "PYTHONPATH": str(site)}

    def safebench(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "safebench.cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )

    listed = safebench("list", "algorithms")
    assert listed.returncode == 0 and "simple-lag" in listed.stdout, listed.stderr

    checked = safebench("check-algorithm", "simple-lag")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "fail" not in checked.stdout.lower().replace("failed: 0", "")

    ran = safebench("run", "mine.yaml", "--smoke", "--backend", "local")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    root = tmp_path / "results" / "mine-vs-baselines-smoke"
    fast = ["--reps", "100", "--table-reps", "100", "--curve-reps", "20", "--poi-reps", "100"]
    reported = safebench("report", str(root.relative_to(tmp_path)), *fast)
    assert reported.returncode == 0, reported.stderr
    env_id = "safebench/ContinuousTarget-v0"
    assert f"simple-lag vs ppo-lag ({env_id}): " in reported.stdout

    md = (root / "report" / "report.md").read_text()
    assert md.startswith("# safebench report: mine-vs-baselines-smoke")
    assert "SimpleLag against PPO-Lag" in md
    assert md.index("## Is simple-lag better?") < md.index("## Verdict")
    table = pd.read_csv(root / "report" / "tables" / "ours.csv")
    assert table[["ours", "baseline", "scope"]].values.tolist() == [
        ["simple-lag", "ppo-lag", env_id]
    ]
    assert table["answer"].iloc[0] in {"yes", "no", "open"}
    assert 0.0 <= table["p_ret"].iloc[0] <= 1.0 and 0.0 <= table["p_cost"].iloc[0] <= 1.0
