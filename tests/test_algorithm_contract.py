"""The contract every registered algorithm keeps, checked over ``registry.available()``.

Parametrized over the built-ins and the plug-in of docs/adding-an-algorithm.md
(``simple-lag``), which this module installs through the ``safebench.algorithms`` entry-point
group (a package and a ``*.dist-info`` folder put on ``sys.path``). For each algorithm:

1. a smoke run on ``safebench/ContinuousTarget-v0`` through the real runner (in-process, so the
   plug-in on ``sys.path`` is enough);
2. an interrupted and resumed run equals the straight one bit for bit (metrics without the
   timing columns, exactly; and the final checkpoint's algorithm and collector state);
3. every config field's description starts with a source / confidence tag [H], [M] or [L];
4. the action protocol: on-policy configs (every variant) rescale [-1, 1] to the env's box and
   never clip; off-policy configs have no rescaling and never clip; the runner's collector
   delivers exactly that to the env;
5. every ``algo/`` metrics column is a finite float;
6. ``safebench list algorithms --config NAME`` prints every config key.

Every named variant of a built-in (``VARIANTS``: OmniSafe's, the corrected method, the
official P3O) runs checks 1, 2 and 5 too, as ``name@variant``.

Then everything that lists algorithms (the import-linter contract, ``algorithms/*.py``, the
README's table) is checked against the registry.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from gymnasium import spaces
from typer.testing import CliRunner

from safebench import registry
from safebench.cli import app
from safebench.console import console
from safebench.core.base import OnPolicyConfig
from safebench.core.offpolicy import OffPolicyCollector, OffPolicyConfig
from safebench.core.onpolicy import Rollout
from safebench.core.rollout import scale_action
from safebench.envs import SyncVectorCMDP, make_vector_env
from safebench.runner import CHECKPOINT, _collector, build_algorithm, metrics_frame, run
from safebench.spec import EvalSpec, RunSpec
from safebench.store import read_status
from tests.integration.test_offpolicy_runner import TINY as CVPO_TINY
from tests.integration.test_offpolicy_runner import interrupted_after
from tests.learning import torch_threads

REPO = Path(__file__).resolve().parents[1]
ENV = "safebench/ContinuousTarget-v0"  # 20-step episodes, action box [-2, 2], cost limit 5
RECORDING = "tests.envs_fixture:RecordingBox"  # records what it receives; box ±0.4, 5-step episodes
EPOCHS, STEPS, STOP_AFTER = 3, 200, 1  # straight: 3 epochs; interrupted after 1, resumed to 3
# Per-algorithm settings that keep a run small (the defaults where absent). CVPO's official
# defaults run one update round per 20 episodes; the integration tests' tiny settings run one
# round per episode (more rounds, so more state to resume) on small nets.
OVERRIDES: dict[str, dict[str, Any]] = {"cvpo": CVPO_TINY}
TAG = re.compile(r"^\[[HML]\] ")
# algo/ diagnostics that may be NaN, per algorithm, where the algorithm documents it. None
# does: the runner itself rejects a non-finite algo/ value (runner._finite).
NAN_ALLOWED: dict[str, set[str]] = {}

# The plug-in is the worked example of docs/adding-an-algorithm.md, read from the page: the
# guide's code is what this contract runs.
PLUGIN = "simple-lag"
GUIDE = REPO / "docs" / "adding-an-algorithm.md"
PLUGIN_SOURCE = re.search(r"```python\n(.*?)```", GUIDE.read_text(), re.S).group(1)  # type: ignore[union-attr]

# Every registered algorithm at collection time, and the plug-in this module installs.
ALGORITHMS = list(dict.fromkeys([*registry.available(), PLUGIN]))
# Every named variant of a built-in runs the same contract (smoke, resume, diagnostics), as
# ``name@variant``: a variant is a set of defaults the algorithm must honour like its own.
VARIANTS = [
    f"{name}@{variant}"
    for name, entry in registry.available().items()
    for variant in entry.config_cls.VARIANTS
]
RUNS = ALGORITHMS + VARIANTS


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plug-in distribution as an installer leaves it: the package and its dist-info."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "mylab").mkdir()
    (root / "mylab" / "__init__.py").write_text("")
    (root / "mylab" / "simple_lag.py").write_text(PLUGIN_SOURCE)
    info = root / "mylab-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mylab\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[{registry.ENTRY_POINT_GROUP}]\n{PLUGIN} = mylab.simple_lag:SimpleLag\n"
    )
    return root


def _forget_plugin() -> None:
    registry.available.cache_clear()
    for module in [m for m in sys.modules if m == "mylab" or m.startswith("mylab.")]:
        del sys.modules[module]


@pytest.fixture(scope="module", autouse=True)
def _plugin_installed(plugin_dir: Path) -> Iterator[None]:
    """The plug-in is on ``sys.path`` (so ``entry_points`` finds it) for this module only."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(plugin_dir))
        _forget_plugin()
        yield
        _forget_plugin()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(torch_threads())
    yield
    torch.set_num_threads(previous)


