"""The algorithm contract: what every registered algorithm, built-in or plug-in, must keep.

Six checks, each a function returning a :class:`CheckResult` (pass or fail, and a short
detail), on small runs of :data:`EPOCHS` × :data:`STEPS` env steps:

1. ``smoke`` — a run on ``safebench/ContinuousTarget-v0`` through the real runner finishes,
   with whole episodes every epoch and evaluations where the schedule puts them;
2. ``resume`` — a run interrupted after epoch :data:`STOP_AFTER` and resumed equals the
   straight run bit for bit: its metrics (without the timing columns) and its final
   checkpoint's algorithm and collector state;
3. ``config-tags`` — every config field's description starts with a source / confidence tag
   ``[H]``, ``[M]`` or ``[L]``;
4. ``actions`` — the action protocol: on-policy configs (every variant) rescale [-1, 1] to the
   env's box and never clip; off-policy configs have no rescaling and never clip; the runner's
   collector delivers exactly that to an env that records what it receives
   (:class:`RecordingBox`);
5. ``diagnostics`` — every ``algo/`` metrics column is a finite float;
6. ``list-config`` — the table ``safebench list algorithms --config NAME`` prints shows every
   config key.

:func:`check_algorithm` runs them all for one algorithm (or one named variant); the command
``safebench check-algorithm NAME`` prints its results and
``tests/experiment/test_algorithm_contract.py`` runs each check over the registry. Checks 3, 4
and 6 are about the algorithm as a whole (check 4 covers every variant); checks 1, 2 and 5 run
the default config or the variant asked for.
"""

from __future__ import annotations

import io
import math
import re
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pandas as pd
import torch
from gymnasium import spaces
from rich.console import Console

from safebench import registry
from safebench.backends import is_omnisafe
from safebench.core.base import OnPolicyConfig
from safebench.core.offpolicy import OffPolicyCollector, OffPolicyConfig
from safebench.core.onpolicy import Rollout
from safebench.core.rollout import scale_action
from safebench.envs.factory import SyncVectorCMDP, make_vector_env
from safebench.errors import RunInterrupted, UserError
from safebench.results.store import RunDir, read_status
from safebench.schema.spec import EvalSpec, RunSpec
from safebench.training.runner import _collector, build_algorithm, metrics_frame, run
from safebench.util.console import config_table

__all__ = [
    "CHECKS",
    "CVPO_TINY",
    "ENV",
    "EPOCHS",
    "RECORDING",
    "STEPS",
    "STOP_AFTER",
    "CheckFailed",
    "CheckResult",
    "RecordingBox",
    "check_actions",
    "check_algorithm",
    "check_config_listing",
    "check_config_tags",
    "check_diagnostics",
    "check_resume",
    "check_smoke",
    "interrupted_after",
    "parse_name",
    "small_spec",
    "straight_run",
]

ENV = "safebench/ContinuousTarget-v0"  # 20-step episodes, action box [-2, 2], cost limit 5
RECORDING = "safebench.experiment.conformance:RecordingBox"  # records what it receives; box ±0.4
EPOCHS, STEPS, STOP_AFTER = 3, 200, 1  # straight: 3 epochs; interrupted after 1, resumed to 3
NUM_ENVS, SEED, COST_LIMIT = 2, 1, 5.0

# Small nets and batches for CVPO, so a run takes seconds: an update round after every episode
# (20 steps; 4·20 // 32 = 2 updates per round) instead of the official one per 20 episodes, so
# more rounds and more state to resume.
CVPO_TINY: dict[str, Any] = {
    "hidden_sizes": [16, 16],
    "batch_size": 32,
    "sample_action_num": 8,
    "mstep_iteration_num": 2,
    "sample_episode_num": 1,
    "episode_rerun_num": 4,
    "warmup_steps": 40,
}
# Per-algorithm settings that keep a contract run small (the defaults where absent).
OVERRIDES: dict[str, dict[str, Any]] = {"cvpo": CVPO_TINY}
TAG = re.compile(r"^\[[HML]\] ")
# algo/ diagnostics that may be NaN, per algorithm, where the algorithm documents it. None
# does: the runner itself rejects a non-finite algo/ value (runner._finite).
NAN_ALLOWED: dict[str, set[str]] = {}
# Subdirectories of a contract's work directory.
STRAIGHT, RESUMED = "straight", "resumed"

