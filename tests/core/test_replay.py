"""Tests for safebench.core.replay."""

from __future__ import annotations

import numpy as np
import pytest

from safebench.core.replay import ReplayBuffer

OBS_DIM, ACT_DIM = 3, 2


def _batch(ids: np.ndarray) -> dict[str, np.ndarray]:
    """Transitions whose every field encodes the transition id, to check row alignment."""
    ids = np.asarray(ids, dtype=np.float32)
    return {
        "obs": np.stack([ids, ids + 0.1, ids + 0.2], axis=1),
        "act": np.stack([-ids, -ids - 0.5], axis=1),
        "reward": ids * 10,
        "cost": ids * 100,
        "next_obs": np.stack([ids + 1, ids + 1.1, ids + 1.2], axis=1),
        "terminated": (ids.astype(int) % 3 == 0),
        "goal_met": (ids.astype(int) % 4 == 1),
    }


def _stored_ids(buf: ReplayBuffer) -> np.ndarray:
    return buf.state_dict()["obs"][:, 0]


def test_add_and_sample_keep_transitions_aligned() -> None:
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=10)
    assert len(buf) == 0
    with pytest.raises(ValueError, match="empty"):
        buf.sample(1, np.random.default_rng(0))
    buf.add_batch(**_batch(np.arange(4)))
    assert len(buf) == 4
    sample = buf.sample(500, np.random.default_rng(0))
    assert set(sample) == {"obs", "act", "reward", "cost", "next_obs", "terminated", "goal_met"}
    ids = sample["obs"][:, 0]
    assert sample["obs"].shape == (500, OBS_DIM) and sample["act"].shape == (500, ACT_DIM)
    assert set(ids.tolist()) == {0.0, 1.0, 2.0, 3.0}  # uniform over the 4 filled slots only
    expected = _batch(ids.astype(int))
    for key, value in expected.items():
        np.testing.assert_allclose(sample[key], value.astype(np.float32), rtol=1e-6)
    assert sample["terminated"].dtype == sample["goal_met"].dtype == np.float32
    sample["obs"][:] = -1  # samples are copies
    assert _stored_ids(buf).min() == 0.0


def test_wrap_around_overwrites_oldest_first() -> None:
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=5)
    buf.add_batch(**_batch(np.arange(3)))
    buf.add_batch(**_batch(np.arange(3, 7)))
    assert len(buf) == 5
    # Slots 0..4 after writing ids 0..6 in order into a ring of 5.
    np.testing.assert_array_equal(_stored_ids(buf), [5, 6, 2, 3, 4])
    assert buf.state_dict()["ptr"] == 2
    ids = buf.sample(300, np.random.default_rng(1))["obs"][:, 0]
    assert set(ids.tolist()) == {2.0, 3.0, 4.0, 5.0, 6.0}


def test_batch_larger_than_capacity_equals_sequential_adds() -> None:
    big, seq = ReplayBuffer(OBS_DIM, ACT_DIM, 4), ReplayBuffer(OBS_DIM, ACT_DIM, 4)
    big.add_batch(**_batch(np.arange(1)))
    seq.add_batch(**_batch(np.arange(1)))
    big.add_batch(**_batch(np.arange(1, 11)))
    for i in range(1, 11):
        seq.add_batch(**_batch(np.array([i])))
    s_big, s_seq = big.state_dict(), seq.state_dict()
    assert s_big["ptr"] == s_seq["ptr"] == 3 and len(big) == 4
    for key in ("obs", "act", "reward", "cost", "next_obs", "terminated", "goal_met"):
        np.testing.assert_array_equal(s_big[key], s_seq[key])
    np.testing.assert_array_equal(_stored_ids(big), [8, 9, 10, 7])


@pytest.mark.parametrize("n_before", [3, 12])  # partially filled, and wrapped
def test_state_round_trip_is_exact(n_before: int) -> None:
    original = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=8)
    original.add_batch(**_batch(np.arange(n_before)))
    restored = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=8)
    restored.add_batch(**_batch(np.arange(100, 108)))  # stale content must be replaced
    restored.load_state_dict(original.state_dict())
    assert len(restored) == len(original)
    for buf in (original, restored):
        buf.add_batch(**_batch(np.arange(50, 53)))
    a = original.sample(64, np.random.default_rng(7))
    b = restored.sample(64, np.random.default_rng(7))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(_stored_ids(restored), _stored_ids(original))

    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(OBS_DIM, ACT_DIM, capacity=9).load_state_dict(original.state_dict())


def test_add_batch_rejects_mismatched_rows() -> None:
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=4)
    batch = _batch(np.arange(2))
    batch["reward"] = np.zeros(3, dtype=np.float32)
    with pytest.raises(ValueError, match="reward"):
        buf.add_batch(**batch)


def test_goal_met_defaults_to_false_and_old_checkpoints_load() -> None:
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=4)
    batch = _batch(np.arange(3))
    del batch["goal_met"]
    buf.add_batch(**batch)
    state = buf.state_dict()
    assert not state["goal_met"].any()
    state["goal_met"][:] = 1.0
    del state["goal_met"]  # a checkpoint written before the flag was stored
    restored = ReplayBuffer(OBS_DIM, ACT_DIM, capacity=4)
    restored.add_batch(**_batch(np.arange(1, 5)))
    restored.load_state_dict(state)
    assert not restored.state_dict()["goal_met"].any()
    np.testing.assert_array_equal(_stored_ids(restored), [0, 1, 2])
