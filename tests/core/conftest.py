"""Shared fixtures for the ``safebench.core`` tests."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.learning import torch_threads


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread() -> Iterator[None]:
    """The tensors here are tiny; extra intra-op threads only contend for the shared cores.

    ``SAFEBENCH_TEST_THREADS`` changes the count (scripts/tools/test_robustness.py varies it)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(torch_threads())
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def omnisafe_module() -> Callable[[str], ModuleType]:
    """Load one self-contained OmniSafe source file (e.g. ``utils/math.py``) as a reference.

    The file is loaded by path: importing the ``omnisafe`` package itself would import every
    algorithm and environment, which is slow and unnecessary for a pure function.
    """
    spec = importlib.util.find_spec("omnisafe")
    # omnisafe is a locked dependency: its absence is a broken install, so fail, never skip.
    assert spec is not None and spec.submodule_search_locations, "omnisafe is not installed"
    root = Path(next(iter(spec.submodule_search_locations)))

    def load(relative_path: str) -> ModuleType:
        path = root / relative_path
        name = "_omnisafe_ref_" + relative_path.replace("/", "_").removesuffix(".py")
        mod_spec = importlib.util.spec_from_file_location(name, path)
        assert mod_spec is not None and mod_spec.loader is not None
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        return module

    return load
