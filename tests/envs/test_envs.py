"""The env factory: Safety-Gymnasium tasks on this Python, custom envs, and clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from safebench.envs.factory import EnvError, make_env, make_vector_env, safety_gymnasium_ids

TASKS = [
    "SafetyPointGoal1-v0",
    "SafetyCarButton1-v0",
    "SafetyRacecarCircle1-v0",
    "SafetyPointPush1-v0",
    "SafetyHopperVelocity-v1",
    "SafetyAntVelocity-v1",
]


@pytest.mark.parametrize("env_id", TASKS)
def test_safety_gymnasium_task_steps_with_cost(env_id: str) -> None:
    env = make_env(env_id)
    obs, _ = env.reset(seed=3)
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
    env.action_space.seed(3)
    costs = []
    for _ in range(300):
        obs, reward, cost, term, trunc, _ = env.step(env.action_space.sample())
        assert np.isfinite(reward) and np.isfinite(obs).all()
        assert cost >= 0.0
        costs.append(cost)
        if term or trunc:
            env.reset()
    assert env.max_episode_steps in (500, 1000)
    env.close()
    # The cost signal is real: the same seeded action sequence gives the same costs.
    env2 = make_env(env_id)
    env2.reset(seed=3)
    env2.action_space.seed(3)
    costs2 = [env2.step(env2.action_space.sample())[2] for _ in range(300)]
    assert costs2[:50] == costs[:50]


def test_navigation_tasks_incur_cost_under_random_actions() -> None:
    # PointGoal1 scatters hazards around the start: some random episodes enter them.
    env = make_env("SafetyPointGoal1-v0")
    totals = []
    for seed in range(3):
        env.reset(seed=seed)
        env.action_space.seed(seed)
        totals.append(sum(env.step(env.action_space.sample())[2] for _ in range(1000)))
    assert max(totals) > 0, totals


def test_all_navigation_and_velocity_ids_are_listed() -> None:
    ids = set(safety_gymnasium_ids())
    for robot in ("Point", "Car", "Racecar", "Doggo"):
        for task in ("Goal", "Button", "Push", "Circle"):
            for level in (0, 1, 2):
                assert f"Safety{robot}{task}{level}-v0" in ids
    for agent in ("Ant", "HalfCheetah", "Hopper", "Humanoid", "Swimmer", "Walker2d"):
        assert f"Safety{agent}Velocity-v1" in ids


def test_import_is_quiet_and_works_on_this_python() -> None:
    code = (
        "from safebench.envs.factory import make_env; "
        "make_env('SafetyHopperVelocity-v1').reset(seed=0)"
    )
    out = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout == "" and out.stderr == "", out.stderr


@pytest.mark.parametrize("cls", ["SixTupleWalk", "FiveTupleWalk"])
def test_custom_env_in_both_step_apis(cls: str) -> None:
    env = make_env(f"tests.envs_fixture:{cls}", length=4)
    env.reset(seed=0)
    out = [env.step(np.array([1.0])) for _ in range(4)]
    assert [o[1] for o in out] == [1.0] * 4
    assert [o[2] for o in out] == [0.0, 1.0, 1.0, 1.0]  # |pos| > 1 from the second step
    assert [o[4] for o in out] == [False, False, False, True]


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("SafetyPointGaol1-v0", "Did you mean: SafetyPointGoal1-v0"),
        ("NoSuchTask-v0", "unknown env id"),
        ("no_such_module_xyz:Env", "cannot import module 'no_such_module_xyz'"),
        ("tests.envs_fixture:Missing", "has no attribute 'Missing'"),
        ("tests.envs_fixture:NotAnEnv", "is not an environment"),
        ("safebench/NoSuchCMDP-v0", "unknown built-in env"),
    ],
)
def test_bad_env_ids_raise_clear_errors(env_id: str, message: str) -> None:
    with pytest.raises(EnvError, match=message.replace("(", r"\(")):
        make_env(env_id)


def test_env_without_cost_is_rejected_on_first_step() -> None:
    env = make_env("tests.envs_fixture:NoCostWalk")
    env.reset(seed=0)
    with pytest.raises(EnvError, match="never reports a cost"):
        env.step(np.array([0.5]))


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("SafetyPointGaol1-v0", "unknown env id"),
        ("no_such_module_xyz:Env", "cannot import module"),
        ("tests.envs_fixture:NotAnEnv", "is not an environment"),
        ("tests.envs_fixture:NoCostWalk", "never reports a cost"),
    ],
)
def test_cli_bad_env_exit_code_2_without_traceback(env_id: str, message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "safebench.cli", "check-env", env_id, "--steps", "5"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1


def test_sync_vector_env_autoresets_and_returns_final_obs() -> None:
    vec = make_vector_env("tests.envs_fixture:SixTupleWalk", 3, length=2)
    obs = vec.reset(seed=0)
    assert obs.shape == (3, 1)
    vec.step(np.ones((3, 1)))
    obs, _rew, cost, term, trunc, final = vec.step(np.ones((3, 1)))
    assert trunc.all() and not term.any()
    np.testing.assert_array_equal(final, np.full((3, 1), 2.0))  # last obs of the episode
    np.testing.assert_array_equal(obs, np.zeros((3, 1)))  # first obs of the next episode
    np.testing.assert_array_equal(cost, np.ones(3))


def test_async_vector_env_matches_sync() -> None:
    sync = make_vector_env("SafetyHopperVelocity-v1", 2)
    asyn = make_vector_env("SafetyHopperVelocity-v1", 2, asynchronous=True)
    try:
        np.testing.assert_array_equal(sync.reset(seed=5), asyn.reset(seed=5))
        rng = np.random.default_rng(0)
        for _ in range(20):
            a = rng.uniform(-1, 1, (2, 3)).astype(np.float32)
            s_out, a_out = sync.step(a), asyn.step(a)
            for x, y in zip(s_out, a_out):
                np.testing.assert_allclose(x, y)
    finally:
        sync.close()
        asyn.close()


@pytest.mark.parametrize("asynchronous", [False, True])
def test_vector_env_state_restore_reproduces_the_future_exactly(asynchronous: bool) -> None:
    # Hopper falls within tens of random steps, so episodes end (and re-seed) in between.
    vec = make_vector_env("SafetyHopperVelocity-v1", 2, asynchronous=asynchronous)
    rng = np.random.default_rng(0)
    vec.reset(seed=4)
    for _ in range(150):
        vec.step(rng.uniform(-1, 1, (2, 3)))
    state = vec.state()
    actions = rng.uniform(-1, 1, (100, 2, 3))
    future = [vec.step(a) for a in actions]
    ends = sum(int((o[3] | o[4]).sum()) for o in future)
    vec.close()
    fresh = make_vector_env("SafetyHopperVelocity-v1", 2, asynchronous=asynchronous)
    try:
        fresh.restore(state)
        replay = [fresh.step(a) for a in actions]
    finally:
        fresh.close()
    assert ends > 0
    for x, y in zip(future, replay):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)


def test_episode_seeds_are_deterministic_and_distinct() -> None:
    from safebench.envs.factory import episode_seed

    seeds = {
        episode_seed(7, env, ep, stream)
        for env in range(4)
        for ep in range(50)
        for stream in (0, 1)
    }
    assert len(seeds) == 400
    assert episode_seed(7, 1, 2, 0) == episode_seed(7, 1, 2, 0) != episode_seed(8, 1, 2, 0)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_vector_env_reports_tracked_info_flags(asynchronous: bool) -> None:
    """Only the flags asked for, per env and step: the fixture sets info['goal_met'] every
    third step of an episode (t = 3, 6), and its first observation component is t."""
    vec = make_vector_env("tests.envs_fixture:GoalWalk", 2, asynchronous=asynchronous)
    vec.reset(0)
    vec.step(np.zeros((2, 1), np.float32))
    assert vec.info_flags == {}  # nothing tracked by default
    vec.track_info_flags(["goal_met", "absent"])
    for _ in range(20):
        obs, _, _, term, trunc, final = vec.step(np.zeros((2, 1), np.float32))
        t = np.where(term | trunc, final[:, 0], obs[:, 0])  # the step's own t
        np.testing.assert_array_equal(vec.info_flags["goal_met"], t % 3 == 0)
        np.testing.assert_array_equal(vec.info_flags["absent"], [False, False])
    vec.close()


def test_safety_gymnasium_goal_met_reaches_the_tracked_flags() -> None:
    """A real Goal task: the agent is moved onto the goal (Newton steps on its slide joints),
    and the next step reports info['goal_met'] (the goal is resampled, the episode goes on)."""
    import mujoco

    vec = make_vector_env("SafetyPointGoal1-v0", 1)
    vec.track_info_flags(["goal_met"])
    vec.reset(0)
    zero = np.zeros((1, 2), np.float32)
    vec.step(zero)
    assert not vec.info_flags["goal_met"][0]
    task = vec.envs[0].env.unwrapped.task  # type: ignore[attr-defined]
    model, data = task.model, task.data
    goal = task.goal.pos[:2].copy()
    for _ in range(3):
        base, jac = task.agent.pos[:2].copy(), np.zeros((2, 2))
        for k in range(2):  # the x / y slide joints move the agent along its own axes
            data.qpos[k] += 1e-2
            mujoco.mj_forward(model, data)
            jac[:, k] = (task.agent.pos[:2] - base) / 1e-2
            data.qpos[k] -= 1e-2
        data.qpos[:2] += np.linalg.solve(jac, goal - base)
        mujoco.mj_forward(model, data)
    assert task.dist_goal() < task.goal.size
    _, rew, _, term, trunc, _ = vec.step(zero)
    assert vec.info_flags["goal_met"][0] and not (term[0] or trunc[0])
    assert rew[0] > 1.0  # the goal bonus (reward_goal = 1) was paid
    vec.close()
