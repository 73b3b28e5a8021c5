"""One damaged file never takes a results root down (issue 25).

One small finished results root (two runs of PPO-Lag on ContinuousTarget) is trained once
per module and copied per case. Each case damages one file of run ``seed0`` (truncated,
empty, garbage; a parquet with the wrong columns; the other run's ``spec.json``; an
unreadable file) or adds foreign files and folders, then runs ``status``, ``report``,
``eval`` and ``run`` (the resume) in this process, as the console script does:

- every command exits 0 or 2, never with a traceback, and names the damaged file;
- ``report`` still reports the healthy run and names the damaged one in its notes;
- ``eval`` refuses the damaged run with one line (exit 2);
- ``run`` moves the damaged files into ``<run>/damaged-<time>/`` (kept byte for byte) and
  re-trains the run: its metrics equal the undamaged run's (bar the time columns);
- the healthy run's files are byte-identical afterwards.

Writes that cannot happen (permission, disk full) end with one line, exit 2, and leave
every file as it was; the next ``run`` resumes exactly.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from safebench.results.store import check_root, read_metrics

EXPERIMENT = """\
name: damage
algorithms: [ppo-lag]
environments: [safebench/ContinuousTarget-v0]
seeds: 2
budget: 400
steps_per_epoch: 200
cost_limit: 5
eval: {episodes: 1, deterministic: true, every_epochs: 2}
resources: {cpus: 1, gpus: 0}
"""
REPORT = ("--reps", "10", "--table-reps", "10", "--curve-reps", "10", "--poi-reps", "10")
GARBAGE = b"\x00\xffnot this file at all\x13\x37" * 8


@dataclass
class Result:
    code: int
    out: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.out.splitlines() if line.strip()]


def cli(*args: str | Path) -> Result:
    """``safebench ARGS`` in this process (``safebench.cli.app.main``: user errors exit 2).

    Any exception but ``SystemExit`` propagates and fails the test: that is a traceback.
    """
    from safebench.cli.app import main

    buf = io.StringIO()
    argv = sys.argv
    sys.argv = ["safebench", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    out = buf.getvalue()
    assert "Traceback" not in out, out
    return Result(code, out)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(experiment yaml, results root)`` of the finished 2-run grid (trained once)."""
    where = tmp_path_factory.mktemp("damage")
    yaml = where / "damage.yaml"
    yaml.write_text(EXPERIMENT)
    root = where / "results"
    res = cli("run", yaml, "--backend", "local", "--output", root)
    assert res.code == 0, res.out
    assert [c.health for c in check_root(root, deep=True)] == ["healthy", "healthy"]
    return yaml, root


def runs(root: Path) -> tuple[Path, Path]:
    """The (victim, healthy) run directories: seed 0 and seed 1."""
    seed0, seed1 = sorted((root / "ppo-lag" / "safebench_ContinuousTarget-v0").iterdir())
    assert seed0.name.startswith("seed0-") and seed1.name.startswith("seed1-")
    return seed0, seed1


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != "placement.json"
    }


def metrics_without_time(run_dir: Path) -> pd.DataFrame:
    frame = read_metrics(run_dir / "metrics.parquet")
    return frame.drop(
        columns=[c for c in frame.columns if c.startswith("time_") or c == "wall_time"]
    )


# --- the damage ------------------------------------------------------------------------------

FILES = ("metrics.parquet", "status.json", "spec.json", "manifest.json", "checkpoint.pt")
Damager = Callable[[Path, Path, pytest.MonkeyPatch], str | None]


