"""Two results roots run by run: are their metrics identical bar the timings, and how much
faster is one?

    python scripts/analysis/compare_metrics.py results/fastnav-training/stock \
        results/fastnav-training/fast

Runs are paired by (env id without its options, seed); a pair is compared when both runs are
done. For each pair it prints whether every metrics column but the four wall-clock timings is
equal bit for bit over all epochs (else the first column and epoch that differ), and the
ratio first ÷ second of the summed rollout time and of the whole run's wall time. Exit code 1
when a compared pair differs, 2 when no pair could be compared.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from safebench.results.store import RunDir

TIMING = ["time_rollout", "time_update", "time_eval", "wall_time"]


def runs_of(root: Path) -> dict[tuple[str, int], RunDir | None]:
    """A results root's runs keyed by (env id, seed): the run if done, else ``None``."""
    runs: dict[tuple[str, int], RunDir | None] = {}
    for path in sorted(root.glob("*/*/seed*")):
        run = RunDir(path)
        spec = run.read_spec()
        done = run.read_status().get("status") == "done"
        runs[(str(spec["env_id"]), int(spec["seed"]))] = run if done else None
    return runs


def first_difference(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    """``None`` when the frames are equal bit for bit (NaN equal to NaN), else where not."""
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return f"shape {a.shape} vs {b.shape}"
    for column in a.columns:
        x, y = a[column].to_numpy(), b[column].to_numpy()
        same = (x == y) | (pd.isna(x) & pd.isna(y))
        if not same.all():
            epoch = int(a["epoch"].iloc[int((~same).argmax())])
            return f"{column} at epoch {epoch}"
    return None


def main(first: Path, second: Path) -> int:
    a, b = runs_of(first), runs_of(second)
    pairs = sorted(key for key in set(a) & set(b) if a[key] is not None and b[key] is not None)
    if not pairs:
        print(f"no done run of {first} has a done counterpart in {second}")
        return 2
    differ = 0
    for env_id, seed in pairs:
        run_a, run_b = a[env_id, seed], b[env_id, seed]
        assert run_a is not None and run_b is not None
        ma, mb = run_a.read_metrics(), run_b.read_metrics()
        where = first_difference(ma.drop(columns=TIMING), mb.drop(columns=TIMING))
        differ += where is not None
        rollout = ma["time_rollout"].sum() / mb["time_rollout"].sum()
        wall = ma["wall_time"].iloc[-1] / mb["wall_time"].iloc[-1]
        verdict = "identical bar the timings" if where is None else f"DIFFER: {where}"
        print(
            f"{env_id} seed {seed}: {len(ma)} epochs, {verdict}; "
            f"rollout {rollout:.2f}x, wall {wall:.2f}x (first / second)"
        )
    missing = sorted((set(a) | set(b)) - set(pairs))
    if missing:
        print("not compared (not done on both sides): " + ", ".join(f"{e} {s}" for e, s in missing))
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
