"""notebooks/walkthrough.ipynb: committed without outputs, and it runs on quick-start results.

The results are the quick-start grid trained at smoke size by ``safebench reproduce`` (the
command users run, so the notebook is checked against what the pipeline really writes). The
notebook is executed twice: by a Jupyter kernel through nbclient (needs nbclient, nbformat
and ipykernel), and as plain Python — its code cells in order in a fresh interpreter — so the
notebook's code is exercised even where the Jupyter packages are not installed.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import ipykernel  # noqa: F401  # the kernel nbclient starts
import nbclient
import nbformat
import pytest
from rich.console import Console

from safebench.experiment.reproduce import reproduce
from safebench.results.store import iter_run_dirs

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "walkthrough.ipynb"
REPS = "100"  # bootstrap repetitions inside the notebook: plumbing, not precision


def cells(kind: str) -> list[dict[str, Any]]:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    return [c for c in notebook["cells"] if c["cell_type"] == kind]


def source(cell: dict[str, Any]) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


@pytest.fixture(scope="module")
def quickstart_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nb") / "quickstart-smoke"
    result = reproduce(
        "quickstart",
        smoke=True,
        backend="local",
        output=str(out),
        reps=100,
        console=Console(file=io.StringIO()),
    )
    assert result.launch is not None and result.launch.complete
    return out


def test_committed_without_outputs() -> None:
    code = cells("code")
    assert len(code) >= 6
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None
    imports = "\n".join(
        line for cell in code for line in source(cell).splitlines() if "import" in line
    )
    # metrics and figures come from safebench.analysis / plots (and the store's loader) only
    assert "from safebench import analysis" in imports
    assert "from safebench.report import plots" in imports
    assert "rliable" not in imports and "scipy" not in imports and "seaborn" not in imports


def test_notebook_runs_as_plain_python(quickstart_results: Path, tmp_path: Path) -> None:
    script = tmp_path / "walkthrough.py"
    script.write_text("\n\n".join(source(c) for c in cells("code")), encoding="utf-8")
    env = {
        **os.environ,
        "SAFEBENCH_RESULTS": str(quickstart_results),
        "SAFEBENCH_REPS": REPS,
        "MPLBACKEND": "Agg",
    }
    # plt.show() under Agg only warns that it cannot show: silence that one warning
    out = subprocess.run(
        [sys.executable, "-W", "ignore::UserWarning:matplotlib", str(script)],
        capture_output=True,
        text=True,
        cwd=NOTEBOOK.parent,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    runs = len(iter_run_dirs(quickstart_results))
    assert f"{runs} runs in {quickstart_results}" in out.stdout


def test_notebook_executes_in_a_kernel(
    quickstart_results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nbclient, nbformat and ipykernel are locked dev dependencies: missing = broken install,
    # so this fails at import instead of skipping
    # the kernel inherits this process's environment
    monkeypatch.setenv("SAFEBENCH_RESULTS", str(quickstart_results))
    monkeypatch.setenv("SAFEBENCH_REPS", REPS)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # one figure per env (two in the quick start) plus the aggregate and profile figures
    assert len(images) >= 4
