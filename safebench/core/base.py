"""The shared algorithm interface and typed configs.

An algorithm is a class with a typed, frozen config and four duties
(docs/architecture.md#the-algorithm-interface):

* ``act(obs, deterministic) -> action`` (batched NumPy in, NumPy out);
* ``update(data) -> dict[str, float]`` of diagnostics (a :class:`~safebench.core.rollout.Rollout`
  for on-policy methods, a :class:`~safebench.core.offpolicy.Replay` round for off-policy ones);
* ``state_dict()`` / ``load_state_dict()`` — everything needed to resume bit-for-bit;
* diagnostics as plain numbers.

Algorithms never touch files, Ray or loggers: the runner owns the loop. The constructor is
written once, here; a kind base (on-/off-policy) builds the shared networks in ``_build`` and a
concrete algorithm adds its own state in :meth:`Algorithm.setup`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import gymnasium
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AlgoConfig",
    "Algorithm",
    "EnvProtocol",
    "OnPolicyConfig",
    "added_field",
    "resolve_device",
]


@dataclass(frozen=True)
class EnvProtocol:
    """How a run meets its env, for every algorithm kind: what the env receives from the
    policy, what the policy sees of the env, and what Ĵc averages
    (docs/algorithms.md#shared-on-policy-protocol).

    * ``action_scale``: the policy acts in [-1, 1], mapped affinely to the env's box
      (OmniSafe's ``ActionScale``); false sends the sample as is (an off-policy actor acts in
      the box itself). ``clip_actions``: clipped to the box before the env sees it.
    * ``normalize_obs`` with ``obs_normalizer`` (``omnisafe`` | ``gymnasium``,
      :mod:`safebench.core.normalize`): the running observation normaliser.
    * ``truncation_bootstrap``: a time-out bootstraps from the ``normalized`` or the ``raw``
      final observation.
    * ``ep_cost_window``: the finished episodes Ĵc (and the logged EpRet / EpCost) average.

    Read off a config by ``protocol()`` (each kind's base config states it:
    :class:`OnPolicyConfig` and the off-policy config), never stored: the settings stay config
    fields, where each has its source note and where run ids already hash them.
    """

    action_scale: bool
    clip_actions: bool
    normalize_obs: bool
    obs_normalizer: Literal["omnisafe", "gymnasium"]
    truncation_bootstrap: Literal["normalized", "raw"]
    ep_cost_window: int


class AlgoConfig(BaseModel):
    """Base of every algorithm config: frozen, typed, unknown keys rejected.

    Each field's ``description`` starts with its confidence tag and source, e.g.
    ``"[H] OmniSafe CPO.yaml algo_cfgs.target_kl"`` ([H] official code, [M] secondary
    source, [L] inferred — see docs/algorithms.md#sources-and-confidence-tags).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    obs_normalize: bool = Field(True, description="[H] OmniSafe obs_normalize: True")

    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {}
    """For configs with a ``variant`` field: variant -> the defaults it changes. A variant is
    a named set of defaults (e.g. OmniSafe's values); keys given explicitly still win."""

    @model_validator(mode="before")
    @classmethod
    def _variant_defaults(cls, data: Any) -> Any:
        if not cls.VARIANTS or not isinstance(data, dict):
            return data
        variant = data.get("variant", cls.model_fields["variant"].default)
        return {**cls.VARIANTS.get(variant, {}), **data}

    def default_for(self, key: str) -> Any:
        """The default of ``key`` under this config's variant."""
        preset = self.VARIANTS.get(getattr(self, "variant", ""), {})
        return preset[key] if key in preset else type(self).model_fields[key].default

    def spec_dump(self) -> dict[str, Any]:
        """The config as a run's ``spec.json`` stores it (and its run id hashes it).

        A field declared with :func:`added_field` is left out while it holds its default:
        its default reproduces what runs computed before the field existed, so those runs
        keep their ids. Such a default therefore never changes; a new behaviour gets a new
        value. Resolving the stored dict again fills the default back in.
        """
        data = self.model_dump(mode="json")
        for key, info in type(self).model_fields.items():
            extra = info.json_schema_extra
            added = isinstance(extra, dict) and extra.get("added")
            if added and data[key] == _json(self.default_for(key)):
                del data[key]
        return data


def _json(value: Any) -> Any:
    """A default as ``model_dump(mode="json")`` writes it (tuples become lists)."""
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    return value


def added_field(default: Any, description: str, **kwargs: Any) -> Any:
    """A config field added after runs existed, whose default reproduces their behaviour.

    Left out of ``spec.json`` and the run id at its default (:meth:`AlgoConfig.spec_dump`),
    so existing results keep their run ids when the field appears.
    """
    return Field(default, description=description, json_schema_extra={"added": True}, **kwargs)


class OnPolicyConfig(AlgoConfig):
    """Settings every on-policy algorithm shares (OmniSafe on-policy defaults,
    docs/algorithms.md#shared-on-policy-protocol)."""

    hidden_sizes: tuple[int, ...] = Field((64, 64), description="[H] OmniSafe actor/critic [64,64]")
    activation: Literal["tanh", "relu"] = Field("tanh", description="[H] OmniSafe activation tanh")
    log_std_init: float = Field(0.0, description="[H] OmniSafe gaussian_learning log_std init 0")
    action_scale: bool = Field(
        True,
        description=(
            "[H] OmniSafe online_adapter.py: ActionScale(env, low=-1.0, high=1.0); SafePO and "
            "C-TRPO (milosen/ctrpo common/env.py): SafeRescaleAction(env, -1.0, 1.0) — the "
            "policy acts in [-1, 1] and its action is mapped affinely to the env's box "
            "(unclipped); the identity where the box is [-1, 1]; false sends the sample as is"
        ),
    )
    clip_actions: bool = Field(
        False,
        description=(
            "[H] OmniSafe ActionScale / SafePO SafeRescaleAction: the (rescaled) action reaches "
            "the env unclipped. Safety-Gymnasium clamps it into the actuators itself "
            "(navigation: base_agent.py np.clip to ctrlrange; velocity: MuJoCo ctrllimited) but "
            "the velocity tasks charge ctrl_cost on the action they receive, so clipping "
            "changes their reward. One policy for every algorithm: CVPO's default is also "
            "false. true clips to the box first, as Gymnasium's ClipAction"
        ),
    )
    gamma: float = Field(0.99, gt=0, le=1, description="[H] OmniSafe algo_cfgs.gamma")
    cost_gamma: float = Field(0.99, gt=0, le=1, description="[H] OmniSafe algo_cfgs.cost_gamma")
    lam: float = Field(0.95, ge=0, le=1, description="[H] OmniSafe algo_cfgs.lam (GAE)")
    lam_c: float = Field(0.95, ge=0, le=1, description="[H] OmniSafe algo_cfgs.lam_c (cost GAE)")
    standardize_reward_adv: bool = Field(True, description="[H] OmniSafe standardized_rew_adv")
    centre_cost_adv: bool = Field(True, description="[H] OmniSafe standardized_cost_adv (centring)")
    critic_lr: float = Field(1e-3, gt=0, description="[H] OmniSafe model_cfgs.critic.lr")
    update_iters: int = Field(10, ge=1, description="[H] OmniSafe algo_cfgs.update_iters")
    batch_size: int = Field(128, ge=1, description="[H] OmniSafe algo_cfgs.batch_size")
    max_grad_norm: float = Field(40.0, gt=0, description="[H] OmniSafe algo_cfgs.max_grad_norm")
    critic_norm_coef: float = Field(0.001, ge=0, description="[H] OmniSafe critic_norm_coef")
    ep_cost_window: int = Field(
        50,
        ge=1,
        description=(
            "[H] OmniSafe policy_gradient.py _init_log: register_key('Metrics/EpCost', "
            "window_length=50) — the Ĵc its algorithms train on (logger_cfgs.window_lens=100 "
            "is not used for it); SafePO/C-TRPO also average the last 50 episodes"
        ),
    )
    joint_grad_clip: bool = added_field(
        False,
        (
            "[H] false: OmniSafe policy_gradient.py clips the actor and each critic on its own "
            "(max_grad_norm each). true: milosen/ctrpo baselines, one clip_grad_norm_ over "
            "everything a minibatch step updates (actor and both critics; both critics when "
            "fitted alone)"
        ),
    )
    cost_estimate: Literal["window", "official"] = added_field(
        "window",
        (
            "[H] the Ĵc the update sees. window: OmniSafe policy_gradient.py, the mean cost of "
            "the last ep_cost_window episodes at the epoch's end. official: milosen/ctrpo "
            "baselines (docs/algorithms.md#cost-estimate), the window's mean taken after every "
            "episode that ended in the epoch, averaged over the epoch, and 0.0 at the first update "
            "(logger.get_stats before the key exists)"
        ),
    )
    obs_normalizer: Literal["omnisafe", "gymnasium"] = added_field(
        "omnisafe",
        (
            "[H] the observation normaliser where obs_normalize "
            "(docs/algorithms.md#observation-normaliser-and-time-out-bootstrap). omnisafe: "
            "OmniSafe common/normalizer.py Normalizer (ObsNormalize, clip=5), running mean and "
            "sample std floored at 1e-2, output clipped to ±5. gymnasium: milosen/ctrpo "
            "algorithms/baselines/common/env.py:55 SafeNormalizeObservation "
            "(common/wrappers.py:42-49), i.e. gymnasium 0.28.1 wrappers/normalize.py:7-95 "
            "NormalizeObservation: prior count 1e-4 (mean 0, var 1), each step's batch of "
            "observations (reset ones included) merged before it is normalised, "
            "(x − μ)/sqrt(var_pop + 1e-8), unclipped"
        ),
    )
    truncation_bootstrap: Literal["normalized", "raw"] = added_field(
        "normalized",
        (
            "[H] the observation a time-out bootstraps V from. normalized: OmniSafe "
            "adapter/onpolicy_adapter.py:116-119 agent.step(info['final_observation'][idx]), "
            "normalised by ObsNormalize (envs/wrapper.py:232-239). raw: milosen/ctrpo "
            "algorithms/c-trpo.py:478-482 policy.step(info['final_observation'][idx]), which "
            "SafeNormalizeObservation (common/wrappers.py:45-49: step normalises obs only) "
            "leaves unnormalised"
        ),
    )

    def protocol(self) -> EnvProtocol:
        return EnvProtocol(
            action_scale=self.action_scale,
            clip_actions=self.clip_actions,
            normalize_obs=self.obs_normalize,
            obs_normalizer=self.obs_normalizer,
            truncation_bootstrap=self.truncation_bootstrap,
            ep_cost_window=self.ep_cost_window,
        )


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Algorithm(ABC):
    """Base of all algorithms. Subclasses set ``name``, ``kind`` and ``Config``."""

    name: ClassVar[str]
    kind: ClassVar[Literal["on-policy", "off-policy"]]
    Config: ClassVar[type[AlgoConfig]]

    def __init__(
        self,
        observation_space: gymnasium.Space[Any],
        action_space: gymnasium.Space[Any],
        config: AlgoConfig,
        *,
        cost_limit: float,
        seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.config = config
        self.cost_limit = float(cost_limit)
        self.seed = seed
        self.device = resolve_device(str(device)) if isinstance(device, str) else device
        self.obs_dim = int(np.prod(observation_space.shape or (1,)))
        self.discrete = isinstance(action_space, gymnasium.spaces.Discrete)
        self._build()
        self.setup()

    def _build(self) -> None:  # noqa: B027 (a hook: the kind bases fill it)
        """The kind base's shared state (networks, RNGs), before :meth:`setup`."""

    def setup(self) -> None:  # noqa: B027 (a hook: optional for an algorithm)
        """The algorithm's own state once the shared networks exist (optimisers, multipliers).

        Concrete algorithms override this instead of the constructor.
        """

    def set_schedule(self, epochs: int) -> None:  # noqa: B027 (a hook: optional)
        """Told the run's length in epochs before training starts (and, on resume, before
        :meth:`load_state_dict`); for schedules over the run such as a decaying learning rate.
        """

    def epoch_info(self, infos: list[dict[str, float]]) -> dict[str, float]:
        """One epoch's diagnostics from the ``update`` results of its collection rounds
        (on-policy: exactly one round, whose diagnostics these are)."""
        out: dict[str, float] = {}
        for info in infos:
            out.update(info)
        return out

    @abstractmethod
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions for a batch of (normalised) observations ``(B, obs_dim)``."""

    @abstractmethod
    def update(self, data: Any) -> dict[str, float]:
        """One update from a rollout (on-policy) or replay buffer (off-policy)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit (nets, optimisers, multipliers, RNGs)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