def spec(name: str, env: str = ENV, **cfg: Any) -> RunSpec:
    """A small run of ``name`` (or ``name@variant``): EPOCHS × STEPS env steps on 2 envs,
    2 eval episodes."""
    name, _, variant = name.partition("@")
    if variant:
        cfg = {"variant": variant, **cfg}
    config = registry.resolve_config(name, {**OVERRIDES.get(name, {}), **cfg})
    return RunSpec(
        algo=name,
        config=config.spec_dump(),
        env_id=env,
        seed=1,
        budget=EPOCHS * STEPS,
        steps_per_epoch=STEPS,
        cost_limit=5.0,
        eval=EvalSpec(episodes=2, every_epochs=2),
        num_envs=2,
        device="cpu",
    )


def numbers(run_dir: Path) -> pd.DataFrame:
    """The run's metrics without its timing columns (time_*, wall_time)."""
    frame = metrics_frame(run_dir)
    timing = [c for c in frame.columns if c.startswith("time_") or c == "wall_time"]
    assert "wall_time" in timing  # the timing columns are where they are expected
    return frame.drop(columns=timing)


class StraightRuns:
    """Each algorithm's uninterrupted run, trained once for the module's tests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dirs: dict[str, Path] = {}

    def __call__(self, name: str) -> Path:
        if name not in self.dirs:
            self.dirs[name] = run(spec(name), self.root)
        return self.dirs[name]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> StraightRuns:
    return StraightRuns(tmp_path_factory.mktemp("straight"))


# ---- the contract, per algorithm ------------------------------------------------------------


def test_plugin_is_registered_through_its_entry_point(plugin_dir: Path) -> None:
    algos = registry.available()
    assert list(algos) == [*registry.BUILTIN, PLUGIN]
    entry = algos[PLUGIN]
    assert entry.source == "plug-in (mylab.simple_lag:SimpleLag)" and entry.kind == "on-policy"
    assert Path(sys.modules[entry.cls.__module__].__file__ or "").is_relative_to(plugin_dir)
    # off sys.path, the entry point is gone
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "path", [p for p in sys.path if p != str(plugin_dir)])
        _forget_plugin()
        assert PLUGIN not in registry.available()
    _forget_plugin()
    assert PLUGIN in registry.available()


@pytest.mark.parametrize("name", RUNS)
def test_smoke_run(name: str, straight: StraightRuns) -> None:
    run_dir = straight(name)
    assert read_status(run_dir)["status"] == "done"
    frame = metrics_frame(run_dir)
    assert frame["epoch"].tolist() == list(range(EPOCHS))
    assert frame["steps"].tolist() == [STEPS * (i + 1) for i in range(EPOCHS)]
    assert frame["ep_len"].tolist() == [20.0] * EPOCHS  # whole episodes finished every epoch
    assert frame["eval_ret"].notna().tolist() == [False, True, True]  # epoch 2, and the last


@pytest.mark.parametrize("name", RUNS)
def test_interrupt_and_resume_is_bit_identical(
    name: str, straight: StraightRuns, tmp_path: Path
) -> None:
    s = spec(name)
    part = interrupted_after(s, tmp_path, STOP_AFTER)
    resumed = run(s, tmp_path)
    assert resumed == part and read_status(resumed)["status"] == "done"
    full = straight(name)
    pd.testing.assert_frame_equal(numbers(full), numbers(resumed), check_exact=True)
    a = torch.load(full / CHECKPOINT, weights_only=False)
    b = torch.load(resumed / CHECKPOINT, weights_only=False)
    for key in ("algo", "collector", "epoch"):
        _assert_same(a[key], b[key], key)


def _assert_same(a: Any, b: Any, where: str) -> None:
    """``a`` and ``b`` hold the same values bit for bit (nested dicts, sequences, arrays)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where, strict=True)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), f"{where}: nan vs {b!r}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


@pytest.mark.parametrize("name", ALGORITHMS)
def test_config_fields_carry_a_source_tag(name: str) -> None:
    if registry.is_omnisafe(name):
        pytest.skip("OmniSafe-backend configs are OmniSafe's YAML, not tagged fields")
    fields = registry.get(name).config_cls.model_fields
    assert fields
    untagged = {k: f.description for k, f in fields.items() if not TAG.match(f.description or "")}
    assert not untagged, f"{name}: config fields without an [H]/[M]/[L] tag: {untagged}"


