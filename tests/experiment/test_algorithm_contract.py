"""The contract every registered algorithm keeps, checked over ``registry.available()``.

The checks are :mod:`safebench.experiment.conformance`'s (the ones ``safebench check-algorithm
NAME`` runs), one test per check and algorithm. Parametrized over the built-ins and the plug-in
of docs/adding-an-algorithm.md (``simple-lag``), which this module installs through the
``safebench.algorithms`` entry-point group (a package and a ``*.dist-info`` folder put on
``sys.path``). For each algorithm:

1. a smoke run on ``safebench/ContinuousTarget-v0`` through the real runner (in-process, so the
   plug-in on ``sys.path`` is enough);
2. an interrupted and resumed run equals the straight one bit for bit (metrics without the
   timing columns, exactly; and the final checkpoint's algorithm and collector state);
3. every config field's description starts with a source / confidence tag [H], [M] or [L];
4. the action protocol: on-policy configs (every variant) rescale [-1, 1] to the env's box and
   never clip; off-policy configs have no rescaling and never clip; the runner's collector
   delivers exactly that to the env;
5. every ``algo/`` metrics column is a finite float;
6. ``safebench list algorithms --config NAME`` prints every config key.

Every named variant of a built-in (``VARIANTS``: OmniSafe's, the corrected method, the
official P3O) runs checks 1, 2 and 5 too, as ``name@variant``.

Then everything that lists algorithms (the import-linter contract, ``algorithms/*.py``, the
README's table) is checked against the registry.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from safebench import registry
from safebench.experiment import conformance
from tests.learning import torch_threads

REPO = Path(__file__).resolve().parents[2]

# The plug-in is the worked example of docs/adding-an-algorithm.md, read from the page: the
# guide's code is what this contract runs.
PLUGIN = "simple-lag"
GUIDE = REPO / "docs" / "adding-an-algorithm.md"
PLUGIN_SOURCE = re.search(  # the module as the guide shows it
    r"```python mylab/mylab/simple_lag.py\n(.*?)```", GUIDE.read_text(), re.S
).group(1)  # type: ignore[union-attr]

# Every registered algorithm at collection time, and the plug-in this module installs.
ALGORITHMS = list(dict.fromkeys([*registry.available(), PLUGIN]))
# Every named variant of a built-in runs the same contract (smoke, resume, diagnostics), as
# ``name@variant``: a variant is a set of defaults the algorithm must honour like its own.
VARIANTS = [
    f"{name}@{variant}"
    for name, entry in registry.available().items()
    for variant in entry.config_cls.VARIANTS
]
RUNS = ALGORITHMS + VARIANTS


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plug-in distribution as an installer leaves it: the package and its dist-info."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "mylab").mkdir()
    (root / "mylab" / "__init__.py").write_text("")
    (root / "mylab" / "simple_lag.py").write_text(PLUGIN_SOURCE)
    info = root / "mylab-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mylab\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[{registry.ENTRY_POINT_GROUP}]\n{PLUGIN} = mylab.simple_lag:SimpleLag\n"
    )
    return root


def _forget_plugin() -> None:
    registry.available.cache_clear()
    for module in [m for m in sys.modules if m == "mylab" or m.startswith("mylab.")]:
        del sys.modules[module]


@pytest.fixture(scope="module", autouse=True)
def _plugin_installed(plugin_dir: Path) -> Iterator[None]:
    """The plug-in is on ``sys.path`` (so ``entry_points`` finds it) for this module only."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(plugin_dir))
        _forget_plugin()
        yield
        _forget_plugin()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(torch_threads())
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the module's contract runs go: each algorithm's straight run is trained once
    (the runner returns a finished run as it is) and read by the smoke, resume and
    diagnostics checks."""
    return tmp_path_factory.mktemp("contract")


def _passed(result: conformance.CheckResult) -> None:
    assert result.passed, f"{result.check} ({result.title}): {result.detail}\n{result.trace}"


# ---- the contract, per algorithm ------------------------------------------------------------


def test_plugin_is_registered_through_its_entry_point(plugin_dir: Path) -> None:
    algos = registry.available()
    assert list(algos) == [*registry.BUILTIN, PLUGIN]
    entry = algos[PLUGIN]
    assert entry.source == "plug-in (mylab.simple_lag:SimpleLag)" and entry.kind == "on-policy"
    assert Path(sys.modules[entry.cls.__module__].__file__ or "").is_relative_to(plugin_dir)
    # off sys.path, the entry point is gone
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "path", [p for p in sys.path if p != str(plugin_dir)])
        _forget_plugin()
        assert PLUGIN not in registry.available()
    _forget_plugin()
    assert PLUGIN in registry.available()


@pytest.mark.parametrize("name", RUNS)
def test_smoke_run(name: str, workdir: Path) -> None:
    _passed(conformance.check_smoke(*conformance.parse_name(name), workdir))


@pytest.mark.parametrize("name", RUNS)
def test_interrupt_and_resume_is_bit_identical(name: str, workdir: Path) -> None:
    _passed(conformance.check_resume(*conformance.parse_name(name), workdir))


@pytest.mark.parametrize("name", ALGORITHMS)
def test_config_fields_carry_a_source_tag(name: str) -> None:
    _passed(conformance.check_config_tags(name))


@pytest.mark.parametrize("name", ALGORITHMS)
def test_actions_reach_the_env_as_the_protocol_says(name: str) -> None:
    _passed(conformance.check_actions(name))


@pytest.mark.parametrize("name", RUNS)
def test_diagnostics_are_finite_floats(name: str, workdir: Path) -> None:
    _passed(conformance.check_diagnostics(*conformance.parse_name(name), workdir))


@pytest.mark.parametrize("name", ALGORITHMS)
def test_cli_lists_every_config_key(name: str) -> None:
    _passed(conformance.check_config_listing(name))


# ---- everything that lists algorithms agrees with the registry ------------------------------


def _builtin_modules() -> list[str]:
    return [target.partition(":")[0] for target in registry.BUILTIN.values()]


def test_one_module_per_builtin_algorithm() -> None:
    modules = _builtin_modules()
    assert len(set(modules)) == len(modules), modules
    files = sorted(p.stem for p in (REPO / "algorithms").glob("*.py") if p.stem != "__init__")
    assert sorted(m.removeprefix("algorithms.") for m in modules) == files


def test_import_linter_independence_contract_lists_every_builtin() -> None:
    tomllib = pytest.importorskip(
        "tomllib" if sys.version_info >= (3, 11) else "tomli",
        reason="reading pyproject.toml needs tomllib (Python 3.11+) or tomli on Python 3.10",
    )
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    contracts = [
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c["name"].startswith("One readable file per algorithm")
    ]
    assert len(contracts) == 1 and contracts[0]["type"] == "independence"
    listed = contracts[0]["modules"]
    assert len(set(listed)) == len(listed), listed
    assert sorted(listed) == sorted(_builtin_modules())


def _readme_table() -> dict[str, str]:
    """The README's algorithm table: name -> kind."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = lines.index("| name | kind | what |")
    table: dict[str, str] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        name, kind = (cell.strip() for cell in line.strip("|").split("|")[:2])
        table[name.strip("`")] = kind
    assert table
    return table


def test_readme_table_lists_every_builtin() -> None:
    table = _readme_table()
    missing = sorted(set(registry.BUILTIN) - set(table), key=list(registry.BUILTIN).index)
    unknown = sorted(set(table) - set(registry.BUILTIN))
    assert not missing and not unknown, f"README table: missing {missing}, unknown {unknown}"


def test_readme_table_kinds_match_the_registry() -> None:
    algos = registry.available()
    for name, kind in _readme_table().items():
        assert name in algos and algos[name].kind == kind, (name, kind)
