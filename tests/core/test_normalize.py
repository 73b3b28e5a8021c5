"""Tests for safebench.core.normalize."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest
import torch

from safebench.core.normalize import RunningMeanStd


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
