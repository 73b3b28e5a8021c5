"""Rerun the learning-outcome tests as another machine would, and report every margin.

A learning test (marked ``learning``) passes on the machine it was written on; CI runs on
whichever machine a submission lands on. What differs between machines is which kernels
PyTorch, MKL, OpenBLAS and NumPy dispatch to (CPU features) and how many threads they use.
This script reruns the learning tests under each of these perturbations, each in a fresh
pytest process, collects every recorded check (``tests/learning.py``) and prints, per check,
its value under each perturbation and its smallest margin::

    .venv/bin/python scripts/tools/test_robustness.py                 # default-suite learning tests
    .venv/bin/python scripts/tools/test_robustness.py --slow          # the slow ones as well
    .venv/bin/python scripts/tools/test_robustness.py -p base -p avx2 # chosen perturbations
    make test-robustness                                        # = --slow, every perturbation

Exit status 1 when a test failed or a check's worst margin is below ``--min-margin`` (2%).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]


def _avx_features() -> list[str]:
    """NumPy's AVX / AVX-512 dispatch targets present on this CPU (the ones we may disable)."""
    from numpy.core._multiarray_umath import __cpu_features__

    return [k for k, on in __cpu_features__.items() if on and k.startswith(("AVX", "FMA", "F16C"))]


def perturbations() -> dict[str, dict[str, str]]:
    """Environment variables that make this machine compute as a different one would.

    ``ATEN_CPU_CAPABILITY`` caps PyTorch's vectorised kernels, ``MKL_ENABLE_INSTRUCTIONS``
    MKL's (PyTorch's BLAS), ``OPENBLAS_CORETYPE`` OpenBLAS's (NumPy's BLAS), and
    ``NPY_DISABLE_CPU_FEATURES`` NumPy's own SIMD loops; the thread counts change how
    reductions are split.
    """
    avx = _avx_features()
    avx512 = [f for f in avx if f.startswith("AVX512")]
    one = {"SAFEBENCH_TEST_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return {
        "base": dict(one),
        "threads2": {
            "SAFEBENCH_TEST_THREADS": "2",
            "OMP_NUM_THREADS": "2",
            "MKL_NUM_THREADS": "2",
        },
        "omp4-mkl2": {
            "SAFEBENCH_TEST_THREADS": "1",
            "OMP_NUM_THREADS": "4",
            "MKL_NUM_THREADS": "2",
        },
        "avx2": {
            **one,
            "ATEN_CPU_CAPABILITY": "avx2",
            "MKL_ENABLE_INSTRUCTIONS": "AVX2",
            "OPENBLAS_CORETYPE": "Haswell",
            "NPY_DISABLE_CPU_FEATURES": " ".join(avx512),
        },
        "generic": {
            **one,
            "ATEN_CPU_CAPABILITY": "default",
            "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
            "MKL_CBWR": "COMPATIBLE",
            "OPENBLAS_CORETYPE": "Nehalem",
            "NPY_DISABLE_CPU_FEATURES": " ".join(avx),
        },
    }


def run_one(name: str, env: dict[str, str], marker: str, extra: list[str]) -> tuple[int, Path]:
    """One pytest process under ``env``; returns its exit code and its margin log."""
    log = Path(tempfile.mkdtemp(prefix=f"margins-{name}-")) / "margins.jsonl"
    full = {**os.environ, **env, "SAFEBENCH_MARGIN_LOG": str(log)}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", marker, *extra]
    t0 = time.perf_counter()
    print(f"[{name}] {' '.join(f'{k}={v}' for k, v in env.items())}", flush=True)
    rc = subprocess.call(cmd, cwd=ROOT, env=full)
    print(f"[{name}] exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
    return rc, log


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-p", "--perturbation", action="append", help="name (repeatable)")
    parser.add_argument("--slow", action="store_true", help="include learning tests marked slow")
    parser.add_argument("--min-margin", type=float, default=0.02)
    parser.add_argument("--json", type=Path, help="also write every check here")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (e.g. a test path)")
    args = parser.parse_args()
    table = perturbations()
    names = args.perturbation or list(table)
    unknown = sorted(set(names) - set(table))
    if unknown:
        print(f"unknown perturbation {unknown}; choose from {sorted(table)}", file=sys.stderr)
        return 2
    marker = "learning" if args.slow else "learning and not slow"
    values: dict[tuple[str, str], dict[str, tuple[float, float, str, float]]] = defaultdict(dict)
    failed: list[str] = []
    for name in names:
        rc, log = run_one(name, table[name], marker, args.pytest_args)
        if rc != 0:
            failed.append(name)
        for line in log.read_text().splitlines() if log.exists() else []:
            c = json.loads(line)
            values[(c["test"], c["name"])][name] = (c["value"], c["bound"], c["sense"], c["margin"])
    out = Table("test", "check", *names, "worst margin", title="learning-outcome margins")
    worst_all = float("inf")
    for (test, check), per in sorted(values.items()):
        bound, sense = next(iter(per.values()))[1:3]
        worst = min(v[3] for v in per.values())
        worst_all = min(worst_all, worst)
        cells = [f"{per[n][0]:.4g}" if n in per else "-" for n in names]
        style = "red" if worst < args.min_margin else ""
        out.add_row(
            test.split("::", 1)[-1],
            f"{check} {sense} {bound:.4g}",
            *cells,
            f"{worst:+.1%}",
            style=style,
        )
    Console(width=200).print(out)
    if args.json:
        args.json.write_text(
            json.dumps(
                [{"test": t, "check": c, "runs": per} for (t, c), per in sorted(values.items())],
                indent=1,
            )
        )
    if failed:
        print(f"pytest failed under: {', '.join(failed)}")
    if not values:
        print("no learning checks were recorded")
        return 1
    print(f"smallest margin over all checks and perturbations: {worst_all:+.1%}")
    return 1 if failed or worst_all < args.min_margin else 0


if __name__ == "__main__":
    sys.exit(main())
