"""Every plot draws on the Axes it is given and produces a non-blank PNG of the right size."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from safebench import analysis
from safebench.report import plots

FIGSIZE, DPI = (4.0, 3.0), 50  # -> 200 x 150 pixels
LIMIT = 25.0


@pytest.fixture(scope="module")
def epochs() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frames = []
    for a, algo in enumerate(["cpo", "ctrpo"]):
        for seed in range(4):
            n = 20 if seed < 3 else 8
            t = np.arange(n)
            frames.append(
                pd.DataFrame(
                    {
                        "run_id": f"{algo}/E/{seed}",
                        "algo": algo,
                        "env": "E",
                        "seed": seed,
                        "status": "done" if seed < 3 else "running",
                        "epoch": t,
                        "steps": (t + 1) * 1000,
                        "ep_ret": (a + 1) * 10 * (1 - np.exp(-t / 5)) + rng.normal(0, 1, n),
                        "ep_cost": 20 + 20 * np.exp(-t / (3 + a)) + rng.normal(0, 2, n),
                        "ep_len": 1000.0,
                        "eval_ret": np.nan,
                        "eval_cost": np.nan,
                        "cost_limit": LIMIT,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def scores(epochs: pd.DataFrame) -> pd.DataFrame:
    return analysis.final_scores(epochs)


def check_png(ax: Axes, given: Axes, path: Path) -> None:
    assert ax is given
    figure = ax.get_figure()
    assert isinstance(figure, Figure)
    figure.savefig(path, dpi=DPI)
    image = mpimg.imread(path)
    assert image.shape[:2] == (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))
    rgb = image[..., :3]
    assert rgb.std() > 0.01
    assert (rgb < 0.9).any(axis=-1).mean() > 0.01  # some non-white ink


def legend_labels(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def new_axes() -> Axes:
    return Figure(figsize=FIGSIZE, dpi=DPI).add_subplot()


CurvePlot = Callable[..., Axes]


@pytest.mark.parametrize(
    "draw", [plots.plot_return_curves, plots.plot_cost_curves, plots.plot_regret_curves]
)
def test_curves(draw: CurvePlot, epochs: pd.DataFrame, tmp_path: Path) -> None:
    ax = new_axes()
    out = draw(epochs, ax, reps=200)
    labels = legend_labels(out)
    assert "cpo (n=3)" in labels  # the running run is left out ...
    assert any("2 non-done" in t.get_text() for t in out.texts)  # ... and the figure says so
    if draw is plots.plot_cost_curves:
        assert "cost limit" in labels
        assert any(np.allclose(line.get_ydata(), LIMIT) for line in out.get_lines())
    check_png(out, ax, tmp_path / "curve.png")


def test_curves_include_partial(epochs: pd.DataFrame) -> None:
    ax = plots.plot_return_curves(epochs, reps=200, include_partial=True)
    assert isinstance(ax, Axes)  # ax=None: a new figure
    labels = legend_labels(ax)
    assert "cpo (n=4)" in labels
    assert np.max(np.asarray(ax.get_lines()[0].get_xdata())) == pytest.approx(
        8000
    )  # shortest run's end


def test_interval_estimates(scores: pd.DataFrame, tmp_path: Path) -> None:
    table = analysis.aggregate(scores, "ret", reps=200)
    ax = new_axes()
    out = plots.plot_interval_estimates(table, ax)
    assert [t.get_text() for t in out.get_yticklabels()] == ["cpo", "ctrpo"]
    check_png(out, ax, tmp_path / "iqm.png")


def test_return_cost_scatter(scores: pd.DataFrame, tmp_path: Path) -> None:
    ax = new_axes()
    out = plots.plot_return_cost_scatter(scores, ax)
    assert out.get_xlim()[1] >= LIMIT
    check_png(out, ax, tmp_path / "scatter.png")
    norm = analysis.normalize_scores(scores, reference="cpo", method="reference")
    ax2 = new_axes()
    check_png(plots.plot_return_cost_scatter(norm, ax2), ax2, tmp_path / "scatter_norm.png")
    assert ax2.get_xlabel() == "final cost Ĵc/d − 1"
    legend_box = ax2.get_legend()
    assert legend_box is not None
    assert "E" not in [t.get_text() for t in legend_box.get_texts()]  # one env: no key
    # several envs: one marker shape per env, named in the legend
    two = pd.concat([scores, scores.assign(env="E2", run_id=scores["run_id"] + "-2")])
    ax3 = new_axes()
    plots.plot_return_cost_scatter(
        analysis.normalize_scores(two, reference=None, method="minmax"), ax3
    )
    legend_box = ax3.get_legend()
    assert legend_box is not None
    legend = [t.get_text() for t in legend_box.get_texts()]
    assert "E" in legend and "E2" in legend
    shapes = {
        tuple(map(tuple, np.asarray(c.get_paths()[0].vertices).round(3)))
        for c in ax3.collections
        if isinstance(c, PathCollection)
        and len(np.asarray(c.get_offsets()))
        and c.get_sizes()[0] < 50  # the run markers, not the means
    }
    assert len(shapes) == 2


def test_performance_profiles(scores: pd.DataFrame, tmp_path: Path) -> None:
    profiles = analysis.performance_profiles(scores, np.linspace(0, 25, 11), reps=200)
    ax = new_axes()
    out = plots.plot_performance_profiles(profiles, ax)
    assert len(out.get_lines()) == 2
    check_png(out, ax, tmp_path / "profiles.png")
