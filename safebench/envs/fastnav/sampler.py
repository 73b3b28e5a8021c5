"""Layer 3: Safety-Gymnasium's layout rejection sampler, with the same draws, batched.

``RandomGenerator.build_layout`` places objects one after another: up to 100 tries per object
(each try draws an (x, y) uniformly from the object's placement rectangle and rejects it if it
is closer to an already placed object than their keepouts allow), and starts the whole layout
again when an object fails 100 times. Tightly packed tasks restart often: a CarButton1 reset
averages ~71 restarts and ~11.5k draws, each one a few NumPy scalar calls.

:class:`LayoutSampler` makes the same decisions on the same numbers, so it returns the same
layout and leaves the generator in the same state. It reads the doubles the stock draws would
consume straight from the ``RandomState`` in blocks, evaluates all 100 tries of an object at
once with the stock arithmetic, element by element:

* ``uniform(lo, hi)`` is ``lo + (hi - lo) * u`` (NumPy's legacy ``random_uniform``);
* ``choice(n, p=probs)`` between several placement rectangles consumes one double and picks
  ``searchsorted(cumsum(p) / cumsum(p)[-1], u, side='right')``, as NumPy's legacy ``choice``;
* a try is valid when ``sqrt(dx*dx + dy*dy) >= (keepout_other + margin) + keepout`` for every
  placed object (``np.sqrt(np.sum(np.square(xy - other)))`` summed in the same order);

then rewinds the generator and advances it by exactly the number of doubles used. Whether the
uniform formula matches this NumPy build bit for bit is checked once per process
(:func:`uniform_is_reproducible`); where it does not, the stock sampler runs instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["LayoutSampler", "uniform_is_reproducible"]

_TRIES = 100  # stock: tries per object before the layout is restarted
_LAYOUTS = 10000  # stock: layout restarts before ResamplingError
_FIRST = 8  # tries evaluated before the remaining ones (most objects fit in the first few)
_BLOCK = 4096  # doubles read from the generator at a time


@lru_cache(maxsize=1)
def uniform_is_reproducible() -> bool:
    """Whether ``lo + (hi - lo) * random_sample()`` equals ``RandomState.uniform`` here."""
    bounds = [(-1.5, 1.5), (-1.82, 1.3), (0.1234, 0.56789), (0.0, 2 * np.pi)]
    for seed in range(4):
        stock, mine = np.random.RandomState(seed), np.random.RandomState(seed)
        for lo, hi in bounds:
            expected = np.array([stock.uniform(lo, hi) for _ in range(256)])
            got = lo + (hi - lo) * mine.random_sample(256)
            if not np.array_equal(expected, got):
                return False
    return True


@dataclass(frozen=True)
class _Object:
    """One object's precomputed placement: rectangles (constrained by keepout) and keepout."""

    name: str
    keepout: float
    rects: np.ndarray  # (k, 4) float64: xmin, ymin, xmax, ymax after the keepout
    cdf: np.ndarray | None  # choice between rectangles (k > 1); None for a single one

    @property
    def draws(self) -> int:
        """Doubles consumed per try."""
        return 2 if self.cdf is None else 3


def _object(name: str, placements: Any, keepout: float, extents: Any) -> _Object:
    """The stock ``draw_placement`` arguments, resolved once (they never change)."""
    if placements is None:
        xmin, ymin, xmax, ymax = extents
        rect = (xmin + keepout, ymin + keepout, xmax - keepout, ymax - keepout)
        return _Object(name, keepout, np.array([rect], dtype=np.float64), None)
    rects = []
    for xmin, ymin, xmax, ymax in placements:
        rect = (xmin + keepout, ymin + keepout, xmax - keepout, ymax - keepout)
        if rect[0] > rect[2] or rect[1] > rect[3]:
            continue
        rects.append(rect)
    assert rects, "Failed to find any placements with satisfy keepout"  # stock's check
    if len(rects) == 1:
        return _Object(name, keepout, np.array(rects, dtype=np.float64), None)
    areas = [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in rects]
    probs = np.array(areas) / np.sum(areas)
    cdf = probs.cumsum()
    cdf /= cdf[-1]
    return _Object(name, keepout, np.array(rects, dtype=np.float64), cdf)