@pytest.mark.parametrize("name", ALGORITHMS)
def test_actions_reach_the_env_as_the_protocol_says(name: str) -> None:
    entry = registry.get(name)
    cls = entry.config_cls
    configs = [cls(), *(cls(variant=v) for v in cls.VARIANTS)]  # type: ignore[call-arg]
    # One protocol per kind, whatever the variant: OmniSafe's ActionScale, unclipped.
    if entry.kind == "on-policy":
        for config in configs:
            assert isinstance(config, OnPolicyConfig), name
            assert config.action_scale is True and config.clip_actions is False, name
        extra: dict[str, Any] = {}
    else:  # the actor acts in the env's box itself: nothing to rescale
        for config in configs:
            assert isinstance(config, OffPolicyConfig), name
            assert "action_scale" not in type(config).model_fields, name
            assert config.clip_actions is False, name
        # the recording env declares no episode length; act with the actor from the start
        extra = {"timeout_steps": 5, "warmup_steps": 0}

    # What the runner's collector sends to an env whose box is ±0.4 (3 dimensions).
    s = spec(name, env=RECORDING, **extra)
    venv = make_vector_env(RECORDING, s.num_envs)
    assert isinstance(venv, SyncVectorCMDP)
    space = venv.action_space
    assert isinstance(space, spaces.Box)
    algo = build_algorithm(s, venv, torch.device("cpu"))
    collector = _collector(algo, venv, s.seed)
    data, _ = collector.collect(algo, 20)  # type: ignore[arg-type]
    n = venv.num_envs
    if isinstance(data, Rollout):  # rows: step-major, env-minor
        sample = data.act.reshape(-1, n, *space.shape).swapaxes(0, 1)
        expected = scale_action(sample, space.low, space.high)
        # the policy's σ = 1 in [-1, 1] units: some actions land outside the box, unclipped
        assert ((expected < space.low) | (expected > space.high)).any(), name
    else:
        assert isinstance(collector, OffPolicyCollector)
        stored = collector.buffer.state_dict()["act"][: len(collector.buffer)]
        expected = stored.reshape(-1, n, *space.shape).swapaxes(0, 1)  # the sample as is
    received = np.stack([np.stack(env.env.received) for env in venv.envs])
    assert received.shape == expected.shape and received.shape[1] > 0
    np.testing.assert_array_equal(received, expected, err_msg=name)
    venv.close()


@pytest.mark.parametrize("name", RUNS)
def test_diagnostics_are_finite_floats(name: str, straight: StraightRuns) -> None:
    frame = metrics_frame(straight(name))
    columns = [c for c in frame.columns if c.startswith("algo/")]
    assert columns, f"{name} reports no algo/ diagnostics"
    allowed = NAN_ALLOWED.get(name, set())
    for column in columns:
        values = frame[column]
        assert values.dtype == np.float64, f"{name}: {column} is {values.dtype}"
        if column.removeprefix("algo/") in allowed:
            values = values.dropna()
        bad = values[~np.isfinite(values.to_numpy())]
        assert bad.empty, f"{name}: {column} not finite at epochs {bad.index.tolist()}"


@pytest.mark.parametrize("name", ALGORITHMS)
def test_cli_lists_every_config_key(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_width", 1000)  # one line per row: no wrapped keys
    result = CliRunner().invoke(app, ["list", "algorithms", "--config", name])
    assert result.exit_code == 0, result.output
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.output)
    rows = [line.split("│") for line in text.splitlines() if line.startswith("│")]
    keys = [cells[1].strip() for cells in rows if cells[1].strip()]
    assert keys == list(registry.get(name).config_cls.model_fields), text


# ---- everything that lists algorithms agrees with the registry ------------------------------


def _builtin_modules() -> list[str]:
    return [target.partition(":")[0] for target in registry.BUILTIN.values()]


def test_one_module_per_builtin_algorithm() -> None:
    modules = _builtin_modules()
    assert len(set(modules)) == len(modules), modules
    files = sorted(p.stem for p in (REPO / "algorithms").glob("*.py") if p.stem != "__init__")
    assert sorted(m.removeprefix("algorithms.") for m in modules) == files


def test_import_linter_independence_contract_lists_every_builtin() -> None:
    tomllib = pytest.importorskip(
        "tomllib" if sys.version_info >= (3, 11) else "tomli",
        reason="reading pyproject.toml needs tomllib (Python 3.11+) or tomli on Python 3.10",
    )
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    contracts = [
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c["name"].startswith("One readable file per algorithm")
    ]
    assert len(contracts) == 1 and contracts[0]["type"] == "independence"
    listed = contracts[0]["modules"]
    assert len(set(listed)) == len(listed), listed
    assert sorted(listed) == sorted(_builtin_modules())


def _readme_table() -> dict[str, str]:
    """The README's algorithm table: name -> kind."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = lines.index("| name | kind | what |")
    table: dict[str, str] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        name, kind = (cell.strip() for cell in line.strip("|").split("|")[:2])
        table[name.strip("`")] = kind
    assert table
    return table


def test_readme_table_lists_every_builtin() -> None:
    table = _readme_table()
    missing = sorted(set(registry.BUILTIN) - set(table), key=list(registry.BUILTIN).index)
    unknown = sorted(set(table) - set(registry.BUILTIN))
    assert not missing and not unknown, f"README table: missing {missing}, unknown {unknown}"


def test_readme_table_kinds_match_the_registry() -> None:
    algos = registry.available()
    for name, kind in _readme_table().items():
        assert name in algos and algos[name].kind == kind, (name, kind)
