"""Safety-Gymnasium navigation tasks, fast and bit-identical to stock safety-gymnasium 1.0.0.

Stock navigation envs spend most of their time outside the physics: every reset compiles a
new MuJoCo model from XML (with a 190 MB skybox texture that only a camera ever sees), and
PyYAML re-reads the assets file on every build. This package changes *how* a reset builds its
world, never *what* the env computes, in layers, each verified bit for bit before the next:

1. :mod:`.assets`: the training build leaves the render-only skybox out (a 32x32 stand-in in
   the same texture slot) and parses ``assets.yaml`` once per process;
2. :mod:`.inplace` / :mod:`.task`: the model is compiled once per env; each new layout is
   written into it (poses, free-joint ``qpos0``, weld poses, then ``mj_setConst``), with a
   full rebuild wherever that is not possible (see :mod:`.inplace` for the cases);
3. :mod:`.sampler`: the layout rejection sampler makes the same random draws, batched;
4. :mod:`.step` / :mod:`.observe`: the step path, same arithmetic without per-step name
   lookups or the observation-space assert.

:mod:`.builder` puts it together behind ``safety_gymnasium.make``'s own wrappers.

**Contract.** For the same seeds and actions, a fresh fast env returns the same observations,
rewards, costs, ``info`` entries, ``terminated`` and ``truncated`` as a fresh stock env — bit
for bit, on every episode, its first included. A stock env's very first reset runs one
``mj_forward`` fewer than its later ones (see :mod:`.task`), so its first episode differs from a
later episode with the same seed (~1e-14 in ``qacc`` at reset on CarGoal0; up to ~30 in the
observations of RacecarCircle1 within its first steps); a fast env takes the same first-reset
path on its first reset and the later-reset path after. safebench's resume replays an
episode's seed and actions into a fresh env, or into one reset once before where the episode
began with a later reset (:meth:`safebench.envs.factory.VectorCMDP.restore`), so it stays exact.

Which envs take the fast path: :func:`supports`. Everything else, and any env created with
``fast=False`` or a ``render_mode`` (rendering gets the full stock assets), is stock.
"""

from __future__ import annotations

import re
from typing import Any

from safebench.envs.fastnav.builder import make_fast

__all__ = ["make_fast", "supports"]

# Vector-observation navigation tasks (vision variants render their observations).
_FAST_RE = re.compile(r"^Safety(Point|Car|Racecar|Doggo|Ant)(Goal|Button|Push|Circle|Run)\d-v0$")


def supports(env_id: str, kwargs: dict[str, Any]) -> bool:
    """Whether ``env_id`` made with ``kwargs`` takes the fast path.

    Rendering (any ``render_mode``) and configs that observe or render pixels keep the stock
    build, whose skybox is real.
    """
    if not _FAST_RE.match(env_id) or kwargs.get("render_mode") is not None:
        return False
    config = kwargs.get("config") or {}
    return not (isinstance(config, dict) and config.get("observe_vision"))