class _Placed:
    """The objects placed so far in one layout attempt, as arrays for the batched check."""

    def __init__(self, capacity: int) -> None:
        self.x = np.empty(capacity)
        self.y = np.empty(capacity)
        self.keepout = np.empty(capacity)
        self.n = 0

    def add(self, xy: np.ndarray, keepout: float) -> None:
        self.x[self.n], self.y[self.n], self.keepout[self.n] = xy[0], xy[1], keepout
        self.n += 1


class _Stream:
    """The generator's doubles, read ahead in blocks, then rewound to what was used."""

    def __init__(self, rng: np.random.RandomState) -> None:
        self.rng = rng
        self.start = rng.get_state()
        self.buffer = rng.random_sample(_BLOCK)
        self.used = 0

    def peek(self, offset: int, n: int) -> np.ndarray:
        """``n`` doubles starting ``offset`` past the consumed ones, without consuming them."""
        start = self.used + offset
        while start + n > len(self.buffer):
            self.buffer = np.concatenate([self.buffer, self.rng.random_sample(_BLOCK)])
        return self.buffer[start : start + n]

    def finish(self) -> None:
        """Leave the generator exactly ``used`` doubles past where it started."""
        self.rng.set_state(self.start)
        self.rng.random_sample(self.used)


class LayoutSampler:
    """Exact, batched ``RandomGenerator.build_layout`` for one task's placements."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator  # safety_gymnasium's RandomGenerator (seeded per episode)
        self.placements = generator.placements
        self.extents = generator.placements_extents
        self.margin = generator.placements_margin
        self.objects = [
            _object(name, placements, keepout, generator.placements_extents)
            for name, (placements, keepout) in generator.placements.items()
        ]

    def serves(self, generator: Any) -> bool:
        """Whether this sampler was set up from ``generator``'s current placements."""
        return (
            generator is self.generator
            and generator.placements is self.placements
            and generator.placements_extents is self.extents
            and generator.placements_margin == self.margin
        )

    def _tries(self, obj: _Object, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x, y of all tries of ``obj`` from their doubles (``u`` is (tries, draws))."""
        if obj.cdf is None:
            xmin, ymin, xmax, ymax = obj.rects[0]
        else:
            rects = obj.rects[obj.cdf.searchsorted(u[:, 0], side="right")]
            xmin, ymin, xmax, ymax = rects.T
            u = u[:, 1:]
        return xmin + (xmax - xmin) * u[:, 0], ymin + (ymax - ymin) * u[:, 1]

    def _place(self, obj: _Object, stream: _Stream, placed: _Placed) -> np.ndarray | None:
        """The first valid try of ``obj`` (consuming its draws), or None after 100 failures.

        Most objects fit within a few tries, so a short first batch saves evaluating all 100.
        """
        # stock: dist < other_keepout + margin + keepout, summed left to right
        threshold = placed.keepout[: placed.n] + self.margin + obj.keepout
        ox, oy = placed.x[None, : placed.n], placed.y[None, : placed.n]
        done = 0
        for batch in (_FIRST, _TRIES - _FIRST):
            u = stream.peek(done * obj.draws, batch * obj.draws).reshape(batch, obj.draws)
            xs, ys = self._tries(obj, u)
            dx, dy = xs[:, None] - ox, ys[:, None] - oy
            conflict = (np.sqrt(dx * dx + dy * dy) < threshold).any(axis=1)
            if not conflict.all():
                first = int(np.argmin(conflict))  # the first try without a conflict
                stream.used += (done + first + 1) * obj.draws
                return np.array([xs[first], ys[first]])
            done += batch
        stream.used += _TRIES * obj.draws
        return None

    def build_layout(self) -> dict[str, np.ndarray]:
        """Same layout, same generator state afterwards, as the stock ``build_layout``."""
        stream = _Stream(self.generator.random_generator)
        try:
            for _ in range(_LAYOUTS):
                layout = self._sample(stream)
                if layout is not None:
                    self.generator.layout = layout
                    return layout
        finally:
            stream.finish()
        from safety_gymnasium.utils.common_utils import ResamplingError

        raise ResamplingError("Failed to sample layout of objects")

    def _sample(self, stream: _Stream) -> dict[str, np.ndarray] | None:
        layout: dict[str, np.ndarray] = {}
        placed = _Placed(len(self.objects))
        for obj in self.objects:
            xy = self._place(obj, stream, placed)
            if xy is None:
                return None
            layout[obj.name] = xy
            placed.add(xy, obj.keepout)
        return layout
