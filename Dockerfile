# safebench, installed from uv.lock only (scripts/setup/install.sh: `uv sync --frozen`). Needs BuildKit
# (Docker 23+ with buildx does it by default; Docker 20.10: DOCKER_BUILDKIT=1).
#   docker build -t safebench .                                 # CPU (default)
#   docker build --build-arg DEVICE=cuda -t safebench:cuda .    # CUDA base; run with --gpus all
#   docker run --rm --shm-size=2g --user "$(id -u):$(id -g)" -v "$PWD/results:/app/results" \
#       safebench safebench reproduce ctrpo-table --smoke       # results land in ./results
# Both variants install the same locked packages: PyPI's torch wheel for Linux carries its CUDA
# libraries either way, so the CUDA variant differs only in its base image (NVIDIA's CUDA
# runtime, which the NVIDIA container toolkit expects); without a GPU torch runs on the CPU.
#
# Build arguments, for machines that cannot reach an image registry (scripts/setup/docker_check.sh
# sets them when it has to):
#   BASE_CPU, BASE_CUDA  the base images; any Debian/Ubuntu image whose `python3` is 3.10 or
#                        3.11 will do, e.g. a Debian 12 root file system `docker import`ed
#   UV_FROM=pypi         pip-install uv==UV_VERSION from PyPI instead of copying it from
#                        UV_IMAGE (astral's image on ghcr.io)
#   PIP_INDEX_URL        a PyPI mirror for that pip install (uv.lock names its own URLs)
#   HTTP_PROXY, HTTPS_PROXY, NO_PROXY   Docker's predefined proxy arguments, not kept in the image
# and a build secret for a TLS-intercepting proxy: --secret id=ca,src=/path/to/ca-bundle.crt
# (scripts/setup/docker_ca.sh; used by the install steps only, never stored in a layer).
ARG DEVICE=cpu
# Base images and uv pinned to exact versions. The CUDA one is Ubuntu 22.04, whose Python 3.10
# safebench supports (24.04 ships 3.12, which it does not).
ARG BASE_CPU=python:3.11.11-slim-bookworm
ARG BASE_CUDA=nvidia/cuda:12.8.1-runtime-ubuntu22.04
ARG UV_VERSION=0.13.8
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8
ARG UV_FROM=image

FROM ${BASE_CPU} AS base-cpu

FROM ${BASE_CUDA} AS base-cuda
RUN apt-get update && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*

# uv, one of two ways (UV_FROM): BuildKit builds only the stage the final image uses, so the
# other source is never contacted.
FROM ${UV_IMAGE} AS uv-image

FROM base-${DEVICE} AS uv-pypi
ARG UV_VERSION
ARG PIP_INDEX_URL
WORKDIR /build
COPY scripts/setup/docker_ca.sh docker_ca.sh
# --target: uv's binary lands in ./uv/bin of this stage's workdir, the base's Python stays
# untouched (no PEP 668 complaint); this stage is thrown away, only /uv is copied on.
RUN --mount=type=secret,id=ca \
    if ! python3 -m pip --version >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends python3-pip; \
    fi \
    && sh docker_ca.sh python3 -m pip install --no-cache-dir --disable-pip-version-check \
        --target uv "uv==${UV_VERSION}" \
    && cp uv/bin/uv /uv && /uv --version

FROM uv-${UV_FROM} AS uv

FROM base-${DEVICE}
COPY --from=uv /uv /usr/local/bin/uv

# UV_PYTHON_DOWNLOADS=never: the environment uses the base image's Python, never a download;
# PYVER=python3: whichever python3 comes first on PATH (/usr/local/bin in python:*, /usr/bin in
# Debian/Ubuntu), 3.11 or 3.10 (the CUDA base) — uv.lock holds wheels for both.
# UV_CACHE_DIR: a BuildKit cache mount in the install steps (below), so the downloaded wheels
# (~6 GB) stay out of the image and are reused by the next build.
# MUJOCO_GL is left unset on purpose: with MUJOCO_GL=egl, `import mujoco` loads Mesa's EGL (and
# its LLVM), and a later import of triton (torch.optim -> torch._dynamo) then segfaults in
# libtriton's LLVM initialisers (P3O's runs crashed so). Training never renders; a command that
# renders sets it: docker run -e MUJOCO_GL=egl ...
ENV PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_CACHE_DIR=/root/.cache/uv \
    PYVER=python3 \
    PATH=/app/.venv/bin:$PATH

# MuJoCo's GL/EGL libraries (used only when rendering, with MUJOCO_GL=egl) and make for the
# Makefile's targets.
RUN apt-get update && apt-get install -y --no-install-recommends \
        libegl1 libgl1 libglib2.0-0 make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY scripts/setup/docker_ca.sh scripts/setup/docker_ca.sh

# Dependencies first, in their own cached layer: only pyproject.toml + uv.lock decide it (the
# README, which the project's metadata names, comes with the sources: editing it rebuilds
# only the last layer).
COPY pyproject.toml uv.lock ./
COPY scripts/setup/install.sh scripts/setup/install.sh
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/uv \
    sh scripts/setup/docker_ca.sh sh scripts/setup/install.sh --deps-only

# Then safebench itself, and the experiments and published numbers `reproduce` reads.
COPY safebench safebench
COPY algorithms algorithms
COPY experiments experiments
COPY README.md ./
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/uv \
    sh scripts/setup/docker_ca.sh sh scripts/setup/install.sh && safebench --version

# `reproduce` and `run` write results/<experiment> relative to /app: mount a host folder here.
# HOME=/tmp: a container run with --user UID:GID (files in the mount then belong to that user)
# has a writable home for matplotlib's and Ray's caches.
ENV HOME=/tmp
VOLUME ["/app/results"]
CMD ["safebench", "--help"]
