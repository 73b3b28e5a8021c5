"""The Docker build, checked without Docker where it can be; end to end with it (slow).

What a build needs but a test can see without an engine: the Dockerfile's build arguments and
stages (every base and uv pinned, each substitutable, each stage a build argument names
exists), the CA helper the install steps run through (scripts/setup/docker_ca.sh), and the shell
syntax of scripts/setup/docker_check.sh (and shellcheck, where it is installed). The real check —
install Docker, build, run ``reproduce quickstart --smoke`` in the image — is
``make docker-check``; ``test_docker_check_end_to_end`` runs it when a daemon answers.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.project.test_install_script import dockerfile_instructions

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "scripts" / "setup" / "docker_check.sh"
CA = ROOT / "scripts" / "setup" / "docker_ca.sh"


def global_args() -> dict[str, str]:
    """ARG NAME=default lines before the first FROM."""
    args: dict[str, str] = {}
    for instruction in dockerfile_instructions():
        if instruction.startswith("FROM"):
            break
        match = re.fullmatch(r"ARG (\w+)=(\S+)", instruction)
        assert match, instruction
        args[match[1]] = match[2]
    return args


def stages() -> dict[str, str]:
    """Stage name -> what it is built FROM."""
    named = {}
    for instruction in dockerfile_instructions():
        match = re.fullmatch(r"FROM (\S+)(?: AS (\S+))?", instruction)
        if match and match[2]:
            named[match[2]] = match[1]
    return named


def test_every_base_and_uv_is_pinned_and_substitutable() -> None:
    args = global_args()
    # public defaults, pinned to exact versions, each replaceable with --build-arg
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", args["BASE_CPU"])
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-runtime-ubuntu22\.04", args["BASE_CUDA"])
    assert args["UV_IMAGE"] == f"ghcr.io/astral-sh/uv:{args['UV_VERSION']}"
    # the uv that scripts/setup/install.sh would pip-install is the same version
    install = (ROOT / "scripts" / "setup" / "install.sh").read_text(encoding="utf-8")
    assert f'UV_VERSION="${{UV_VERSION:-{args["UV_VERSION"]}}}"' in install
    assert args["DEVICE"] == "cpu" and args["UV_FROM"] == "image"
    named = stages()
    assert named["base-cpu"] == "${BASE_CPU}" and named["base-cuda"] == "${BASE_CUDA}"
    assert named["uv-image"] == "${UV_IMAGE}" and named["uv"] == "uv-${UV_FROM}"
    # every value the README and docker_check.sh give DEVICE and UV_FROM names a stage
    for device in ("cpu", "cuda"):
        assert f"base-{device}" in named
    for source in ("image", "pypi"):
        assert f"uv-{source}" in named
    froms = [i for i in dockerfile_instructions() if i.startswith("FROM")]
    # no image is named outside the build arguments (all of them substitutable)
    for instruction in froms:
        image = instruction.split()[1]
        assert image.startswith("${") or image.split("-")[0] in {"base", "uv"}, instruction
    assert froms[-1] == "FROM base-${DEVICE}"
    assert "COPY --from=uv /uv /usr/local/bin/uv" in dockerfile_instructions()


def test_network_steps_take_the_ca_secret_and_nothing_keeps_it() -> None:
    instructions = dockerfile_instructions()
    for instruction in instructions:
        if instruction.startswith("RUN") and re.search(r"pip install|install\.sh", instruction):
            assert "--mount=type=secret,id=ca" in instruction, instruction
            assert "docker_ca.sh" in instruction, instruction
    dockerfile = "\n".join(instructions)
    # the secret is only ever mounted: never copied in, never an ENV or ARG
    assert "/run/secrets" not in dockerfile
    assert not re.search(r"^(ENV|ARG)\b.*(SSL_CERT_FILE|PIP_CERT|CA_BUNDLE)", dockerfile, re.M)
    # MUJOCO_GL=egl in the environment crashes P3O (EGL's LLVM, then triton's): never set
    assert "MUJOCO_GL" not in dockerfile


def run_ca(tmp_path: Path, secret: Path, probe: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "PIP_CERT")}
    env["SAFEBENCH_CA_SECRET"] = str(secret)
    env["TMPDIR"] = str(tmp_path)
    return subprocess.run(
        ["sh", str(CA), "sh", "-c", probe], capture_output=True, text=True, env=env
    )


def test_docker_ca_adds_the_secret_to_the_system_bundle(tmp_path: Path) -> None:
    secret = tmp_path / "ca.crt"
    secret.write_text("-----BEGIN CERTIFICATE-----\nEXTRA\n-----END CERTIFICATE-----\n")
    probe = (
        'echo "$SSL_CERT_FILE|$PIP_CERT|$REQUESTS_CA_BUNDLE"; cat "$SSL_CERT_FILE"; '
        'cp "$SSL_CERT_FILE" "$TMPDIR/seen.pem"; exit 3'
    )
    out = run_ca(tmp_path, secret, probe)
    assert out.returncode == 3, out.stderr  # the command's exit status comes back
    first, _, bundle = out.stdout.partition("\n")
    paths = set(first.split("|"))
    assert len(paths) == 1 and str(tmp_path) in first  # one temporary bundle for all three
    assert bundle.endswith(secret.read_text())  # the secret, appended ...
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    if system.is_file():  # ... to the system's own bundle, which it never replaces
        assert bundle.startswith(system.read_text())
    assert not Path(paths.pop()).exists()  # removed afterwards
    assert "extra CA bundle" in out.stderr


def test_docker_ca_without_a_secret_runs_the_command_as_is(tmp_path: Path) -> None:
    out = run_ca(tmp_path, tmp_path / "absent", 'echo "[${PIP_CERT:-}]"')
    assert out.returncode == 0 and out.stdout == "[]\n", out.stderr
    usage = subprocess.run(["sh", str(CA)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_docker_check_script_parses_and_explains_itself() -> None:
    for shell, path in (("bash", CHECK), ("sh", CA)):
        out = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    # --help and a bad argument stop before touching Docker, packages or the network
    helped = subprocess.run(["bash", str(CHECK), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0, helped.stderr
    assert "reproduce quickstart --smoke" in helped.stdout and "CA_BUNDLE" in helped.stdout
    bad = subprocess.run(["bash", str(CHECK), "--nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr
    # the build arguments it reads from the Dockerfile exist there
    script = CHECK.read_text(encoding="utf-8")
    for name in re.findall(r"dockerfile_arg (\w+)", script):
        assert name in global_args(), name
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "bash scripts/setup/docker_check.sh" in makefile and "make docker-check" in makefile


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shell_scripts_pass_shellcheck() -> None:
    scripts = [str(p) for p in sorted((ROOT / "scripts").glob("*/*.sh"))]
    out = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def docker_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    return subprocess.run([docker, "info"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not docker_answers(), reason="no docker daemon answers (`docker info`)")
def test_docker_check_end_to_end(tmp_path: Path) -> None:
    """make docker-check: build the image, reproduce quickstart --smoke in it, report on host.

    Minutes with the build cache warm; the first build downloads ~3 GB of wheels.
    """
    check_dir = tmp_path / "docker-check"
    env = os.environ | {"CHECK_DIR": str(check_dir)}
    out = subprocess.run(["bash", str(CHECK)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = check_dir / "quickstart-smoke" / "report"
    assert (report / "report.md").stat().st_size > 0
    assert (report / "report.html").stat().st_size > 0
    assert "reproduce quickstart --smoke" in (check_dir / "summary.txt").read_text()
