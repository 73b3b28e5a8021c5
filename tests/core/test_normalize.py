"""Tests for safebench.core.normalize."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest
import torch

from safebench.core.normalize import GymnasiumRunningMeanStd, RunningMeanStd, make_normalizer


def _stream(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [1, 3, 17, 1, 64, 5]
    return [rng.normal(loc=[3.0, -2.0, 1e3], scale=[0.5, 4.0, 10.0], size=(n, 3)) for n in sizes]


def test_statistics_equal_those_of_all_data_seen() -> None:
    rms = RunningMeanStd((3,))
    seen: list[np.ndarray] = []
    for batch in _stream():
        rms.update(batch)
        seen.append(batch)
        data = np.concatenate(seen)
        assert rms.count == len(data)
        np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-12)
        if len(data) > 1:
            np.testing.assert_allclose(rms.var, data.var(0, ddof=1), rtol=1e-10)
            np.testing.assert_allclose(rms.std, np.maximum(data.std(0, ddof=1), 1e-2), rtol=1e-10)


def test_statistics_do_not_depend_on_batch_sizes() -> None:
    data = np.concatenate(_stream(1))
    whole, chunks, singles = RunningMeanStd((3,)), RunningMeanStd((3,)), RunningMeanStd((3,))
    whole.update(data)
    for chunk in np.array_split(data, 7):
        chunks.update(chunk)
    for row in data:
        singles.update(row)  # a single sample of the per-sample shape is accepted
    for other in (chunks, singles):
        assert other.count == whole.count
        np.testing.assert_allclose(other.mean, whole.mean, rtol=1e-12)
        np.testing.assert_allclose(other.var, whole.var, rtol=1e-10)


def test_normalize_semantics() -> None:
    rms = RunningMeanStd((2,), epsilon=1e-2, clip=5.0)
    raw = np.array([[1.5, -7.0]])
    out = rms.normalize(raw)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, raw.astype(np.float32))  # no statistics yet: unchanged
    rms.update(raw)
    np.testing.assert_array_equal(rms.normalize(raw), raw.astype(np.float32))  # one sample

    rms.update(np.array([[2.5, -7.0], [3.5, -7.0]]))  # column 0: mean 2.5, sd 1; column 1: const
    x = np.array([[4.0, -7.0], [100.0, -6.99], [-100.0, -7.01]])
    # Column 1 has zero variance: std is floored at epsilon, so ±0.01 maps to ±1.
    expected = np.array([[1.5, 0.0], [5.0, 1.0], [-5.0, -1.0]], dtype=np.float32)
    np.testing.assert_allclose(rms.normalize(x), expected, atol=1e-5)
    np.testing.assert_array_equal(rms.std, [1.0, 1e-2])


def test_update_normalize_matches_omnisafe_normalizer(
    omnisafe_module: Callable[[str], ModuleType],
) -> None:
    reference = omnisafe_module("common/normalizer.py").Normalizer((3,), clip=5)
    rms = RunningMeanStd((3,), epsilon=1e-2, clip=5.0)
    for batch in _stream(2):
        expected = reference.normalize(torch.as_tensor(batch, dtype=torch.float32)).numpy()
        np.testing.assert_allclose(rms.update_normalize(batch), expected, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(rms.mean, reference.mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(rms.std, reference.std.numpy(), rtol=1e-4)


def test_state_dict_round_trip_continues_identically() -> None:
    batches = _stream(3)
    uninterrupted = RunningMeanStd((3,), clip=3.0)
    first = RunningMeanStd((3,), clip=3.0)
    for batch in batches[:3]:
        uninterrupted.update(batch)
        first.update(batch)
    state = first.state_dict()
    first.update(batches[3])  # the saved state must not alias live arrays
    resumed = RunningMeanStd((3,))
    resumed.load_state_dict(state)
    assert resumed.clip == 3.0
    for batch in batches[3:]:
        uninterrupted.update(batch)
        resumed.update(batch)
    assert resumed.count == uninterrupted.count
    np.testing.assert_array_equal(resumed.mean, uninterrupted.mean)
    np.testing.assert_array_equal(resumed.var, uninterrupted.var)
    x = batches[0]
    np.testing.assert_array_equal(resumed.normalize(x), uninterrupted.normalize(x))

    with pytest.raises(ValueError, match="shape"):
        RunningMeanStd((4,)).load_state_dict(state)


def test_update_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="expected shape"):
        RunningMeanStd((3,)).update(np.zeros((5, 2)))


# ---- obs_normalizer: gymnasium (the official C-TRPO code's NormalizeObservation) ----------


class OfficialNormalizer:
    """Gymnasium 0.28.1 ``wrappers/normalize.py`` in plain NumPy, as the official C-TRPO code
    runs it: ``SafeNormalizeObservation.step`` (milosen/ctrpo common/wrappers.py:45-49) calls
    ``normalize(obs)`` on the vector env's batch, which updates ``RunningMeanStd`` (lines 7-45)
    with the batch and then returns ``(obs - mean) / np.sqrt(var + 1e-8)`` (lines 92-95); the
    code then casts it to float32 (``torch.as_tensor(..., dtype=torch.float32)``)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.mean = np.zeros(shape, "float64")
        self.var = np.ones(shape, "float64")
        self.count = 1e-4

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        batch_mean = np.mean(obs, axis=0)
        batch_var = np.var(obs, axis=0)
        batch_count = obs.shape[0]
        delta = batch_mean - self.mean
        tot_count = self.count + batch_count
        new_mean = self.mean + delta * batch_count / tot_count
        m_a = self.var * self.count
        m_b = batch_var * batch_count
        M2 = m_a + m_b + np.square(delta) * self.count * batch_count / tot_count
        self.mean, self.var, self.count = new_mean, M2 / tot_count, tot_count
        return ((obs - self.mean) / np.sqrt(self.var + 1e-8)).astype(np.float32)