CHECKS: dict[str, str] = {
    "smoke": f"smoke run on {ENV}",
    "resume": "interrupted and resumed run = straight run, bit for bit",
    "config-tags": "config field descriptions start with [H], [M] or [L]",
    "actions": "action protocol, config and collector",
    "diagnostics": "algo/ metrics columns are finite floats",
    "list-config": "'safebench list algorithms --config' shows every key",
}
# Checks that read the straight run: not run again when the smoke run failed.
NEEDS_SMOKE = ("resume", "diagnostics")


class CheckFailed(Exception):
    """A contract check found a violation; the message says which, in one line."""


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: ``check`` is a key of :data:`CHECKS`; ``detail`` says what was
    found (why it failed, or what passed); ``trace`` is the traceback of an error raised by the
    algorithm or the runner (empty for a plain violation)."""

    check: str
    passed: bool
    detail: str
    seconds: float = 0.0
    trace: str = ""

    @property
    def title(self) -> str:
        return CHECKS[self.check]


def _require(condition: Any, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def _outcome(check: str, body: Callable[[], str]) -> CheckResult:
    """Run ``body`` (which returns the detail of a pass) as the check ``check``: a
    :class:`CheckFailed` is a violation, any other exception an error of what was checked."""
    start = time.perf_counter()
    try:
        detail, passed, trace = body(), True, ""
    except CheckFailed as exc:
        detail, passed, trace = str(exc), False, ""
    except Exception as exc:  # the algorithm's (or the runner's) own error fails the check
        detail, passed, trace = f"{type(exc).__name__}: {exc}", False, traceback.format_exc()
    return CheckResult(check, passed, detail.strip(), time.perf_counter() - start, trace)


# ---- the environment that records what it receives -----------------------------------------


class RecordingBox(gymnasium.Env):
    """Records every action it receives; action box [low, high] (default ±0.4, as
    SafetyHumanoidVelocity-v1), zero observations, 5-step episodes, reward = first action
    component, cost = 1 when the received action leaves the box. Its env id is
    :data:`RECORDING` (``module:Class``, like any custom env)."""

    def __init__(
        self, low: float | list[float] = -0.4, high: float | list[float] = 0.4, dim: int = 3
    ) -> None:
        lo = np.broadcast_to(np.asarray(low, np.float32), (dim,))
        hi = np.broadcast_to(np.asarray(high, np.float32), (dim,))
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.box = gymnasium.spaces.Box(lo, hi, (dim,), np.float32)
        self.action_space = self.box
        self.received: list[np.ndarray] = []
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action: Any) -> Any:
        a = np.array(action, copy=True)
        self.received.append(a)
        self.t += 1
        outside = float(np.any(a < self.box.low) or np.any(a > self.box.high))
        return np.zeros(1, np.float32), float(a[0]), outside, False, self.t >= 5, {}


# ---- the runs -------------------------------------------------------------------------------


def parse_name(name: str, variant: str | None = None) -> tuple[str, str | None]:
    """``NAME@VARIANT`` (or NAME and ``variant``) as (name, variant), checked against the
    registry: an unknown algorithm or variant is a :class:`UserError`."""
    base, at, suffix = name.partition("@")
    if at:
        if variant is not None and variant != suffix:
            raise UserError(f"{name!r} names variant {suffix!r} but --variant says {variant!r}")
        if not suffix:
            raise UserError(f"{name!r}: give the variant after '@', e.g. ppo-lag@omnisafe")
        variant = suffix
    if is_omnisafe(base):
        raise UserError(
            f"{base!r} is OmniSafe's own implementation, trained in OmniSafe's loop: the "
            "contract is for algorithms registered with safebench (safebench list algorithms)"
        )
    entry = registry.get(base)
    if variant is not None:
        fields = entry.config_cls.model_fields
        if "variant" not in fields:
            raise UserError(f"{base} has no named variants (its config has no 'variant' key)")
        registry.resolve_config(base, {"variant": variant})  # an unknown one: which exist
    return base, variant


def small_spec(name: str, variant: str | None = None, env: str = ENV, **cfg: Any) -> RunSpec:
    """A small run of ``name`` (``variant`` of it, if given): :data:`EPOCHS` × :data:`STEPS`
    env steps on 2 envs, 2 eval episodes every 2 epochs and at the end; ``cfg`` overrides."""
    if variant is not None:
        cfg = {"variant": variant, **cfg}
    config = registry.resolve_config(name, {**OVERRIDES.get(name, {}), **cfg})
    return RunSpec(
        algo=name,
        config=config.spec_dump(),
        env_id=env,
        seed=SEED,
        budget=EPOCHS * STEPS,
        steps_per_epoch=STEPS,
        cost_limit=COST_LIMIT,
        eval=EvalSpec(episodes=2, every_epochs=2),
        num_envs=NUM_ENVS,
        device="cpu",
    )


def straight_run(name: str, variant: str | None, workdir: Path) -> Path:
    """The uninterrupted run of :func:`small_spec` under ``workdir/straight`` (trained once:
    the runner returns a finished run as it is)."""
    return run(small_spec(name, variant), Path(workdir) / STRAIGHT)


def interrupted_after(spec: RunSpec, root: Path, epochs: int) -> Path:
    """Train ``spec`` under ``root`` and stop it after ``epochs`` epochs, as an interrupt
    stops it (checkpoint kept, status ``queued``); its run directory.

    Raises:
        CheckFailed: the run did not stop there, or did not leave that state.
    """
    polls = 0

    def stop() -> bool:
        nonlocal polls
        polls += 1
        return polls == epochs

    try:
        run(spec, root, should_stop=stop)
    except RunInterrupted:
        pass
    else:
        raise CheckFailed(f"the run was not interrupted after epoch {epochs}: it finished")
    run_dir = spec.run_dir(root)
    rows = len(metrics_frame(run_dir))
    _require(rows == epochs, f"the interrupted run logged {rows} epochs, not {epochs}")
    status = read_status(run_dir)["status"]
    _require(status == "queued", f"the interrupted run's status is {status!r}, not 'queued'")
    return run_dir


def numbers(run_dir: Path) -> pd.DataFrame:
    """The run's metrics without its timing columns (``time_*``, ``wall_time``)."""
    frame = metrics_frame(run_dir)
    timing = [c for c in frame.columns if c.startswith("time_") or c == "wall_time"]
    _require("wall_time" in timing, f"{run_dir}: the metrics have no wall_time column")
    return frame.drop(columns=timing)