def _truncate(name: str) -> Damager:
    def damage(victim: Path, _other: Path, _mp: pytest.MonkeyPatch) -> str:
        data = (victim / name).read_bytes()
        (victim / name).write_bytes(data[: min(100, len(data) // 2)])
        return name

    return damage


def _empty(name: str) -> Damager:
    def damage(victim: Path, _other: Path, _mp: pytest.MonkeyPatch) -> str:
        (victim / name).write_bytes(b"")
        return name

    return damage


def _garbage(name: str) -> Damager:
    def damage(victim: Path, _other: Path, _mp: pytest.MonkeyPatch) -> str:
        (victim / name).write_bytes(b"{not json" if name.endswith(".json") else GARBAGE)
        return name

    return damage


def _wrong_columns(victim: Path, _other: Path, _mp: pytest.MonkeyPatch) -> str:
    pd.DataFrame({"reward": [1.0, 2.0], "cost": [0.0, 1.0]}).to_parquet(
        victim / "metrics.parquet", index=False
    )
    return "metrics.parquet"


def _spec_of_other_run(victim: Path, other: Path, _mp: pytest.MonkeyPatch) -> str:
    shutil.copyfile(other / "spec.json", victim / "spec.json")
    return "spec.json"


def _unreadable(victim: Path, _other: Path, mp: pytest.MonkeyPatch) -> str:
    target = victim / "metrics.parquet"
    target.chmod(0)
    with contextlib.suppress(PermissionError):
        target.read_bytes()
        # root reads anything: make every read of this path deny it, as chmod would
        read_bytes, inode = Path.read_bytes, target.stat().st_ino

        def denied(self: Path) -> bytes:
            if self.exists() and self.stat().st_ino == inode:  # also once moved aside
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return read_bytes(self)

        mp.setattr(Path, "read_bytes", denied)
    return "metrics.parquet"


def _foreign(victim: Path, _other: Path, _mp: pytest.MonkeyPatch) -> None:
    root = victim.parents[2]
    (root / "notes.txt").write_text("my notes")
    (root / "old-stuff" / "deeper").mkdir(parents=True)
    (root / "old-stuff" / "deeper" / "data.bin").write_bytes(GARBAGE)
    (victim.parent / "stray.parquet").write_bytes(GARBAGE)
    (victim.parent / "not-a-run").mkdir()
    (victim / "my-plot.png").write_bytes(GARBAGE)
    return None


CASES: dict[str, Damager] = {
    **{f"truncated-{name}": _truncate(name) for name in FILES},
    **{f"empty-{name}": _empty(name) for name in FILES},
    **{f"garbage-{name}": _garbage(name) for name in FILES},
    "wrong-columns-metrics.parquet": _wrong_columns,
    "spec.json-of-another-run": _spec_of_other_run,
    "unreadable-metrics.parquet": _unreadable,
    "foreign-files-and-folders": _foreign,
}


@pytest.fixture
def damaged_copy(finished: tuple[Path, Path], tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    yaml, root = finished
    copy = tmp_path / "results"
    shutil.copytree(root, copy)
    yield yaml, copy
    for p in copy.rglob("*"):  # chmod 000 files: let pytest clean up
        with contextlib.suppress(OSError):
            p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.mark.parametrize("kind", list(CASES))
def test_damage_costs_one_run_never_the_root(
    kind: str,
    damaged_copy: tuple[Path, Path],
    finished: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    yaml, root = damaged_copy
    victim, healthy = runs(root)
    original_victim = runs(finished[1])[0]
    healthy_before = snapshot(healthy)
    name = CASES[kind](victim, healthy, monkeypatch)
    damaged_bytes = None
    if name is not None and kind != "unreadable-metrics.parquet":
        damaged_bytes = (victim / name).read_bytes()

    # doctor: the same, and nothing changes
    everything = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    res = cli("doctor", root)
    assert res.code == (0 if name is None else 1), res.out
    assert "nothing was changed" in res.out
    if name is not None:
        assert "damaged" in res.out and name in res.out and "re-trains" in res.out, res.out
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == everything

    # status: lists the damaged run, the file and why, and what run will do
    res = cli("status", root)
    assert res.code == 0, res.out
    assert "2 runs" in res.out
    if name is not None:
        assert "damaged" in res.out and name in res.out, res.out
        assert "re-trains" in res.out, res.out
    else:
        assert "2 done" in res.out, res.out

    # report: the healthy run still reported; the damaged one named in the notes
    out = tmp_path / "report"
    res = cli("report", root, "--out", out, *REPORT)
    assert res.code == 0, res.out
    page = (out / "report.md").read_text()
    if name is not None:
        assert name in res.out and "damaged run" in res.out, res.out
        assert f"damaged run {victim.relative_to(root)}" in page and name in page
    else:
        assert "damaged" not in page

    # eval: refuses the damaged run with one line
    if name is not None:
        res = cli("eval", victim, "--episodes", "1")
        assert res.code == 2, res.out
        assert len(res.lines) == 1 and name in res.out and "damaged" in res.out, res.out

    # run: sets the damaged files aside and re-trains the run
    res = cli("run", yaml, "--backend", "local", "--output", root)
    assert res.code == 0, res.out
    assert snapshot(healthy) == healthy_before
    if name is not None:
        assert "damaged" in res.out and name in res.out, res.out
        (aside,) = victim.glob("damaged-*")
        assert (aside / name).exists()
        if damaged_bytes is not None:
            assert (aside / name).read_bytes() == damaged_bytes
        assert name in (aside / "DAMAGE.txt").read_text()
    else:
        assert not list(victim.glob("damaged-*"))
        assert (root / "notes.txt").read_text() == "my notes"
        assert (root / "old-stuff" / "deeper" / "data.bin").read_bytes() == GARBAGE
    monkeypatch.undo()
    checks = check_root(root, deep=True)
    assert [c.health for c in checks] == ["healthy", "healthy"], [c.damage for c in checks]
    pd.testing.assert_frame_equal(
        metrics_without_time(victim), metrics_without_time(original_victim)
    )


# --- writes that cannot happen ---------------------------------------------------------------


def _fail_writes(monkeypatch: pytest.MonkeyPatch, when: Callable[[Path], bool], err: int) -> None:
    """Make ``store.atomic_write``'s renames onto matching paths fail with ``err``."""
    from safebench.results import store

    real = os.replace

    def replace(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        if when(Path(dst)):
            raise OSError(err, os.strerror(err), str(dst))
        real(src, dst, *a, **k)

    monkeypatch.setattr(store.os, "replace", replace)


@pytest.mark.parametrize("target", ["checkpoint.pt", "metrics.parquet"])
def test_disk_full_during_training_stops_with_one_line_and_resumes_exactly(
    target: str,
    damaged_copy: tuple[Path, Path],
    finished: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    yaml, root = damaged_copy
    victim, healthy = runs(root)
    original = metrics_without_time(runs(finished[1])[0])
    # back to the state after epoch 1 of 2: the second epoch's write then fails
    for name in ("status.json", "checkpoint.pt", "metrics.parquet"):
        (victim / name).unlink()
    healthy_before = snapshot(healthy)
    calls = {"n": 0}

    def second_write_of_target(path: Path) -> bool:
        if path.name != target:
            return False
        calls["n"] += 1
        return calls["n"] == 2

    _fail_writes(monkeypatch, second_write_of_target, errno.ENOSPC)
    res = cli("run", yaml, "--backend", "local", "--output", root)
    assert res.code == 2, res.out
    error = [line for line in res.lines if line.startswith("error:")]
    assert len(error) == 1 and target in error[0] and "disk is full" in error[0], res.out
    assert not list(victim.glob(f".{target}.*.tmp")), "the temp file is left behind"
    assert snapshot(healthy) == healthy_before
    before = snapshot(victim)
    assert target in before  # the first epoch's file is intact
    monkeypatch.undo()

    res = cli("run", yaml, "--backend", "local", "--output", root)
    assert res.code == 0, res.out
    pd.testing.assert_frame_equal(metrics_without_time(victim), original)


def test_disk_full_during_report_keeps_the_old_report(
    finished: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, root = finished
    out = tmp_path / "report"
    assert cli("report", root, "--out", out, *REPORT).code == 0
    before = snapshot(out)
    real = Path.write_text

    def full(self: Path, *a: Any, **k: Any) -> int:
        if self.name == "report.html":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    res = cli("report", root, "--out", out, *REPORT)
    assert res.code == 2, res.out
    assert len(res.lines) == 1 and "report.html" in res.out and "disk is full" in res.out
    assert snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".staging")]


def test_unwritable_output_is_one_line_exit_2(
    finished: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    yaml, root = finished
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: deny as the kernel would
            real_mkdir, real_open = os.mkdir, os.open

            def denied(path: Any) -> None:
                if locked in Path(os.fsdecode(path)).absolute().parents:
                    raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

            def mkdir(path: Any, *a: Any, **k: Any) -> None:
                denied(path)
                real_mkdir(path, *a, **k)

            def open_(path: Any, flags: int, *a: Any, **k: Any) -> int:
                if flags & os.O_CREAT:
                    denied(path)
                return real_open(path, flags, *a, **k)

            monkeypatch.setattr(os, "mkdir", mkdir)
            monkeypatch.setattr(os, "open", open_)
        for args in (
            ("run", yaml, "--backend", "local", "--output", locked / "results"),
            ("report", root, "--out", locked / "report", *REPORT),
            ("train", "ppo-lag", "safebench/ContinuousTarget-v0", "--out", locked / "adhoc"),
        ):
            res = cli(*args)
            assert res.code == 2, res.out
            error = [line for line in res.lines if line.startswith("error:")]
            assert len(error) == 1 and str(locked) in error[0], res.out
            assert "Permission denied" in res.out and "writable" in res.out, res.out
    finally:
        locked.chmod(0o755)


def test_result_files_are_ordinary_files_readable_under_the_umask(tmp_path: Path) -> None:
    """Atomic writes keep the user's umask (a temp file from mkstemp would stay 0600)."""
    from safebench.results.store import atomic_write_json

    previous = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        os.umask(0o027)
        atomic_write_json(tmp_path / "b.json", {"x": 2})
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temp left
