"""The on-policy protocol options that follow the official C-TRPO code (milosen/ctrpo):
``obs_normalizer: gymnasium`` (when the normaliser updates, on what) and
``truncation_bootstrap: raw`` (which observation the critics see at a time-out)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from safebench import registry
from safebench.core.normalize import make_normalizer
from safebench.core.onpolicy import OnPolicyAlgorithm
from safebench.core.rollout import Collector
from safebench.envs.factory import VectorCMDP, make_vector_env
from tests.core.test_normalize import OfficialNormalizer

WALK = "tests.envs_fixture:SixTupleWalk"  # 1-D position, truncated after 10 steps
N, HORIZON = 2, 25  # two time-outs per env, and an epoch cut mid-episode


def _algo(venv: VectorCMDP, **overrides: Any) -> OnPolicyAlgorithm:
    config = registry.resolve_config("cpo", overrides)
    algo = registry.get("cpo").cls(
        venv.observation_space, venv.action_space, config, cost_limit=1.0, seed=0, device="cpu"
    )
    assert isinstance(algo, OnPolicyAlgorithm)
    return algo


def _recorded(venv: VectorCMDP) -> list[tuple[np.ndarray, ...]]:
    """Every ``(raw obs, terminated, truncated, final obs)`` the venv returns, its reset first."""
    seen: list[tuple[np.ndarray, ...]] = []
    reset, step = venv.reset, venv.step

    def on_reset(seed: int, stream: int = 0) -> np.ndarray:
        raw = reset(seed, stream=stream)
        seen.append((raw.copy(), np.zeros(N, bool), np.zeros(N, bool), raw.copy()))
        return raw

    def on_step(action: np.ndarray) -> tuple[np.ndarray, ...]:
        out = step(action)
        raw, _, _, term, trunc, final = out
        seen.append((raw.copy(), term.copy(), trunc.copy(), final.copy()))
        return out

    venv.reset = on_reset  # type: ignore[method-assign,assignment]
    venv.step = on_step  # type: ignore[method-assign,assignment]
    return seen


def test_gymnasium_normaliser_updates_with_each_vector_step_then_normalises_it() -> None:
    """As ``SafeNormalizeObservation`` around the official vector env: the reset batch and then
    every step's batch (an ended env's *reset* observation in it, never its final one) are
    merged into the statistics before that batch is normalised and acted on."""
    venv = make_vector_env(WALK, N)
    seen = _recorded(venv)
    collector = Collector(venv, seed=0, obs_normalizer="gymnasium")
    rollout, stats = collector.collect(_algo(venv), N * HORIZON)
    assert stats.episodes == 2 * N
    official = OfficialNormalizer((1,))
    expected = np.stack([official.normalize(raw.astype(np.float64)) for raw, *_ in seen])
    np.testing.assert_array_equal(rollout.obs.reshape(HORIZON, N, 1), expected[:HORIZON])
    np.testing.assert_array_equal(collector.normalize(seen[-1][0]), expected[HORIZON])
    assert official.count == 1e-4 + N * (HORIZON + 1)
    assert np.abs(expected).max() > 1.5  # the walk leaves the unit interval


def _expected_bootstrap_obs(
    seen: list[tuple[np.ndarray, ...]], normalizer: str, bootstrap: str
) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """The (step, env) of each time-out, the observation its bootstrap value should come from,
    and the other candidate (raw where normalised is expected and the other way round)."""
    stats = make_normalizer(normalizer, (1,))  # type: ignore[arg-type]
    where, raw_rows, norm_rows = [], [], []
    for t, (raw, term, trunc, final) in enumerate(seen):
        stats.update(raw)  # the step's batch first, as the collector does
        for i in np.flatnonzero(trunc & ~term):
            where.append((t - 1, int(i)))  # seen[0] is the reset
            raw_rows.append(final[i].astype(np.float32))
            norm_rows.append(stats.normalize(final[i : i + 1])[0])
    raw_obs, norm_obs = np.stack(raw_rows), np.stack(norm_rows)
    return (where, raw_obs, norm_obs) if bootstrap == "raw" else (where, norm_obs, raw_obs)


@pytest.mark.parametrize("normalizer", ["omnisafe", "gymnasium"])
@pytest.mark.parametrize("bootstrap", ["normalized", "raw"])
def test_time_out_bootstraps_from_the_chosen_final_observation(
    normalizer: str, bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``raw``: the official code's ``policy.step(info["final_observation"][idx])``
    (milosen/ctrpo algorithms/c-trpo.py:478-482), an observation ``SafeNormalizeObservation``
    never normalised; ``normalized``: OmniSafe's, normalised by its ``ObsNormalize``."""
    venv = make_vector_env(WALK, N)
    seen = _recorded(venv)
    collector = Collector(
        venv,
        seed=0,
        obs_normalizer=normalizer,  # type: ignore[arg-type]
        truncation_bootstrap=bootstrap,  # type: ignore[arg-type]
    )
    algo = _algo(venv)
    critic_inputs: list[np.ndarray] = []
    values: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] = algo.values

    def spy(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        critic_inputs.append(obs.copy())
        return values(obs)

    monkeypatch.setattr(algo, "values", spy)
    rollout, _ = collector.collect(algo, N * HORIZON)
    where, expected, other = _expected_bootstrap_obs(seen, normalizer, bootstrap)
    assert where == [(9, 0), (9, 1), (19, 0), (19, 1)]
    assert np.abs(expected - other).min() > 1e-3  # the two choices differ on this data

    # What the critics saw beyond the stored observations and the epoch cut's next obs:
    (inputs,) = critic_inputs
    np.testing.assert_array_equal(inputs[HORIZON * N + N :], expected)
    # ... and the value target the time-out got from it: r + γ·V(that observation).
    v_r, v_c = values(expected)
    cfg = algo.config
    for k, (t, i) in enumerate(where):
        flat = t * N + i
        r_t = rollout.act.reshape(HORIZON, N)[t, i].clip(-1, 1)  # SixTupleWalk: reward = a
        np.testing.assert_allclose(rollout.target_r[flat], r_t + cfg.gamma * v_r[k], rtol=1e-6)
        cost_t = float(abs(seen[t + 1][3][i, 0]) > 1)  # cost = 1 where |position| > 1
        np.testing.assert_allclose(
            rollout.target_c[flat], cost_t + cfg.cost_gamma * v_c[k], rtol=1e-6, atol=1e-7
        )


def test_collector_rejects_an_unknown_bootstrap() -> None:
    with pytest.raises(ValueError, match="truncation_bootstrap"):
        Collector(make_vector_env(WALK, 1), 0, truncation_bootstrap="final")  # type: ignore[arg-type]
