"""Layer 1: the training build without render-only assets, and ``assets.yaml`` parsed once.

Safety-Gymnasium's ``World.build`` re-reads ``configs/assets.yaml`` with PyYAML on every build
(~80 ms) and adds its skybox to every model: six 3259x3259 PNG textures that the compiler
decodes on every reset (~92% of a stock reset, ~190 MB of texture and ~440 MB RSS per env).
A skybox is seen only by a camera; no physics quantity, sensor or observation of the vector
tasks reads it. :func:`training_assets` swaps, for the duration of a build, the ``yaml`` name
that ``safety_gymnasium.world`` resolves for a loader that returns a cached copy of the file
with the skybox replaced by a 32x32 built-in gradient. The texture count and every id stay
as they were; only the pixels differ, and those are only ever used for rendering, which takes
the stock path.

Nothing in site-packages is edited, and the swap is undone when the build returns, so stock
environments in the same process keep building exactly as they always did (environment
construction is single-threaded in safebench: one env per process or per sync vector slot).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from functools import lru_cache
from typing import IO, Any

import yaml

__all__ = ["TRAINING_SKYBOX", "assets_config", "training_assets"]

# A small built-in texture in place of the star-map PNGs (same type, so the same texture slot).
TRAINING_SKYBOX: dict[str, str] = {
    "@type": "skybox",
    "@builtin": "gradient",
    "@rgb1": "0.3 0.5 0.7",
    "@rgb2": "0 0 0",
    "@width": "32",
    "@height": "32",
}


@lru_cache(maxsize=1)
def _stock_assets() -> dict[str, Any]:
    import safety_gymnasium.world as sg_world

    path = os.path.join(sg_world.BASE_DIR, "configs", "assets.yaml")
    with open(path, encoding="utf-8") as file:
        # the loader stock uses, so the parsed values are the ones stock builds with
        loaded: dict[str, Any] = yaml.load(file, Loader=yaml.FullLoader)
    return loaded


def assets_config() -> dict[str, Any]:
    """A fresh copy of ``assets.yaml`` with the training skybox (the build may mutate it)."""
    config = copy.deepcopy(_stock_assets())
    config["textures"]["skybox"] = dict(TRAINING_SKYBOX)
    return config


class _CachedAssetsYaml:
    """Stands in for the ``yaml`` module inside ``safety_gymnasium.world`` during a build."""

    FullLoader = yaml.FullLoader

    @staticmethod
    def load(stream: IO[str], Loader: Any = None) -> Any:  # PyYAML's signature
        name = getattr(stream, "name", "")
        if str(name).endswith("assets.yaml"):
            return assets_config()
        return yaml.load(stream, Loader=Loader)  # any other file: read as stock reads it


@contextlib.contextmanager
def training_assets() -> Iterator[None]:
    """Build Safety-Gymnasium worlds with the cached, render-free assets inside this block."""
    import safety_gymnasium.world as sg_world

    original = sg_world.yaml
    sg_world.yaml = _CachedAssetsYaml
    try:
        yield
    finally:
        sg_world.yaml = original
