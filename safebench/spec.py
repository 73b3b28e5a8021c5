"""Run specifications: what exactly one run trains, and its content-addressed id."""

from __future__ import annotations

import hashlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from safebench.store import package_versions

__all__ = ["EvalSpec", "RunSpec", "env_slug"]

# Versions whose change can change a run's numbers: part of the run id.
ID_PACKAGES = ("safebench", "torch", "numpy", "safety-gymnasium", "mujoco", "gymnasium")


class EvalSpec(BaseModel):
    """Periodic evaluation protocol (separate env, separate seeds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    episodes: int = Field(10, ge=0, description="episodes per evaluation (0 = no evaluation)")
    deterministic: bool = Field(True, description="evaluate the mean / arg-max action")
    every_epochs: int = Field(10, ge=1, description="evaluate every this many epochs and last")


class RunSpec(BaseModel):
    """One run: algorithm + resolved config, env, seed, budget, cost limit, eval protocol."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    experiment: str = "adhoc"
    algo: str
    label: str = ""
    config: dict[str, Any] = Field(default_factory=dict, description="resolved algorithm config")
    env_id: str
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(ge=0)
    budget: int = Field(gt=0, description="env steps for the whole run")
    steps_per_epoch: int = Field(gt=0)
    cost_limit: float = Field(ge=0)
    eval: EvalSpec = EvalSpec()
    num_envs: int = Field(1, ge=1, description="envs stepped in lock-step in the run's process")
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _defaults(self) -> RunSpec:
        if not self.label:
            object.__setattr__(self, "label", self.algo)
        return self

    @property
    def epochs(self) -> int:
        return -(-self.budget // self.steps_per_epoch)

    @cached_property
    def run_id(self) -> str:
        """sha256 over the resolved spec and the versions that change results (hex)."""
        payload = {
            "spec": self.model_dump(mode="json", exclude={"experiment"}),
            "versions": package_versions(ID_PACKAGES),
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def run_dir(self, root: Path) -> Path:
        """``root/<label>/<env>/seed<k>-<runid8>``."""
        return (
            Path(root) / self.label / env_slug(self.env_id) / f"seed{self.seed}-{self.run_id[:8]}"
        )


def env_slug(env_id: str) -> str:
    """A file-system-safe directory name for an env id (``/`` and ``:`` replaced)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", env_id)
