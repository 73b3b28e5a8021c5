"""Running mean / standard deviation for observation normalisation.

Two normalisers, selected by the on-policy config's ``obs_normalizer``:

* :class:`RunningMeanStd` (``omnisafe``, the default): the statistics of OmniSafe's
  ``Normalizer`` (used by its ``ObsNormalize`` wrapper with ``clip=5``): running mean,
  **sample** variance ``M2 / (n - 1)``, standard deviation floored at ``1e-2``, output clipped
  to ``[-clip, clip]``, and raw data returned while fewer than two samples have been seen.
* :class:`GymnasiumRunningMeanStd` (``gymnasium``): Gymnasium 0.28.1's ``NormalizeObservation``
  as the official C-TRPO code wraps its vector env with it: a prior count of ``1e-4`` with mean
  0 and variance 1, **population** variance, ``(x − μ) / sqrt(var + 1e-8)``, never clipped.

Both keep their statistics in NumPy float64 so that long runs do not drift, and return float32.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

ObsNormalizerKind = Literal["omnisafe", "gymnasium"]


def make_normalizer(kind: ObsNormalizerKind, shape: tuple[int, ...]) -> ObsNormalizer:
    """The normaliser of ``kind`` (the on-policy config's ``obs_normalizer``) with its defaults."""
    if kind == "gymnasium":
        return GymnasiumRunningMeanStd(shape)
    if kind == "omnisafe":
        return RunningMeanStd(shape)
    raise ValueError(f"unknown observation normaliser {kind!r}")


def _batch(x: npt.ArrayLike, shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
    """``x`` as a float64 batch ``(B, *shape)`` (a single ``shape`` sample becomes ``B = 1``)."""
    batch = np.asarray(x, dtype=np.float64)
    if batch.shape == shape:
        batch = batch[None]
    if batch.shape[1:] != shape:
        raise ValueError(f"expected shape (B, *{shape}), got {batch.shape}")
    return batch


class RunningMeanStd:
    """Streaming mean and variance merged batch by batch (Chan, Golub & LeVeque, 1979).

    For the stored statistics ``(n_a, μ_a, M2_a)`` and a batch with ``(n_b, μ_b, M2_b)``
    (``M2`` = sum of squared deviations from the mean), with ``δ = μ_b - μ_a``, ``n = n_a + n_b``:

        μ  = μ_a + δ · n_b / n
        M2 = M2_a + M2_b + δ² · n_a · n_b / n

    so the result equals the statistics of all data seen, whatever the batch sizes.

    Args:
        shape: shape of one sample, e.g. ``(obs_dim,)``.
        epsilon: floor on the standard deviation, ``std = max(sqrt(var), epsilon)``
            (OmniSafe: ``1e-2``).
        clip: normalised values are clipped to ``[-clip, clip]`` (OmniSafe obs wrapper: 5).
    """

    def __init__(
        self, shape: tuple[int, ...] = (), epsilon: float = 1e-2, clip: float = 5.0
    ) -> None:
        self.shape = tuple(shape)
        self.epsilon = float(epsilon)
        self.clip = float(clip)
        self.count = 0
        self.mean: npt.NDArray[np.float64] = np.zeros(self.shape, dtype=np.float64)
        self._m2: npt.NDArray[np.float64] = np.zeros(self.shape, dtype=np.float64)
        self._std: npt.NDArray[np.float64] | None = None

    @property
    def var(self) -> npt.NDArray[np.float64]:
        """Sample variance ``M2 / (n - 1)`` (zeros while ``n < 2``)."""
        if self.count < 2:
            return np.zeros(self.shape, dtype=np.float64)
        return self._m2 / (self.count - 1)

    @property
    def std(self) -> npt.NDArray[np.float64]:
        """``max(sqrt(var), epsilon)`` (cached until the next update)."""
        if self._std is None:
            self._std = np.maximum(np.sqrt(self.var), self.epsilon)
        return self._std

    def update(self, x: npt.ArrayLike) -> None:
        """Merge a batch ``x`` of shape ``(B, *shape)`` (a single ``shape`` sample is accepted)."""
        batch = _batch(x, self.shape)
        n_b = batch.shape[0]
        if n_b == 0:
            return
        if n_b == 1:
            # Welford's single-sample form of the same merge (M2_b = 0, μ_b = x):
            # δ·n_a/n = x − μ_new, so M2 += δ·(x − μ_new). The rollout calls this once per env
            # step, where the general form's reductions cost more than the env step itself.
            x1 = batch[0]
            self.count += 1
            delta = x1 - self.mean
            self.mean = self.mean + delta / self.count
            self._m2 = self._m2 + delta * (x1 - self.mean)
            self._std = None
            return
        mean_b = batch.mean(axis=0)
        m2_b = ((batch - mean_b) ** 2).sum(axis=0)
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + delta**2 * (self.count * n_b / n)
        self.count = n
        self._std = None

    def normalize(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """``clip((x - μ) / std, -clip, clip)`` as float32; ``x`` unchanged while ``n ≤ 1``.

        Pure: the statistics are not updated. OmniSafe updates *then* normalises each new
        observation; :meth:`update_normalize` does exactly that.
        """
        arr = np.asarray(x, dtype=np.float64)
        if self.count <= 1:
            return arr.astype(np.float32)
        out = (arr - self.mean) / self.std
        # Two ufuncs instead of np.clip: np.clip's Python wrapper costs more than the
        # arithmetic on one observation, and this runs once per env step.
        np.minimum(out, self.clip, out=out)
        np.maximum(out, -self.clip, out=out)
        return out.astype(np.float32)

    def update_normalize(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """:meth:`update` with ``x`` then :meth:`normalize` it (OmniSafe's order)."""
        self.update(x)
        return self.normalize(x)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit (arrays copied)."""
        return {
            "shape": self.shape,
            "epsilon": self.epsilon,
            "clip": self.clip,
            "count": self.count,
            "mean": self.mean.copy(),
            "m2": self._m2.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind", "omnisafe") != "omnisafe":
            raise ValueError(f"state of a {state['kind']!r} normaliser, expected 'omnisafe'")
        if tuple(state["shape"]) != self.shape:
            raise ValueError(f"state has shape {tuple(state['shape'])}, expected {self.shape}")
        self.epsilon = float(state["epsilon"])
        self.clip = float(state["clip"])
        self.count = int(state["count"])
        self.mean = np.array(state["mean"], dtype=np.float64).reshape(self.shape)
        self._m2 = np.array(state["m2"], dtype=np.float64).reshape(self.shape)
        self._std = None


class GymnasiumRunningMeanStd:
    """Gymnasium 0.28.1's ``NormalizeObservation`` statistics, operation for operation.

    The official C-TRPO code (milosen/ctrpo ``algorithms/baselines/common/env.py:55``) wraps its
    vector env in ``SafeNormalizeObservation`` (``common/wrappers.py:42-49``), Gymnasium's
    ``NormalizeObservation`` with a six-tuple ``step``. Its ``RunningMeanStd``
    (``gymnasium/wrappers/normalize.py:7-45``) starts from mean 0, variance 1 and a count of
    ``count_init = 1e-4`` and merges each batch of observations by its moments::

        δ = mean_b − μ,  n = count + n_b
        μ ← μ + δ·n_b / n
        var ← (var·count + var_b·n_b + δ²·count·n_b / n) / n          (var_b: np.var, ddof 0)

    and ``normalize`` (``normalize.py:92-95``) returns ``(x − μ) / sqrt(var + epsilon)`` with
    ``epsilon = 1e-8``, unclipped. The wrapper updates with every batch it returns, the reset
    observations included, *then* normalises that batch; :meth:`update` followed by
    :meth:`normalize` is that order. The expressions below are Gymnasium's, in its order, so
    that the statistics are bit-identical to it on the same float64 input.
    """

    def __init__(
        self, shape: tuple[int, ...] = (), count_init: float = 1e-4, epsilon: float = 1e-8
    ) -> None:
        self.shape = tuple(shape)
        self.epsilon = float(epsilon)
        self.mean: npt.NDArray[np.float64] = np.zeros(self.shape, dtype=np.float64)
        self.var: npt.NDArray[np.float64] = np.ones(self.shape, dtype=np.float64)
        self.count = float(count_init)

    def update(self, x: npt.ArrayLike) -> None:
        """Merge a batch ``x`` of shape ``(B, *shape)`` (a single ``shape`` sample is accepted)."""
        batch = _batch(x, self.shape)
        batch_count = batch.shape[0]
        if batch_count == 0:
            return
        if batch_count == 1:
            # np.mean of one row is the row and np.var is exactly 0: skip both reductions
            # (this runs every env step); the merge below is unchanged, so the result is too.
            batch_mean = batch[0]
            batch_var: npt.NDArray[np.float64] = np.zeros(self.shape, dtype=np.float64)
        else:
            batch_mean = np.mean(batch, axis=0)
            batch_var = np.var(batch, axis=0)
        mean, var, count = self.mean, self.var, self.count
        delta = batch_mean - mean
        tot_count = count + batch_count
        new_mean = mean + delta * batch_count / tot_count
        m_a = var * count
        m_b = batch_var * batch_count
        m2 = m_a + m_b + np.square(delta) * count * batch_count / tot_count
        self.mean, self.var, self.count = new_mean, m2 / tot_count, tot_count

    def normalize(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """``(x − μ) / sqrt(var + epsilon)`` in float64, returned as float32; no update."""
        arr = np.asarray(x, dtype=np.float64)
        return ((arr - self.mean) / np.sqrt(self.var + self.epsilon)).astype(np.float32)

    def update_normalize(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """:meth:`update` with ``x`` then :meth:`normalize` it (Gymnasium's order)."""
        self.update(x)
        return self.normalize(x)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit (arrays copied)."""
        return {
            "kind": "gymnasium",
            "shape": self.shape,
            "epsilon": self.epsilon,
            "count": self.count,
            "mean": self.mean.copy(),
            "var": self.var.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind", "omnisafe") != "gymnasium":
            raise ValueError(
                f"state of a {state.get('kind', 'omnisafe')!r} normaliser, expected 'gymnasium'"
            )
        if tuple(state["shape"]) != self.shape:
            raise ValueError(f"state has shape {tuple(state['shape'])}, expected {self.shape}")
        self.epsilon = float(state["epsilon"])
        self.count = float(state["count"])
        self.mean = np.array(state["mean"], dtype=np.float64).reshape(self.shape)
        self.var = np.array(state["var"], dtype=np.float64).reshape(self.shape)


ObsNormalizer = RunningMeanStd | GymnasiumRunningMeanStd
"""An observation normaliser the collectors use: ``count``, ``update``, ``normalize``,
``state_dict``, ``load_state_dict`` (``make_normalizer`` picks one by the config's kind)."""
