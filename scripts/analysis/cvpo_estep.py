"""CVPO's E-step over training, per run: the evidence of how (and where) its constraint settles.

For every CVPO run under a results root, at the chosen env-step counts, prints the training
Ĵc (window mean EpCost) and EpRet, the E-step's dual λ (``algo/lam``), the cost critic's mean
Q_c (``algo/q_c``) and the per-step budget the E-step holds E_q[Q_c] to,
ĉ = d(1 − γ^T)/((1 − γ)T) (``algo/qc_thres``), then each run's last deterministic evaluation.

CVPO's cost critic bootstraps through time-outs (as the official worker does), so a policy
with a steady per-step cost c has Q_c ≈ c/(1 − γ); the E-step's fixed point Q_c = ĉ is then
an episode cost of Ĵc* = ĉ·(1 − γ)·T = d(1 − γ^T), not d. The column ``Ĵc*`` prints that
predicted settling cost (T = the window's mean episode length) next to the measured Ĵc.

    .venv/bin/python scripts/analysis/cvpo_estep.py results/cvpo-small-cmdp
        [--at 40000 100000 200000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from safebench.report.format import md_table
from safebench.results.store import RunDir, load_runs

COLUMNS = ["algo/lam", "algo/q_c", "algo/qc_thres"]


def estep_table(runs: pd.DataFrame, at: list[int]) -> pd.DataFrame:
    """One row per (CVPO run, env-step count): Ĵc, EpRet, λ, mean Q_c, ĉ and Ĵc*.

    ``runs`` is :func:`safebench.results.store.load_runs` restricted to CVPO runs.
    """
    runs = runs.dropna(subset=["steps"])
    rows = []
    for (env, _), run in runs.groupby(["env", "seed"]):
        run = run.sort_values("steps")
        spec = RunDir(Path(run["run_dir"].iloc[0])).read_spec()
        gamma = float(spec["config"]["gamma"])
        for steps in at:
            upto = run[run["steps"] <= steps]
            if upto.empty:
                continue
            last = upto.iloc[-1]
            rows.append(
                {
                    "env": env,
                    "seed": int(run["seed"].iloc[0]),
                    "steps": int(last["steps"]),
                    "Ĵc": float(last["ep_cost"]),
                    "EpRet": float(last["ep_ret"]),
                    "λ": float(last["algo/lam"]),
                    "mean Q_c": float(last["algo/q_c"]),
                    "ĉ": float(last["algo/qc_thres"]),
                    "Ĵc*": float(last["algo/qc_thres"]) * (1.0 - gamma) * float(last["ep_len"]),
                    "status": str(last["status"]),
                }
            )
    # A run that has not reached a requested count repeats its last row: keep it once.
    return pd.DataFrame(rows).drop_duplicates(subset=["env", "seed", "steps"])


def _fmt(frame: pd.DataFrame) -> str:
    """Markdown with floats at 3 significant digits."""
    display = frame.copy()
    for column in display.columns:
        if display[column].dtype.kind == "f":
            display[column] = [f"{v:.3g}" for v in display[column]]
    return md_table(display)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="results root holding CVPO runs")
    parser.add_argument(
        "--at",
        type=int,
        nargs="+",
        default=[20_000, 40_000, 60_000, 100_000, 150_000, 200_000],
        help="env-step counts to print (each run's last epoch at or before each)",
    )
    args = parser.parse_args()
    runs = load_runs(args.root)
    runs = runs[runs["algo_name"] == "cvpo"]
    missing = [c for c in COLUMNS if c not in runs.columns]
    if missing:
        raise SystemExit(f"{args.root}: no CVPO diagnostics {missing} in the metrics")
    print(_fmt(estep_table(runs, args.at)))
    evals = runs.dropna(subset=["eval_ret"])
    last_eval = evals.sort_values("steps").groupby(["env", "seed"]).tail(1)
    print()
    print(_fmt(last_eval[["env", "seed", "steps", "eval_ret", "eval_cost"]]))


if __name__ == "__main__":
    main()
