"""``safebench check-algorithm``: the algorithm contract from the command line (subprocesses,
as a researcher runs it), on a built-in, on a broken plug-in installed through the
``safebench.algorithms`` entry point, and on names and options it refuses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from safebench import registry
from safebench.cli.app import main
from safebench.experiment import conformance

# A plug-in that breaks two checks and keeps the others: a config field without a source tag,
# and an update counter kept outside the algorithm's state (a resumed run counts from 0 again,
# so its algo/updates_seen column differs from the straight run's).
BROKEN = """
from typing import Any

from pydantic import Field

from algorithms.ppo_lag import PPOLag, PPOLagConfig
from safebench.core.onpolicy import Batch


class ForgetfulConfig(PPOLagConfig):
    knob: float = Field(1.0, description="a knob without a source tag")


class Forgetful(PPOLag):
    name = "forgetful"
    Config = ForgetfulConfig
    config: ForgetfulConfig

    def setup(self) -> None:
        super().setup()
        self.updates_seen = 0

    def update_actor(self, batch: Batch) -> dict[str, float]:
        self.updates_seen += 1
        return {**super().update_actor(batch), "updates_seen": float(self.updates_seen)}
"""


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safebench.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def lines(out: str) -> dict[str, str]:
    """Each check's line, by check name: ``PASS name ...`` or ``FAIL name ...``."""
    found = {}
    for line in out.splitlines():
        m = re.match(r"^(PASS|FAIL) (\S+) ", line)
        if m:
            found[m.group(2)] = line
    return found


def test_a_builtin_passes_and_keeps_its_runs(tmp_path: Path) -> None:
    keep = tmp_path / "runs"
    out = cli("check-algorithm", "ppo-lag", "--keep", str(keep))
    assert out.returncode == 0, out.stdout + out.stderr
    checks = lines(out.stdout)
    assert list(checks) == list(conformance.CHECKS), out.stdout
    assert all(line.startswith("PASS") for line in checks.values()), out.stdout
    assert "ppo-lag: all 6 checks passed; runs kept in" in out.stdout
    for sub in (conformance.STRAIGHT, conformance.RESUMED):
        assert len(list((keep / sub).rglob("metrics.parquet"))) == 1, sub


def test_a_broken_plugin_fails_naming_the_checks(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    (plugin / "brokenlab").mkdir(parents=True)
    (plugin / "brokenlab" / "__init__.py").write_text("")
    (plugin / "brokenlab" / "forgetful.py").write_text(BROKEN)
    info = plugin / "brokenlab-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenlab\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[{registry.ENTRY_POINT_GROUP}]\nforgetful = brokenlab.forgetful:Forgetful\n"
    )
    tmp = tmp_path / "tmp"  # the default work directory goes here, and is removed after
    tmp.mkdir()
    path = os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = cli("check-algorithm", "forgetful", env={"PYTHONPATH": path, "TMPDIR": str(tmp)})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "forgetful: on-policy, plug-in (brokenlab.forgetful:Forgetful)" in out.stdout
    checks = lines(out.stdout)
    assert list(checks) == list(conformance.CHECKS), out.stdout
    failed = {name for name, line in checks.items() if line.startswith("FAIL")}
    assert failed == {"resume", "config-tags"}, out.stdout
    assert "algo/updates_seen at epoch 1" in checks["resume"]
    assert "knob" in checks["config-tags"]
    assert "forgetful: 2 of 6 checks failed: resume, config-tags" in out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert list(tmp.glob("safebench-*")) == []  # (torch may leave its own caches there)


def test_an_unknown_name_exits_2_with_suggestions() -> None:
    out = cli("check-algorithm", "ppo-lga")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "unknown algorithm 'ppo-lga'. Did you mean: ppo-lag" in " ".join(out.stderr.split())
    assert "Traceback" not in out.stderr and not out.stdout


def test_user_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """In-process through the console script's ``main`` (a subprocess each costs seconds)."""
    full = tmp_path / "full"
    full.mkdir()
    (full / "something").write_text("")
    cases = {
        ("ppo-lag@nope",): "config key 'variant'",
        ("ppo-lag@omnisafe", "--variant", "official"): "but --variant says 'official'",
        ("cpo", "--variant", "omnisafe"): "cpo has no named variants",
        ("omnisafe:CPO",): "OmniSafe's own implementation",
        ("ppo-lag", "--keep", str(full)): "give a new or empty directory",
    }
    for args, message in cases.items():
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys, "argv", ["safebench", "check-algorithm", *args])
            with pytest.raises(SystemExit) as exit_:
                main()
        out = capsys.readouterr()
        assert exit_.value.code == 2, (args, out.out + out.err)
        assert message in " ".join(out.err.split()), (args, out.err)
        assert not lines(out.out), args
    assert [p.name for p in full.iterdir()] == ["something"]
