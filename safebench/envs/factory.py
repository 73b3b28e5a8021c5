"""Environment factory: one CMDP interface for Safety-Gymnasium, built-in and custom tasks.

Every environment safebench trains on is reached through :func:`make_env`, which returns a
:class:`CMDPEnv` with the Safety-Gymnasium step API::

    obs, info = env.reset(seed=seed)
    obs, reward, cost, terminated, truncated, info = env.step(action)

Three kinds of id are accepted:

* a Safety-Gymnasium task id (``SafetyPointGoal1-v0``, ``SafetyHopperVelocity-v1``, ...);
* a built-in CMDP with a known constrained optimum (``safebench/ContinuousTarget-v0``, ...);
* a custom class given as ``package.module:ClassName`` that follows either the
  Safety-Gymnasium 6-tuple step API or the Gymnasium 5-tuple API with ``info["cost"]``.

Safety-Gymnasium 1.0.0 declares dataclass fields with NumPy arrays as defaults, which Python
3.11 rejects at import (``mutable default ... is not allowed``). :func:`import_safety_gymnasium`
imports it with a narrowly scoped compatibility shim instead of editing site-packages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import re
import sys
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache, partial
from types import ModuleType
from typing import Any

import gymnasium  # imported quietly by safebench/__init__.py first
import numpy as np

from safebench.errors import UserError

__all__ = [
    "AsyncVectorCMDP",
    "CMDPEnv",
    "EnvError",
    "SyncVectorCMDP",
    "VectorCMDP",
    "env_groups",
    "episode_seed",
    "import_safety_gymnasium",
    "is_custom_id",
    "make_env",
    "make_vector_env",
    "safety_gymnasium_ids",
]


class EnvError(UserError, ValueError):
    """A user-facing environment problem (unknown id, bad class, no cost signal, ...)."""


# ---------------------------------------------------------------------------------------------
# Safety-Gymnasium import with the Python 3.11 dataclass fix
# ---------------------------------------------------------------------------------------------


class _HashableArray(np.ndarray):
    """An ndarray view that dataclasses accept as a default value.

    Python >= 3.11 rejects any default whose class has ``__hash__ = None`` (ndarray) as
    "mutable". Python 3.10 accepted these arrays as shared class-level defaults, which is the
    behaviour Safety-Gymnasium was written for; giving the view a hash restores exactly that.
    """

    __hash__ = object.__hash__  # type: ignore[assignment]


@contextlib.contextmanager
def _ndarray_dataclass_defaults() -> Iterator[None]:
    """Temporarily let ``@dataclass`` accept ndarray defaults in ``safety_gymnasium`` classes."""
    original = dataclasses._get_field  # type: ignore[attr-defined]

    def get_field(cls: type, name: str, *args: Any, **kwargs: Any) -> Any:
        default = cls.__dict__.get(name, dataclasses.MISSING)
        if cls.__module__.startswith("safety_gymnasium") and type(default) is np.ndarray:
            setattr(cls, name, default.view(_HashableArray))
        return original(cls, name, *args, **kwargs)

    dataclasses._get_field = get_field  # type: ignore[attr-defined]
    try:
        yield
    finally:
        dataclasses._get_field = original  # type: ignore[attr-defined]


@lru_cache(maxsize=1)
def import_safety_gymnasium() -> ModuleType:
    """Import ``safety_gymnasium`` (and every task module) on any supported Python.

    The shim is active only while Safety-Gymnasium's own modules are imported; all task
    modules are imported eagerly inside it so that later ``make`` calls never hit the check.
    """
    needs_shim = sys.version_info >= (3, 11) and "safety_gymnasium" not in sys.modules
    ctx = _ndarray_dataclass_defaults() if needs_shim else contextlib.nullcontext()
    quiet = io.StringIO()
    with ctx, warnings.catch_warnings(), contextlib.redirect_stderr(quiet):
        # Safety-Gymnasium and its gymnasium-robotics dependency warn at import about
        # deprecated gym APIs, and farama-notifications prints a notice about Adroit envs
        # that safebench never uses (printed to stderr); none of it concerns the user.
        warnings.simplefilter("ignore")
        import safety_gymnasium
        import safety_gymnasium.builder
        import safety_gymnasium.tasks
    return safety_gymnasium


# ---------------------------------------------------------------------------------------------
# Env ids
# ---------------------------------------------------------------------------------------------

_NAV_RE = re.compile(r"^Safety(Point|Car|Racecar|Doggo|Ant)(Goal|Button|Push|Circle|Run)(\d)-v0$")
_VEL_RE = re.compile(r"^Safety(\w+?)Velocity-v1$")
BUILTIN_PREFIX = "safebench/"


def is_custom_id(env_id: str) -> bool:
    """``package.module:ClassName`` (a colon, and not a Safety-Gymnasium or built-in id)."""
    return ":" in env_id and not env_id.startswith(BUILTIN_PREFIX)


@lru_cache(maxsize=1)
def safety_gymnasium_ids() -> tuple[str, ...]:
    """Single-agent, vector-observation Safety-Gymnasium task ids (navigation + velocity)."""
    import_safety_gymnasium()  # before any safety_gymnasium submodule is touched
    from safety_gymnasium.utils.registration import safe_registry

    ids = [i for i in safe_registry if _NAV_RE.match(i) or _VEL_RE.match(i)]
    return tuple(sorted(ids))


def env_groups() -> dict[str, list[str]]:
    """Env ids grouped for display: built-in, navigation by task, velocity."""
    from safebench.cmdps import BUILTIN_CMDPS

    groups: dict[str, list[str]] = {"built-in": sorted(BUILTIN_CMDPS)}
    for env_id in safety_gymnasium_ids():
        nav = _NAV_RE.match(env_id)
        key = f"navigation/{nav.group(2)}" if nav else "velocity"
        groups.setdefault(key, []).append(env_id)
    return groups


def _close_matches(env_id: str) -> str:
    import difflib

    from safebench.cmdps import BUILTIN_CMDPS

    pool = list(BUILTIN_CMDPS) + list(safety_gymnasium_ids())
    near = difflib.get_close_matches(env_id, pool, n=3, cutoff=0.6)
    return f" Did you mean: {', '.join(near)}?" if near else ""


# ---------------------------------------------------------------------------------------------
# The uniform CMDP interface
# ---------------------------------------------------------------------------------------------

StepResult = tuple[np.ndarray, float, float, bool, bool, dict[str, Any]]


class CMDPEnv:
    """A single CMDP environment with the Safety-Gymnasium 6-tuple step API.

    Wraps the underlying env so that ``step`` always returns
    ``(obs, reward, cost, terminated, truncated, info)`` regardless of whether the env itself
    speaks the 6-tuple API or the Gymnasium 5-tuple API with ``info["cost"]``.
    Observations are float32 arrays of shape ``observation_space.shape``.
    """

    def __init__(self, env: Any, env_id: str) -> None:
        self.env = env
        self.env_id = env_id
        self.observation_space: gymnasium.Space[Any] = env.observation_space
        self.action_space: gymnasium.Space[Any] = env.action_space
        spec = getattr(env, "spec", None)
        self.max_episode_steps: int | None = getattr(spec, "max_episode_steps", None) or getattr(
            env, "max_episode_steps", None
        )
        self._api: int | None = None  # 6 or 5, decided on the first step

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        return np.asarray(obs, dtype=np.float32), info

    def step(self, action: np.ndarray) -> StepResult:
        out = self.env.step(action)
        if self._api is None:
            self._api = self._detect_api(out)
        if self._api == 6:
            obs, reward, cost, terminated, truncated, info = out
        else:
            obs, reward, terminated, truncated, info = out
            if "cost" not in info:
                raise EnvError(
                    f"environment {self.env_id!r} stopped reporting info['cost']; "
                    "a 5-tuple env must put the step cost in info['cost'] on every step"
                )
            cost = info["cost"]
        return (
            np.asarray(obs, dtype=np.float32),
            float(reward),
            float(cost),
            bool(terminated),
            bool(truncated),
            info,
        )

    def _detect_api(self, out: Any) -> int:
        if not isinstance(out, tuple) or len(out) not in (5, 6):
            raise EnvError(
                f"environment {self.env_id!r}: step() returned "
                f"{type(out).__name__} of length {len(out) if hasattr(out, '__len__') else '?'}; "
                "expected (obs, reward, cost, terminated, truncated, info) or "
                "(obs, reward, terminated, truncated, info) with info['cost']"
            )
        if len(out) == 6:
            return 6
        info = out[4]
        if not isinstance(info, dict) or "cost" not in info:
            raise EnvError(
                f"environment {self.env_id!r} never reports a cost: its step() returns the "
                "Gymnasium 5-tuple without info['cost']. Put the step cost in info['cost'] "
                "or return (obs, reward, cost, terminated, truncated, info)"
            )
        return 5

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if callable(close):
            close()

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.observation_space.shape or (1,)))

    @property
    def unwrapped(self) -> Any:
        return getattr(self.env, "unwrapped", self.env)


def _load_custom(env_id: str) -> Callable[..., Any]:
    module_name, _, attr = env_id.partition(":")
    if not module_name or not attr:
        raise EnvError(f"custom env id {env_id!r} must look like 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EnvError(
            f"custom env {env_id!r}: cannot import module {module_name!r} ({exc}). "
            "Check the module path and that its package is installed or on PYTHONPATH"
        ) from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EnvError(
                f"custom env {env_id!r}: module {module_name!r} has no attribute {attr!r}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise EnvError(f"custom env {env_id!r}: {attr!r} is not a class or factory")
    return obj


def _check_env_object(env: Any, env_id: str) -> None:
    missing = [
        a for a in ("reset", "step", "action_space", "observation_space") if not hasattr(env, a)
    ]
    if missing:
        raise EnvError(
            f"custom env {env_id!r} is not an environment: it lacks {', '.join(missing)}. "
            "It must provide reset(), step(), observation_space and action_space "
            "(e.g. subclass gymnasium.Env)"
        )
    for name in ("action_space", "observation_space"):
        if not isinstance(getattr(env, name), gymnasium.spaces.Space):
            raise EnvError(f"custom env {env_id!r}: {name} is not a gymnasium.spaces.Space")


def make_env(env_id: str, **kwargs: Any) -> CMDPEnv:
    """Create one environment behind the uniform CMDP interface.

    Args:
        env_id: a Safety-Gymnasium id, a ``safebench/...`` built-in id, or
            ``package.module:ClassName``.
        **kwargs: passed to the environment's constructor (or to ``safety_gymnasium.make``).
            Safety-Gymnasium ids also take ``fast`` (default True): navigation tasks build
            and step through :mod:`safebench.envs.fastnav`, bit-identical to stock (see its
            contract); ``fast=False`` runs stock Safety-Gymnasium. Rendering is always stock.

    Raises:
        EnvError: unknown id, unimportable module, or an object that is not an environment.
    """
    if not isinstance(env_id, str) or not env_id:
        raise EnvError("env id must be a non-empty string")
    if env_id.startswith(BUILTIN_PREFIX):
        from safebench.cmdps import BUILTIN_CMDPS

        if env_id not in BUILTIN_CMDPS:
            raise EnvError(
                f"unknown built-in env {env_id!r}; "
                f"built-ins are: {', '.join(sorted(BUILTIN_CMDPS))}"
            )
        try:
            env: Any = BUILTIN_CMDPS[env_id](**kwargs)
        except TypeError as exc:
            raise EnvError(f"env {env_id!r}: bad kwargs {kwargs} ({exc})") from None
        return CMDPEnv(env, env_id)
    if is_custom_id(env_id):
        factory = _load_custom(env_id)
        try:
            env = factory(**kwargs)
        except TypeError as exc:
            raise EnvError(f"custom env {env_id!r}: bad kwargs {kwargs} ({exc})") from None
        _check_env_object(env, env_id)
        return CMDPEnv(env, env_id)
    sg = import_safety_gymnasium()
    if env_id not in safety_gymnasium_ids():
        raise EnvError(
            f"unknown env id {env_id!r}.{_close_matches(env_id)} "
            "Run 'safebench list envs' for the valid ids, or give a custom env as "
            "'package.module:ClassName'"
        )
    fast = kwargs.pop("fast", True)
    if not isinstance(fast, bool):
        raise EnvError(f"env {env_id!r}: option 'fast' must be true or false, got {fast!r}")
    from safebench.envs import fastnav

    make = fastnav.make_fast if fast and fastnav.supports(env_id, kwargs) else sg.make
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            env = make(env_id, **kwargs)
        except TypeError as exc:
            raise EnvError(f"env {env_id!r}: bad kwargs {kwargs} ({exc})") from None
    return CMDPEnv(env, env_id)


# ---------------------------------------------------------------------------------------------
# Vectorised environments
# ---------------------------------------------------------------------------------------------


def episode_seed(base_seed: int, env_index: int, episode: int, stream: int = 0) -> int:
    """The reset seed of one episode: a hash of (run seed, stream, env index, episode index).

    Every episode is reset with its own seed, so an episode is fully determined by that seed
    and its actions. That is what makes exact resume possible for any deterministic env:
    re-create the env, reset it with the episode's seed and replay the logged actions.
    """
    seq = np.random.SeedSequence([base_seed, stream, env_index, episode])
    return int(seq.generate_state(1)[0])


class VectorCMDP(ABC):
    """N environments stepped together; batched arrays in and out, with auto-reset.

    ``step(actions (N, act)) -> obs (N, obs_dim), reward (N,), cost (N,), terminated (N,),
    truncated (N,), final_obs (N, obs_dim)``. Where an episode ended (terminated or
    truncated), ``obs`` already holds the first observation of the next episode and
    ``final_obs`` the last observation of the finished one (for bootstrapping time-outs).

    Env ``i``'s ``k``-th episode is reset with ``episode_seed(seed, i, k, stream)``; the
    actions of each env's current episode are logged so that :meth:`state` /
    :meth:`restore` can rebuild the exact mid-episode state in a fresh process.

    An env's first reset may differ from its later ones with the same seed (Safety-Gymnasium
    navigation runs one ``mj_forward`` fewer, see :mod:`safebench.envs.fastnav`), so :meth:`state`
    also records, per env, whether its current episode began with the env's first reset
    (``warm`` false) or a later one, and :meth:`restore` replays it on a fresh env or on one
    that has been reset before accordingly.

    ``info`` dicts are not merged (see :class:`SyncVectorCMDP`), except for the boolean flags
    named by :meth:`track_info_flags`: after each :meth:`step`, ``info_flags[key]`` is the
    ``(N,)`` bool array of ``bool(info.get(key, False))`` (e.g. Safety-Gymnasium's
    ``goal_met``, which CVPO's reward backup treats as terminal). None are tracked by default.
    """

    num_envs: int
    observation_space: gymnasium.Space[Any]
    action_space: gymnasium.Space[Any]

    def __init__(self, num_envs: int) -> None:
        self.num_envs = num_envs
        self._seed = 0
        self._stream = 0
        self._episodes = [0] * num_envs
        self._actions: list[list[np.ndarray]] = [[] for _ in range(num_envs)]
        # Whether each env has ever been reset, and whether it had been when reset() or
        # restore() began its current run of episodes (its episode 0 reset a used env).
        self._used = [False] * num_envs
        self._warm0 = [False] * num_envs
        self._flag_keys: tuple[str, ...] = ()
        self.info_flags: dict[str, np.ndarray] = {}

    def track_info_flags(self, keys: Sequence[str]) -> None:
        """Report the boolean ``info`` flags ``keys`` of every step in :attr:`info_flags`."""
        self._flag_keys = tuple(keys)
        self.info_flags = {key: np.zeros(self.num_envs, dtype=bool) for key in self._flag_keys}

    # primitives of the concrete classes
    @abstractmethod
    def _reset_one(self, i: int, seed: int) -> np.ndarray:
        """Reset env ``i`` with ``seed``; its first observation."""

    @abstractmethod
    def _step_one(self, i: int, action: np.ndarray) -> StepResult:
        """Step env ``i`` without auto-reset (used to replay logged actions)."""

    @abstractmethod
    def _renew_one(self, i: int) -> None:
        """Replace env ``i`` by a freshly made one, never reset (to replay a first episode)."""

    def _seed_of(self, i: int) -> int:
        return episode_seed(self._seed, i, self._episodes[i], self._stream)

    def reset(self, seed: int, stream: int = 0, *, warm: bool = False) -> np.ndarray:
        """Start episode 0 of every env from the run seed (``stream`` separates e.g. eval).

        ``warm``: first reset (with its episode-0 seed) every env that has never been reset,
        so that every episode from here on begins with a later reset of its env, whether
        this vector env is fresh or not (evaluation: every evaluation of a run, in a resumed
        process too, runs the same episodes).
        """
        self._seed, self._stream = seed, stream
        self._episodes = [0] * self.num_envs
        self._actions = [[] for _ in range(self.num_envs)]
        if warm:
            for i in range(self.num_envs):
                if not self._used[i]:
                    self._reset_one(i, self._seed_of(i))
                    self._used[i] = True
        self._warm0 = list(self._used)
        obs = self._reset_all()
        self._used = [True] * self.num_envs
        return obs

    def _reset_all(self) -> np.ndarray:
        return np.stack([self._reset_one(i, self._seed_of(i)) for i in range(self.num_envs)])

    @abstractmethod
    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One step of every env, auto-resetting finished episodes (see the class docstring)."""

    def state(self) -> dict[str, Any]:
        """Seeds, episode counters, whether each current episode began with a later reset of
        its env (``warm``), and current-episode actions (small: ≤ one episode each)."""
        return {
            "seed": self._seed,
            "stream": self._stream,
            "episodes": list(self._episodes),
            "warm": [k > 0 or w for k, w in zip(self._episodes, self._warm0)],
            "actions": [np.array(a) for a in self._actions],
        }

    def restore(self, state: dict[str, Any]) -> np.ndarray:
        """Rebuild the exact env states of :meth:`state`; returns the current observations.

        Each env's current episode is replayed on an env in the same condition as the one
        that ran it: a fresh env (renewed if this one has been reset) for an episode that
        began with its env's first reset, else one that has been reset before (reset once
        first if this one is fresh: a later reset does not depend on the earlier ones). A
        state without ``warm`` (checkpoints written before it) replays every episode on a
        used env, as those checkpoints were resumed then.
        """
        self._seed, self._stream = int(state["seed"]), int(state["stream"])
        self._episodes = [int(k) for k in state["episodes"]]
        warm = [bool(w) for w in state.get("warm", [True] * self.num_envs)]
        obs = []
        for i in range(self.num_envs):
            if warm[i] and not self._used[i]:
                self._reset_one(i, self._seed_of(i))
            elif not warm[i] and self._used[i]:
                self._renew_one(i)
            o = self._reset_one(i, self._seed_of(i))
            for action in state["actions"][i]:
                o = self._step_one(i, action)[0]
            obs.append(o)
        self._actions = [list(np.asarray(a)) for a in state["actions"]]
        self._used = [True] * self.num_envs
        self._warm0 = warm
        return np.stack(obs).astype(np.float32)

    @abstractmethod
    def close(self) -> None:
        """Release the environments (and worker processes)."""


class SyncVectorCMDP(VectorCMDP):
    """N environments in this process.

    Written by hand because gymnasium's and Safety-Gymnasium's sync vector envs merge the
    per-env ``info`` dicts on every step, which at tens of thousands of steps per second is a
    measurable share of the rollout time; training needs only the arrays — and safebench
    needs per-episode seeds and action logs for exact resume.
    """

    def __init__(
        self, envs: Sequence[CMDPEnv], factory: Callable[[], CMDPEnv] | None = None
    ) -> None:
        """``factory`` makes one more env like ``envs``: :meth:`restore` needs it to replay an
        env's first episode on an env that has been reset (:func:`make_vector_env` gives it)."""
        super().__init__(len(envs))
        self.envs = list(envs)
        self._factory = factory
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space

    def _reset_one(self, i: int, seed: int) -> np.ndarray:
        return self.envs[i].reset(seed=seed)[0]

    def _step_one(self, i: int, action: np.ndarray) -> StepResult:
        return self.envs[i].step(action)

    def _renew_one(self, i: int) -> None:
        if self._factory is None:
            raise EnvError(
                f"cannot restore env {i}'s first episode exactly: it has been reset, and this "
                "vector env has no factory to make a fresh one"
            )
        self.envs[i].close()
        self.envs[i] = self._factory()

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = self.num_envs
        rew = np.empty(n)
        cost = np.empty(n)
        term = np.zeros(n, dtype=bool)
        trunc = np.zeros(n, dtype=bool)
        final_obs = np.empty((n, *(self.observation_space.shape or (1,))), dtype=np.float32)
        obs_out = np.empty_like(final_obs)
        flags = {key: np.zeros(n, dtype=bool) for key in self._flag_keys}
        for i, env in enumerate(self.envs):
            action = actions[i]
            obs, rew[i], cost[i], term[i], trunc[i], info = env.step(action)
            for key, flag in flags.items():
                flag[i] = bool(info.get(key, False))
            final_obs[i] = obs
            if term[i] or trunc[i]:
                self._episodes[i] += 1
                self._actions[i] = []
                obs = env.reset(seed=self._seed_of(i))[0]
            else:
                self._actions[i].append(action)
            obs_out[i] = obs
        if flags:
            self.info_flags = flags
        return obs_out, rew, cost, term, trunc, final_obs

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _worker(conn: Any, env_id: str, kwargs: dict[str, Any]) -> None:
    """Subprocess loop of :class:`AsyncVectorCMDP`: one env; reset/step on command."""
    env = make_env(env_id, **kwargs)  # the 3.11 import shim runs in the child too
    try:
        while True:
            cmd, arg = conn.recv()
            if cmd == "step":
                conn.send(env.step(arg)[:5])
            elif cmd == "step_reset":  # step, and reset with the given seed if the episode ends
                action, seed, keys = arg  # keys: the info flags to send back
                obs, rew, cost, term, trunc, info = env.step(action)
                final = obs
                if term or trunc:
                    obs = env.reset(seed=seed)[0]
                flags = tuple(bool(info.get(key, False)) for key in keys)
                conn.send((obs, rew, cost, term, trunc, final, flags))
            elif cmd == "reset":
                conn.send(env.reset(seed=arg)[0])
            elif cmd == "renew":  # a fresh env in place of this one
                env.close()
                env = make_env(env_id, **kwargs)
                conn.send(None)
            else:
                break
    except (EOFError, KeyboardInterrupt):
        return  # the parent closed the pipe or was interrupted: exit quietly (finally cleans up)
    finally:
        env.close()
        conn.close()


class AsyncVectorCMDP(VectorCMDP):
    """N environments in N worker processes, stepped in lock-step over pipes.

    Safety-Gymnasium's own async vector env cannot be used: its workers import
    ``safety_gymnasium`` while unpickling the worker function, before any compatibility shim
    can run, which fails on Python 3.11. These workers import safebench first.
    """

    def __init__(self, env_id: str, num_envs: int, kwargs: dict[str, Any] | None = None) -> None:
        import multiprocessing as mp

        super().__init__(num_envs)
        probe = make_env(env_id, **(kwargs or {}))  # fail fast, in this process, on a bad id
        self.observation_space = probe.observation_space
        self.action_space = probe.action_space
        probe.close()
        ctx = mp.get_context("spawn")  # no fork: the parent may hold torch/Ray threads
        self._conns = []
        self._procs = []
        for _ in range(num_envs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker, args=(child, env_id, dict(kwargs or {})), daemon=True
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def _reset_one(self, i: int, seed: int) -> np.ndarray:
        self._conns[i].send(("reset", seed))
        return np.asarray(self._conns[i].recv(), dtype=np.float32)

    def _step_one(self, i: int, action: np.ndarray) -> StepResult:
        self._conns[i].send(("step", action))
        return (*self._conns[i].recv(), {})

    def _renew_one(self, i: int) -> None:
        self._conns[i].send(("renew", None))
        self._conns[i].recv()

    def _reset_all(self) -> np.ndarray:
        for i, conn in enumerate(self._conns):
            conn.send(("reset", self._seed_of(i)))
        return np.stack([conn.recv() for conn in self._conns]).astype(np.float32)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        for i, (conn, action) in enumerate(zip(self._conns, actions)):
            # the seed the next episode would get, used only if this step ends the episode
            next_seed = episode_seed(self._seed, i, self._episodes[i] + 1, self._stream)
            conn.send(("step_reset", (action, next_seed, self._flag_keys)))
        out = [conn.recv() for conn in self._conns]
        obs, rew, cost, term, trunc, final, flags = zip(*out)
        if self._flag_keys:
            self.info_flags = {
                key: np.array([f[k] for f in flags], dtype=bool)
                for k, key in enumerate(self._flag_keys)
            }
        for i in range(self.num_envs):
            if term[i] or trunc[i]:
                self._episodes[i] += 1
                self._actions[i] = []
            else:
                self._actions[i].append(actions[i])
        return (
            np.stack(obs).astype(np.float32),
            np.asarray(rew, dtype=np.float64),
            np.asarray(cost, dtype=np.float64),
            np.asarray(term, dtype=bool),
            np.asarray(trunc, dtype=bool),
            np.stack(final).astype(np.float32),
        )

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("close", None))
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()


def make_vector_env(
    env_id: str, num_envs: int = 1, *, asynchronous: bool = False, **kwargs: Any
) -> VectorCMDP:
    """``num_envs`` copies of ``env_id``: in this process, or one worker process each."""
    if num_envs < 1:
        raise EnvError(f"num_envs must be >= 1, got {num_envs}")
    if asynchronous:
        return AsyncVectorCMDP(env_id, num_envs, kwargs)
    factory = partial(make_env, env_id, **kwargs)
    return SyncVectorCMDP([factory() for _ in range(num_envs)], factory)