def _frame_difference(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    """Where two metrics frames differ (first column and epoch), or None if equal exactly."""
    if list(a.columns) != list(b.columns):
        only_a = [c for c in a.columns if c not in b.columns]
        only_b = [c for c in b.columns if c not in a.columns]
        return f"columns differ: straight only {only_a}, resumed only {only_b}"
    if len(a) != len(b):
        return f"{len(a)} epochs straight vs {len(b)} resumed"
    for column in a.columns:
        x, y = a[column], b[column]
        if x.dtype != y.dtype:
            return f"{column}: dtype {x.dtype} straight vs {y.dtype} resumed"
        for epoch, (u, v) in enumerate(zip(x.tolist(), y.tolist())):
            if _value_difference(u, v, "") is not None:
                return f"{column} at epoch {epoch}: {u!r} straight vs {v!r} resumed"
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    except AssertionError as exc:  # a difference the cell by cell pass does not see (index)
        return " ".join(str(exc).split())
    return None


def _value_difference(a: Any, b: Any, where: str) -> str | None:
    """Where ``a`` and ``b`` differ (nested dicts, sequences, tensors, arrays), bit for bit;
    None when they hold the same values (NaN equals NaN)."""
    if type(a) is not type(b):
        return f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{where}: keys {list(a)} vs {list(b)}"
        for key in a:
            found = _value_difference(a[key], b[key], f"{where}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(a, list | tuple):
        if len(a) != len(b):
            return f"{where}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = _value_difference(x, y, f"{where}[{i}]")
            if found is not None:
                return found
        return None
    if isinstance(a, torch.Tensor):
        same = a.dtype == b.dtype and a.shape == b.shape
        if same and not torch.equal(a, b):
            nan = a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
            same = nan and torch.equal(a.nan_to_num(), b.nan_to_num())
        return None if same else f"{where}: tensors differ"
    if isinstance(a, np.ndarray):
        same = a.dtype == b.dtype and a.shape == b.shape
        if same:
            try:
                same = np.array_equal(a, b, equal_nan=True)
            except TypeError:  # no NaN in this dtype
                same = np.array_equal(a, b)
        return None if same else f"{where}: arrays differ"
    if isinstance(a, float) and math.isnan(a):
        return None if math.isnan(b) else f"{where}: nan vs {b!r}"
    try:
        return None if bool(a == b) else f"{where}: {a!r} vs {b!r}"
    except Exception as exc:  # a value without a plain equality
        return f"{where}: cannot compare {type(a).__name__} values ({exc})"


# ---- the checks -----------------------------------------------------------------------------


def check_smoke(name: str, variant: str | None, workdir: Path) -> CheckResult:
    """1. The straight run finishes: every epoch logged, whole episodes, the evaluations."""

    def body() -> str:
        run_dir = straight_run(name, variant, workdir)
        status = read_status(run_dir)
        _require(status["status"] == "done", f"the run ended {status['status']!r}, not 'done'")
        frame = metrics_frame(run_dir)
        epochs, steps = frame["epoch"].tolist(), frame["steps"].tolist()
        _require(epochs == list(range(EPOCHS)), f"epochs logged: {epochs}")
        _require(steps == [STEPS * (i + 1) for i in range(EPOCHS)], f"env steps: {steps}")
        lengths = frame["ep_len"].tolist()
        _require(lengths == [20.0] * EPOCHS, f"mean episode lengths {lengths}, not 20 each")
        evals = frame["eval_ret"].notna().tolist()
        _require(evals == [False, True, True], f"evaluated epochs: {evals}, not 2 and 3")
        last = frame.iloc[-1]
        return (
            f"{EPOCHS} epochs × {STEPS} env steps; last epoch EpRet {last['ep_ret']:.2f}, "
            f"EpCost {last['ep_cost']:.2f}, eval return {last['eval_ret']:.2f}"
        )

    return _outcome("smoke", body)


def check_resume(name: str, variant: str | None, workdir: Path) -> CheckResult:
    """2. Interrupted after :data:`STOP_AFTER` epochs and resumed, the run equals the straight
    one: metrics without timing, exactly; the final checkpoint's algorithm and collector."""

    def body() -> str:
        spec = small_spec(name, variant)
        full = straight_run(name, variant, workdir)
        root = Path(workdir) / RESUMED
        if spec.run_dir(root).exists():  # a leftover of an earlier check in this directory
            shutil.rmtree(spec.run_dir(root))
        part = interrupted_after(spec, root, STOP_AFTER)
        resumed = run(spec, root)
        _require(resumed == part, f"the resumed run went to {resumed}, not {part}")
        status = read_status(resumed)["status"]
        _require(status == "done", f"the resumed run ended {status!r}, not 'done'")
        found = _frame_difference(numbers(full), numbers(resumed))
        _require(found is None, f"metrics differ from the straight run: {found}")
        a = torch.load(RunDir(full).checkpoint, weights_only=False)
        b = torch.load(RunDir(resumed).checkpoint, weights_only=False)
        for key in ("algo", "collector", "epoch"):
            found = _value_difference(a[key], b[key], f"checkpoint {key}")
            _require(found is None, f"final checkpoint differs from the straight run's: {found}")
        return (
            f"stopped after epoch {STOP_AFTER}, resumed to {EPOCHS}: same metrics, algorithm "
            "and collector state"
        )

    return _outcome("resume", body)


def check_config_tags(name: str) -> CheckResult:
    """3. Every config field's description starts with ``[H]``, ``[M]`` or ``[L]``."""

    def body() -> str:
        fields = registry.get(name).config_cls.model_fields
        _require(fields, "the config has no fields")
        untagged = [k for k, f in fields.items() if not TAG.match(f.description or "")]
        _require(
            not untagged,
            f"{len(untagged)} of {len(fields)} fields have no [H]/[M]/[L] tag at the start of "
            f"their description: {', '.join(untagged)}",
        )
        return f"{len(fields)} fields, each tagged"

    return _outcome("config-tags", body)


def check_actions(name: str) -> CheckResult:
    """4. The action protocol of the algorithm's kind, in its configs (every variant) and in
    what the runner's collector delivers to :class:`RecordingBox` (box ±0.4, 3 dimensions)."""

    def body() -> str:
        entry = registry.get(name)
        cls = entry.config_cls
        configs = {"default": cls(), **{v: cls(variant=v) for v in cls.VARIANTS}}  # type: ignore[call-arg]
        # One protocol per kind, whatever the variant: OmniSafe's ActionScale, unclipped.
        if entry.kind == "on-policy":
            for label, config in configs.items():
                _require(
                    isinstance(config, OnPolicyConfig),
                    f"{label} config: {type(config).__name__} is not an OnPolicyConfig",
                )
                assert isinstance(config, OnPolicyConfig)  # _require raised otherwise
                protocol = config.protocol()
                scale, clip = protocol.action_scale, protocol.clip_actions
                _require(
                    scale is True and clip is False,
                    f"{label} config: action_scale={scale}, clip_actions={clip}; the on-policy "
                    "protocol is action_scale=True, clip_actions=False",
                )
            extra: dict[str, Any] = {}
        elif entry.kind == "off-policy":  # the actor acts in the env's box: nothing to rescale
            for label, config in configs.items():
                _require(
                    isinstance(config, OffPolicyConfig),
                    f"{label} config: {type(config).__name__} is not an OffPolicyConfig",
                )
                _require(
                    "action_scale" not in type(config).model_fields,
                    f"{label} config has action_scale; an off-policy actor acts in the env's box",
                )
                assert isinstance(config, OffPolicyConfig)  # _require raised otherwise
                protocol = config.protocol()
                _require(
                    protocol.action_scale is False,
                    f"{label} config: its protocol rescales actions; an off-policy actor acts in "
                    "the env's box",
                )
                _require(
                    protocol.clip_actions is False,
                    f"{label} config: clip_actions=True; the off-policy protocol never clips",
                )
            # the recording env declares no episode length; act with the actor from the start
            extra = {"timeout_steps": 5, "warmup_steps": 0}
        else:
            raise CheckFailed(f"kind {entry.kind!r}: the runner has no collector for it")

        spec = small_spec(name, env=RECORDING, **extra)
        venv = make_vector_env(RECORDING, spec.num_envs)
        try:
            space = venv.action_space
            if not (isinstance(venv, SyncVectorCMDP) and isinstance(space, spaces.Box)):
                raise CheckFailed(f"the recording env is not a synchronous Box env ({space})")
            algo = build_algorithm(spec, venv, torch.device("cpu"))
            collector = _collector(algo, venv, spec.seed)
            data, _ = collector.collect(algo, 20)  # type: ignore[arg-type]
            n = venv.num_envs
            if isinstance(data, Rollout):  # rows: step-major, env-minor
                sample = data.act.reshape(-1, n, *space.shape).swapaxes(0, 1)
                expected = scale_action(sample, space.low, space.high)
                outside = int(((expected < space.low) | (expected > space.high)).sum())
                # the policy's σ = 1 in [-1, 1] units: some actions land outside the box
                _require(
                    outside > 0,
                    "no rescaled action left the env's box, so clipping cannot be ruled out",
                )
                what = f"[-1, 1] rescaled to the box, unclipped ({outside} values outside it)"
            else:
                if not isinstance(collector, OffPolicyCollector):
                    raise CheckFailed(f"{type(collector).__name__} is not the off-policy collector")
                buffer = collector.buffer
                stored = buffer.state_dict()["act"][: len(buffer)]
                expected = stored.reshape(-1, n, *space.shape).swapaxes(0, 1)  # as sampled
                what = "the sampled actions as they are, unclipped"
            received = np.stack([np.stack(env.env.received) for env in venv.envs])
            _require(
                received.shape == expected.shape and received.shape[1] > 0,
                f"the env received actions of shape {received.shape}, expected {expected.shape}",
            )
            wrong = int((received != expected).any(axis=-1).sum())
            _require(
                wrong == 0,
                f"{wrong} of {received.shape[0] * received.shape[1]} actions reached the env "
                "other than the protocol says",
            )
        finally:
            venv.close()
        return f"{entry.kind} ({len(configs)} configs): the env receives {what}"

    return _outcome("actions", body)


def check_diagnostics(name: str, variant: str | None, workdir: Path) -> CheckResult:
    """5. Every ``algo/`` column of the straight run's metrics is a finite float."""

    def body() -> str:
        frame = metrics_frame(straight_run(name, variant, workdir))
        columns = [c for c in frame.columns if c.startswith("algo/")]
        _require(columns, "the algorithm reports no algo/ diagnostics")
        allowed = NAN_ALLOWED.get(name, set())
        for column in columns:
            values = frame[column]
            _require(values.dtype == np.float64, f"{column} is {values.dtype}, not float64")
            if column.removeprefix("algo/") in allowed:
                values = values.dropna()
            bad = values[~np.isfinite(values.to_numpy())]
            _require(bad.empty, f"{column} is not finite at epochs {bad.index.tolist()}")
        return f"{len(columns)} algo/ columns, all finite"

    return _outcome("diagnostics", body)


def check_config_listing(name: str) -> CheckResult:
    """6. ``safebench list algorithms --config NAME``'s table, rendered one line per row,
    shows every config key, in order."""

    def body() -> str:
        fields = registry.get(name).config_cls.model_fields
        out = io.StringIO()
        Console(file=out, width=1000, color_system=None).print(config_table(name, fields))
        rows = [line.split("│") for line in out.getvalue().splitlines() if line[:1] == "│"]
        keys = [cells[1].strip() for cells in rows if len(cells) > 1 and cells[1].strip()]
        missing = [k for k in fields if k not in keys]
        _require(not missing, f"keys not shown: {', '.join(missing)}")
        _require(keys == list(fields), f"keys shown {keys}, config keys {list(fields)}")
        return f"{len(keys)} keys shown"

    return _outcome("list-config", body)


def check_algorithm(
    name: str,
    variant: str | None = None,
    *,
    workdir: Path,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Every check of the contract for ``name`` (``NAME@VARIANT`` or ``variant``: that
    variant's runs), in :data:`CHECKS` order; runs go under ``workdir``. ``on_result`` is
    called with each result as it comes.

    Raises:
        UserError: an unknown algorithm or variant, or one of OmniSafe's own.
    """
    name, variant = parse_name(name, variant)
    workdir = Path(workdir)
    checks: dict[str, Callable[[], CheckResult]] = {
        "smoke": lambda: check_smoke(name, variant, workdir),
        "resume": lambda: check_resume(name, variant, workdir),
        "config-tags": lambda: check_config_tags(name),
        "actions": lambda: check_actions(name),
        "diagnostics": lambda: check_diagnostics(name, variant, workdir),
        "list-config": lambda: check_config_listing(name),
    }
    results: list[CheckResult] = []
    smoke_passed = True
    for check, fn in checks.items():
        if check in NEEDS_SMOKE and not smoke_passed:
            result = CheckResult(check, False, "not checked: the smoke run failed")
        else:
            result = fn()
        if check == "smoke":
            smoke_passed = result.passed
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
