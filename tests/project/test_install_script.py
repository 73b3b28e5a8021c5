"""The Docker image's install steps, without a Docker engine.

The Dockerfile installs by running scripts/setup/install.sh (twice: dependencies, then safebench);
this test runs the same script, the same two ways, in a copy of the project under tmp_path
into a fresh environment, then checks that ``safebench`` works from there, that the
environment is independent of the source tree, and that it holds the locked versions.
With uv's cache populated (``make setup`` does it) the install takes seconds: uv links the
cached wheels. Byte-compiling is skipped (``SAFEBENCH_NO_COMPILE=1``), the one difference
from the image.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import safebench

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "setup" / "install.sh"


def dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [" ".join(i.split()) for i in "\n".join(lines).replace("\\\n", " ").split("\n") if i]


def test_dockerfile_installs_with_the_script_from_the_lock_only() -> None:
    instructions = dockerfile_instructions()
    runs = [i for i in instructions if i.startswith("RUN")]
    secret = "RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/uv"
    assert f"{secret} sh scripts/setup/docker_ca.sh sh scripts/setup/install.sh --deps-only" in runs
    install = f"{secret} sh scripts/setup/docker_ca.sh sh scripts/setup/install.sh &&"
    assert any(i.startswith(install) for i in runs)
    # nothing else installs Python packages: the only pip install is of uv itself, pinned
    dockerfile = "\n".join(instructions)
    for forbidden in ("uv pip", "uv add", "uv lock"):
        assert forbidden not in dockerfile
    pip_installs = [i for i in runs if "pip install" in i]
    assert len(pip_installs) == 1
    uv_pin = r'pip install [^&]*--target uv "uv==\$\{UV_VERSION\}"'
    assert re.search(uv_pin, pip_installs[0])
    assert "COPY pyproject.toml uv.lock" in dockerfile
    script = SCRIPT.read_text(encoding="utf-8")
    assert re.search(r"\$UV sync --frozen --no-dev", script)


def copy_project(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    dest.mkdir()
    # no README.md yet: as in the Dockerfile, it comes after the dependencies
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("safebench", "algorithms", "scripts"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    return dest


def locked_versions(package: str) -> set[str]:
    """The versions uv.lock pins for ``package`` (more than one where Pythons differ)."""
    lock = (ROOT / "uv.lock").read_text(encoding="utf-8")
    pattern = rf'^\[\[package\]\]\nname = "{re.escape(package)}"\nversion = "([^"]+)"'
    versions = set(re.findall(pattern, lock, flags=re.M))
    assert versions, package
    return versions


@pytest.fixture
def venv(tmp_path: Path) -> Iterator[Path]:
    """Where the fresh environment goes; removed afterwards (gigabytes if uv had to copy)."""
    path = tmp_path / "env"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_install_script_in_a_fresh_environment(tmp_path: Path, venv: Path) -> None:
    # `make setup` installs uv (PATH or `python3 -m uv`, as the script looks for it); without
    # one the script would pip-install uv into the user's python3, which a test must not do
    has_uv = shutil.which("uv") is not None or (
        subprocess.run(["python3", "-m", "uv", "--version"], capture_output=True).returncode == 0
    )
    assert has_uv, "no uv on PATH nor as `python3 -m uv`: run `make setup` first"
    project = copy_project(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env |= {
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "SAFEBENCH_NO_COMPILE": "1",
        "PYVER": f"{sys.version_info.major}.{sys.version_info.minor}",
    }

    def install(*args: str) -> None:
        out = subprocess.run(
            ["sh", "scripts/setup/install.sh", *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stdout + out.stderr

    install("--deps-only")
    assert not (venv / "bin" / "safebench").exists()  # the project itself comes second
    shutil.copy2(ROOT / "README.md", project / "README.md")  # which its metadata names
    install()
    version = subprocess.run(
        [str(venv / "bin" / "safebench"), "--version"], capture_output=True, text=True, cwd=tmp_path
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"safebench {safebench.__version__}"

    # a regular install: the environment keeps working without the source tree
    shutil.rmtree(project)
    probe = (
        "import importlib.metadata as m, safebench.cli.app, algorithms.ctrpo; "
        "print(m.version('torch'), m.version('safety-gymnasium'), m.version('numpy'))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    installed = dict(zip(("torch", "safety-gymnasium", "numpy"), out.stdout.split()))
    for package, got in installed.items():
        assert got in locked_versions(package), (package, got)
    # --no-dev: no test or lint tools in the image
    assert not (venv / "bin" / "pytest").exists() and not (venv / "bin" / "ruff").exists()