def _vector_stream(seed: int = 4) -> list[np.ndarray]:
    """Batches as a vector env returns them: 10 envs a step (the official num_envs), and
    single-env batches (its num_envs = 1 path: ``normalize(np.array([obs]))``)."""
    rng = np.random.default_rng(seed)
    sizes = [10] * 30 + [1] * 20 + [10, 3, 10]
    return [rng.normal(loc=[3.0, -2.0, 1e3], scale=[0.5, 4.0, 10.0], size=(n, 3)) for n in sizes]


def test_gymnasium_normalizer_is_bit_identical_to_the_official_arithmetic() -> None:
    official = OfficialNormalizer((3,))
    ours = GymnasiumRunningMeanStd((3,))
    for batch in _vector_stream():
        expected = official.normalize(batch)
        ours.update(batch)
        out = ours.normalize(batch)  # update, then normalise the same batch
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(ours.mean, official.mean)
        np.testing.assert_array_equal(ours.var, official.var)
        assert ours.count == official.count
    assert official.count == 1e-4 + 30 * 10 + 20 + 23
    # never clipped: a far outlier stays far
    assert np.abs(ours.normalize(np.array([[3.0, -2.0, 1e5]]))).max() > 1e3


def test_gymnasium_normalizer_matches_installed_gymnasium_0_28() -> None:
    """The very class the official code imports (``gymnasium.wrappers.normalize``), where the
    locked Gymnasium is the version its requirements pin through safety-gymnasium 1.0.0."""
    import gymnasium
    from gymnasium.wrappers.normalize import RunningMeanStd as GymRunningMeanStd

    if gymnasium.__version__ != "0.28.1":
        pytest.skip(f"gymnasium {gymnasium.__version__} is not the official code's 0.28.1")
    reference = GymRunningMeanStd(shape=(3,))
    ours = GymnasiumRunningMeanStd((3,))
    for batch in _vector_stream(5):
        reference.update(batch)
        expected = (batch - reference.mean) / np.sqrt(reference.var + 1e-8)
        np.testing.assert_array_equal(ours.update_normalize(batch), expected.astype(np.float32))
        np.testing.assert_array_equal(ours.var, reference.var)
        assert ours.count == reference.count


def test_gymnasium_normalizer_from_its_prior() -> None:
    """Gymnasium starts from mean 0, var 1 with a count of 1e-4: the first sample is already
    normalised, to about ±0.01·|x|/sqrt(1 + x²) per coordinate (close to 0), unlike
    OmniSafe's normaliser, which passes it through unchanged."""
    rms = GymnasiumRunningMeanStd((2,))
    out = rms.update_normalize(np.array([5.0, -3.0]))  # a single sample of the sample shape
    n = 1 + 1e-4
    mean = np.array([5.0, -3.0]) / n
    var = (1e-4 + np.array([25.0, 9.0]) * 1e-4 / n) / n
    np.testing.assert_allclose(out, (np.array([5.0, -3.0]) - mean) / np.sqrt(var + 1e-8), 1e-6)
    np.testing.assert_allclose(np.abs(out), 0.01 * np.array([5.0, 3.0]) / np.sqrt([26, 10]), 1e-3)
    assert not np.array_equal(RunningMeanStd((2,)).update_normalize([5.0, -3.0]), out)


def test_gymnasium_state_dict_round_trip_continues_identically() -> None:
    batches = _vector_stream(6)
    uninterrupted, first = GymnasiumRunningMeanStd((3,)), GymnasiumRunningMeanStd((3,))
    for batch in batches[:5]:
        uninterrupted.update(batch)
        first.update(batch)
    state = first.state_dict()
    first.update(batches[5])  # the saved state must not alias live arrays
    resumed = GymnasiumRunningMeanStd((3,))
    resumed.load_state_dict(state)
    for batch in batches[5:]:
        np.testing.assert_array_equal(
            resumed.update_normalize(batch), uninterrupted.update_normalize(batch)
        )
    assert resumed.count == uninterrupted.count
    np.testing.assert_array_equal(resumed.var, uninterrupted.var)

    # a checkpoint of one kind is never loaded into the other
    with pytest.raises(ValueError, match="'gymnasium' normaliser"):
        RunningMeanStd((3,)).load_state_dict(state)
    with pytest.raises(ValueError, match="'omnisafe' normaliser"):
        GymnasiumRunningMeanStd((3,)).load_state_dict(RunningMeanStd((3,)).state_dict())


def test_make_normalizer() -> None:
    assert isinstance(make_normalizer("omnisafe", (3,)), RunningMeanStd)
    assert isinstance(make_normalizer("gymnasium", (3,)), GymnasiumRunningMeanStd)
    with pytest.raises(ValueError, match="unknown"):
        make_normalizer("other", (3,))  # type: ignore[arg-type]
