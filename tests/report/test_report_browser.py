"""``report.html`` in a real headless browser: it renders, every image loads, it fits the page.

Chromium (Debian: ``apt-get install chromium``) is driven through its command line:
``--dump-dom`` prints the DOM once the page has loaded, and a copy of the report with a
small script appended records, on the ``load`` event, whether each image decoded
(``complete`` and a natural width) and how wide the page and the runs-per-cell table are.
The report itself carries no script. The results are a synthetic store the size of the
C-TRPO paper's raw runs (13 methods × 8 tasks), whose tables were too wide before.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pytest

from safebench.report import ReportConfig, build_report
from safebench.results.store import env_slug, write_metrics

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)"
    ),
]

ENVS = [f"Safety{robot}{task}1-v0" for robot in ("Point", "Car") for task in ("Goal", "Button")] + [
    f"Safety{body}Velocity-v1" for body in ("Ant", "HalfCheetah", "Hopper", "Walker2d")
]
ALGOS = ["cpo", "pcpo", "p3o", "kfcpo", "ctrpo", "cvpo", "ppo", "ppo-lag", "trpo", "trpo-lag"]
ALGOS += ["focops", "cup", "saute"]
WIDTH = 1280

PROBE = """<script>
window.addEventListener("load", function () {
  var wrap = document.querySelector(".table-runs_matrix");
  var result = {
    images: [].map.call(document.images, function (i) { return i.complete && i.naturalWidth > 0; }),
    pageWidth: document.documentElement.scrollWidth,
    viewWidth: document.documentElement.clientWidth,
    matrixWidth: wrap ? wrap.scrollWidth : -1,
    matrixBox: wrap ? wrap.clientWidth : -1,
    headings: [].map.call(document.querySelectorAll("h1, h2"),
                          function (h) { return h.textContent; })
  };
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""


def chromium(profile: Path, *args: str) -> str:
    """Run headless Chromium with a fresh profile and no network chatter; its stdout."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},1600",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def probe(page: Path, tmp_path: Path) -> dict[str, Any]:
    """Load a copy of ``page`` with the probe script; what the script recorded."""
    copy = tmp_path / f"probe-{page.stem}.html"
    copy.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium(tmp_path / f"profile-{page.stem}", "--dump-dom", copy.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe script did not run: " + dom[-500:]
    result: dict[str, Any] = json.loads(found.group(1).replace("&quot;", '"'))
    return result


def write_store(root: Path, n_seeds: int = 2, n_epochs: int = 8) -> None:
    """Every algo × env × seed as a finished run with noisy rising returns and costs."""
    rng = np.random.default_rng(0)
    n = 0
    for a, algo in enumerate(ALGOS):
        for e, env in enumerate(ENVS):
            for seed in range(n_seeds):
                epochs = np.arange(n_epochs)
                ret = (a + 1) * (e + 1) * (1 - np.exp(-epochs / 3)) + rng.normal(0, 1, n_epochs)
                cost = np.clip(20 + 4 * (a % 4) + rng.normal(0, 3, n_epochs), 0, None)
                run_dir = root / algo / env_slug(env) / f"seed{seed}-{n:08d}"
                run_dir.mkdir(parents=True)
                spec: dict[str, Any] = {"run_id": f"{n:08d}", "algo": algo, "env_id": env}
                spec.update(experiment="wide", seed=seed, cost_limit=25.0)
                (run_dir / "spec.json").write_text(json.dumps(spec))
                (run_dir / "status.json").write_text(json.dumps({"status": "done"}))
                rows = [
                    {"epoch": i, "steps": 1000 * (i + 1), "ep_ret": r, "ep_cost": c}
                    for i, r, c in zip(range(n_epochs), ret.tolist(), cost.tolist())
                ]
                write_metrics(run_dir / "metrics.parquet", rows)
                n += 1


def test_probe_sees_a_broken_image(tmp_path: Path) -> None:
    """The check is not vacuous: an image that does not decode is reported as not loaded."""
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="data:image/png;base64,iVBORw0KGgo=">'
        "<table><tr><td>x</td></tr></table></body></html>"
    )
    assert probe(page, tmp_path)["images"] == [False]


def test_report_html_renders_loads_every_image_and_fits(tmp_path: Path) -> None:
    root = tmp_path / "wide"
    write_store(root)
    config = ReportConfig(reps=100, table_reps=100, curve_reps=20, curve_points=10)
    report = build_report(root, tmp_path / "report", config)
    page = report.out / "report.html"

    seen = probe(page, tmp_path)
    # renders: the title, the verdict first, every section after it
    assert seen["headings"][:3] == ["safebench report: wide", "Verdict", "Protocol"]
    assert "Figures" in seen["headings"]
    # every image decoded: one per figure the report made
    assert len(seen["images"]) == len(report.figures) == len(ENVS) + 3
    assert all(seen["images"]), seen["images"]
    # nothing runs off the page; the runs-per-cell matrix needs no scrolling either
    assert seen["pageWidth"] <= seen["viewWidth"], seen
    assert 0 < seen["matrixWidth"] <= seen["matrixBox"], seen

    # and a screenshot of it is a drawn page, not a blank one
    shot = tmp_path / "shot.png"
    chromium(tmp_path / "profile-shot", f"--screenshot={shot}", page.as_uri())
    image = mpimg.imread(shot)
    assert image.shape[:2] == (1600, WIDTH)
    rgb = image[..., :3].reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50 and (rgb < 0.9).any(axis=1).mean() > 0.02
