"""safebench.envs.fastnav: bit-identical to stock Safety-Gymnasium 1.0.0 navigation, and faster.

The reference is a fresh stock env (``fast=False``), first episode included: a stock env's
first reset runs one ``mj_forward`` fewer than its later ones, and a fresh fast env takes the
same path (see :mod:`safebench.envs.fastnav`). The grid compares against stock built with the
render-only skybox left out (stock code throughout, only the six skybox PNGs not decoded:
several seconds per stock reset otherwise); :func:`test_full_stock_assets_identical` checks
that this changes no model field but the textures and compares one task against fully stock
envs.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from typing import Any

import mujoco
import numpy as np
import pytest

from safebench.envs.factory import EnvError, import_safety_gymnasium, make_env, make_vector_env
from safebench.envs.fastnav.assets import training_assets

# Stock reads its 1-element hinge sensors with float(array) (deprecated in NumPy 1.25).
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0")

STEPS = 50  # per episode: max_episode_steps, so every episode ends by truncation
# Three consecutive episodes of one env (reuse is exercised). Seeds whose Button layouts the
# stock sampler finds in few draws (~1k, against ~11k on average): the stock reference pays
# them at every reset. The sampler's restarts are covered by test_layout_sampler_is_exact.
SEEDS = (378, 280, 42)
GRID = [
    f"Safety{robot}{task}{level}-v0"
    for task in ("Goal", "Button", "Push", "Circle")
    for robot in ("Point", "Car", "Racecar")
    for level in (1, 2)
] + ["SafetyDoggoGoal1-v0"]


def _env(env_id: str, *, fast: bool) -> Any:
    """The Safety-Gymnasium env behind make_env (float64 observations, raw values)."""
    return make_env(env_id, fast=fast, max_episode_steps=STEPS).env


def _bits(value: Any) -> Any:
    """A comparable form that tells apart any two different doubles (and bool from float)."""
    if isinstance(value, dict):
        return {k: _bits(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_bits(v) for v in value)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    return np.asarray(value, dtype=np.float64).tobytes()


def _force_goal(task: Any) -> None:
    """Put the goal where it is reached on the next step (as a policy reaching it would)."""
    agent_xy = task.agent.pos[:2]
    if hasattr(task, "push_box"):
        task.model.body("goal").pos[:2] = task.push_box.pos[:2]
    elif hasattr(task, "buttons"):
        button = task.model.body(f"button{task.buttons.goal_button}")
        button.pos[:2] = agent_xy + np.array([0.05, 0.0])
    elif hasattr(task, "goal"):
        task.model.body("goal").pos[:2] = agent_xy


def _trajectory(env: Any, seeds: tuple[int, ...], stock: bool = False) -> list[Any]:
    """Everything the env returns over one episode per seed (random actions drawn from the
    episode's seed, the goal forced half-way through so that a new one is sampled)."""
    low, high = env.action_space.low, env.action_space.high
    build = training_assets if stock else contextlib.nullcontext
    records: list[Any] = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        with build():
            obs, info = env.reset(seed=seed)
        records.append(("reset", _bits(obs), _bits(info)))
        for t in itertools.count():
            if t == STEPS // 2:
                _force_goal(env.unwrapped.task)
            obs, reward, cost, terminated, truncated, info = env.step(rng.uniform(low, high))
            records.append((*_bits((obs, reward, cost)), terminated, truncated, _bits(info)))
            if terminated or truncated:
                break
    return records


def _stock_reference(env_id: str, seeds: tuple[int, ...]) -> list[Any]:
    """A fresh stock env's records: its first reset, then later ones."""
    return _trajectory(_env(env_id, fast=False), seeds, stock=True)


def _same_data(env_a: Any, env_b: Any) -> None:
    """The two envs' simulation states are equal down to the solver's warm start."""
    data_a, data_b = env_a.unwrapped.task.data, env_b.unwrapped.task.data
    for field in ("qpos", "qvel", "qacc", "qacc_warmstart", "time"):
        assert np.array_equal(getattr(data_a, field), getattr(data_b, field)), field


@pytest.mark.parametrize("env_id", GRID)
def test_fast_equals_stock(env_id: str) -> None:
    fast = _env(env_id, fast=True)
    got = _trajectory(fast, SEEDS)
    expected = _stock_reference(env_id, SEEDS)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"{env_id}: record {i} differs"
    counts = fast.unwrapped.task.build_counts
    assert counts == {"compile": 1, "inplace": len(SEEDS) - 1, "rebuild": 0}
    if "Circle" not in env_id:  # the forced goal was reached and a new one was sampled
        assert any(isinstance(r[-1], dict) and "goal_met" in r[-1] for r in got)


# One task per robot and per task family (and level 0, which the grid leaves out), with a
# seed whose first episode the former fast env (two forwards at every reset) got wrong where
# that happens at all: a Point or Ant agent's solver reaches the same result from either warm
# start. Two episodes with the same seed: the fresh env's first reset, then a later one.
FIRST_EPISODE = [
    ("SafetyPointGoal1-v0", 0),
    ("SafetyCarButton1-v0", 0),
    ("SafetyRacecarCircle1-v0", 0),
    ("SafetyDoggoPush1-v0", 1),
    ("SafetyAntRun0-v0", 0),
    ("SafetyRacecarRun0-v0", 1),
    ("SafetyCarCircle0-v0", 0),
]


@pytest.mark.parametrize(("env_id", "seed"), FIRST_EPISODE)
def test_fresh_fast_equals_fresh_stock_first_episode(env_id: str, seed: int) -> None:
    """A fresh fast env and a fresh stock env, same seeds and random actions: identical
    observations, rewards, costs, info, terminations, first episode included."""
    fast, stock = _env(env_id, fast=True), _env(env_id, fast=False)
    got = _trajectory(fast, (seed,))
    expected = _trajectory(stock, (seed,), stock=True)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, f"{env_id}: first episode, record {i} differs"
    _same_data(fast, stock)
    got, expected = _trajectory(fast, (seed,)), _trajectory(stock, (seed,), stock=True)
    assert got == expected, f"{env_id}: second episode differs"
    _same_data(fast, stock)


def test_first_episode_differs_from_later_ones_as_in_stock() -> None:
    """The first reset's one forward fewer is reproduced, not removed: on a contact-rich task a
    fresh env's first episode differs from its second with the same seed, and a fresh env's
    first episode equals another fresh env's."""
    env_id = "SafetyCarGoal1-v0"
    env = _env(env_id, fast=True)
    first, second = _trajectory(env, (32,)), _trajectory(env, (32,))
    assert first != second
    assert _trajectory(_env(env_id, fast=True), (32,)) == first
    assert env.unwrapped.task.build_counts == {"compile": 1, "inplace": 1, "rebuild": 0}


def test_full_stock_assets_identical() -> None:
    """Fully stock (the real skybox) vs fast: the compiled models differ in texture pixels
    only, and the trajectories are identical, first episode included."""
    env_id, seed = "SafetyCarGoal1-v0", 21
    stock = _env(env_id, fast=False)
    fast = _env(env_id, fast=True)
    # stock's first reset, compiled with all the assets; the fast one with the training assets
    assert _trajectory(fast, (seed,)) == _trajectory(stock, (seed,))
    compared = 0
    for name in dir(stock.unwrapped.task.model):
        value = getattr(stock.unwrapped.task.model, name)
        if isinstance(value, np.ndarray) and not name.startswith("tex"):
            assert np.array_equal(value, getattr(fast.unwrapped.task.model, name)), name
            compared += 1
    assert compared > 100
    assert _trajectory(fast, (seed + 1,)) == _trajectory(stock, (seed + 1,))


@pytest.mark.parametrize(
    ("steps", "used", "warm"),
    [
        (45, False, [True, True]),  # past an episode boundary, restored into fresh envs
        (10, True, [False, False]),  # in the first episodes, into envs reset before (renewed)
        (10, False, [False, False]),  # in the first episodes, into fresh envs
    ],
)
def test_vector_env_restore_is_exact(steps: int, used: bool, warm: list[bool]) -> None:
    """safebench's resume (replay each env's episode seed and actions) is exact down to the
    solver's warm start, so the two continue identically: an episode that began with an
    env's first reset is replayed on a fresh env, a later one on an env reset before. The
    collector resets its new envs before restoring them (``used``)."""
    env_id = "SafetyRacecarButton1-v0"
    kwargs: dict[str, Any] = {"max_episode_steps": 30}
    rng = np.random.default_rng(1)
    running = make_vector_env(env_id, 2, **kwargs)
    obs = running.reset(seed=5)
    shape = (2, *(running.action_space.shape or ()))
    for _ in range(steps):
        obs = running.step(rng.uniform(-1, 1, shape))[0]
    state = running.state()
    assert state["warm"] == warm
    restored = make_vector_env(env_id, 2, **kwargs)
    if used:
        restored.reset(seed=7)
    np.testing.assert_array_equal(restored.restore(state), obs)
    assert restored.state()["warm"] == warm
    for _ in range(30):  # through the next episode boundary
        action = rng.uniform(-1, 1, shape)
        for a, b in zip(running.step(action), restored.step(action)):
            np.testing.assert_array_equal(a, b)
    for env_a, env_b in zip(running.envs, restored.envs):  # type: ignore[attr-defined]
        _same_data(env_a, env_b)
    assert restored.state()["warm"] == [True, True]


def test_async_vector_env_renews_its_worker_env() -> None:
    """The worker processes replay a first episode on a fresh env of their own too."""
    env_id = "SafetyCarGoal1-v0"
    kwargs: dict[str, Any] = {"max_episode_steps": 30}
    rng = np.random.default_rng(3)
    running = make_vector_env(env_id, 1, **kwargs)
    obs = running.reset(seed=8)
    for _ in range(10):
        obs = running.step(rng.uniform(-1, 1, (1, 2)))[0]
    restored = make_vector_env(env_id, 1, asynchronous=True, **kwargs)
    try:
        restored.reset(seed=9)  # as the collector does: the worker's env has been reset
        np.testing.assert_array_equal(restored.restore(running.state()), obs)
        for _ in range(30):
            action = rng.uniform(-1, 1, (1, 2))
            for a, b in zip(running.step(action), restored.step(action)):
                np.testing.assert_array_equal(a, b)
    finally:
        restored.close()


def test_vector_env_restore_of_a_state_without_warm() -> None:
    """A checkpoint written before ``warm`` was recorded: every episode began with a later
    reset then (the former fast env took that path at every reset), and replays on one."""
    env_id = "SafetyCarGoal1-v0"
    rng = np.random.default_rng(2)
    running = make_vector_env(env_id, 1)
    obs = running.reset(seed=3, warm=True)  # every env reset once before its episode 0
    for _ in range(10):
        obs = running.step(rng.uniform(-1, 1, (1, 2)))[0]
    state = running.state()
    assert state.pop("warm") == [True]
    restored = make_vector_env(env_id, 1)
    np.testing.assert_array_equal(restored.restore(state), obs)
    _same_data(running.envs[0], restored.envs[0])  # type: ignore[attr-defined]


def test_fast_option_and_rendering_select_stock() -> None:
    import_safety_gymnasium()
    from safety_gymnasium.builder import Builder

    from safebench.envs.fastnav.builder import fast_builder_class

    assert type(make_env("SafetyPointGoal1-v0").unwrapped) is fast_builder_class()
    assert type(make_env("SafetyPointGoal1-v0", fast=False).unwrapped) is Builder
    rendering = make_env("SafetyPointGoal1-v0", render_mode="rgb_array")
    assert type(rendering.unwrapped) is Builder  # rendering gets the full stock assets
    # velocity tasks take the option too (they have no fast path: same env either way)
    make_env("SafetyHopperVelocity-v1", fast=False)
    with pytest.raises(EnvError, match="'fast' must be true or false"):
        make_env("SafetyPointGoal1-v0", fast="no")


def test_changed_world_config_falls_back_to_a_rebuild() -> None:
    """Bigger hazards after an episode: the world config no longer fits the compiled model."""
    env_id, seeds = "SafetyPointGoal1-v0", (41, 42, 43)
    fast, stock = _env(env_id, fast=True), _env(env_id, fast=False)
    got = _trajectory(fast, seeds[:1])
    expected = _trajectory(stock, seeds[:1], stock=True)
    for env in (fast, stock):
        env.unwrapped.task.hazards.size = 0.3
    got += _trajectory(fast, seeds[1:])
    expected += _trajectory(stock, seeds[1:], stock=True)
    assert got == expected
    assert fast.unwrapped.task.build_counts == {"compile": 1, "inplace": 1, "rebuild": 1}
    hazard = fast.unwrapped.task.model.geom("hazard0")
    assert hazard.size[0] == 0.3  # the rebuilt model has the new hazards


def test_in_place_layout_reproduces_compiled_model() -> None:
    """Layer 2 alone: every model field but cameras equals the compiler's, layout after layout."""
    import_safety_gymnasium()
    from safety_gymnasium.world import World

    env = _env("SafetyCarButton2-v0", fast=True)  # free agent, gremlins (mocap + weld)
    task = env.unwrapped.task
    for seed in (51, 52, 53):
        env.reset(seed=seed)
        # the config as it was compiled: the goal has been moved since (as stock moves it)
        config = copy.deepcopy(task.world_info.world_config_dict)
        config["geoms"]["goal"]["pos"][:2] = task.world_info.reset_layout["goal"]
        goal_pos = task.model.body("goal").pos.copy()
        with training_assets():
            world = World(task.agent, task._obstacles, config)
            world.build()
        reference = world.model
        reference.body("goal").pos[:] = goal_pos
        task.agent.set_engine(task.world.engine)  # World() rebinds: give the env its own back
        for obstacle in task._obstacles:
            obstacle.set_engine(task.world.engine)
        for name in dir(reference):
            value = getattr(reference, name)
            if isinstance(value, np.ndarray) and not name.startswith(("cam_", "tex")):
                assert np.array_equal(value, getattr(task.model, name)), name
    assert task.build_counts["inplace"] == 2
    assert isinstance(task.data, mujoco.MjData)


@pytest.mark.parametrize(
    ("env_id", "seeds"),
    [
        ("SafetyCarButton1-v0", (0, 1)),  # ~70 layout restarts per reset
        ("SafetyPointGoal2-v0", tuple(range(20))),
        ("SafetyCarPush2-v0", tuple(range(20))),
        ("SafetyRacecarCircle1-v0", tuple(range(5))),  # the agent's own placement rectangle
    ],
)
def test_layout_sampler_is_exact(env_id: str, seeds: tuple[int, ...]) -> None:
    """Same layouts and the same generator state afterwards as the stock sampler."""
    from safebench.envs.fastnav.sampler import LayoutSampler

    env = _env(env_id, fast=True)
    env.reset(seed=0)
    generator = env.unwrapped.task.random_generator
    for seed in seeds:
        generator.set_random_seed(seed)
        expected = copy.deepcopy(generator.build_layout())
        state = generator.random_generator.get_state()
        generator.set_random_seed(seed)
        got = LayoutSampler(generator).build_layout()
        assert list(got) == list(expected)
        assert all(np.array_equal(got[k], expected[k]) for k in got)
        assert str(generator.random_generator.get_state()) == str(state)


def test_layout_sampler_with_several_placement_rectangles() -> None:
    """The weighted choice between rectangles draws and picks as NumPy's legacy choice."""
    import_safety_gymnasium()
    from safety_gymnasium.utils.random_generator import RandomGenerator

    from safebench.envs.fastnav.sampler import LayoutSampler

    placements = {
        "agent": ([(-1.0, -1.0, -0.2, 1.0), (0.3, -1.0, 1.0, 0.1)], 0.2),
        "goal": (None, 0.4),
        "hazard0": ([(-1.5, -1.5, 1.5, -0.5), (-1.5, 0.5, 1.5, 1.5), (9, 9, 9, 9)], 0.3),
        "hazard1": (None, 0.3),
    }
    generator = RandomGenerator()
    generator.set_placements_info(placements, (-1.5, -1.5, 1.5, 1.5), 0.05)
    sampler = LayoutSampler(generator)
    for seed in range(30):
        generator.set_random_seed(seed)
        expected = copy.deepcopy(generator.build_layout())
        state = str(generator.random_generator.get_state())
        generator.set_random_seed(seed)
        got = sampler.build_layout()
        assert all(np.array_equal(got[k], expected[k]) for k in expected)
        assert str(generator.random_generator.get_state()) == state
