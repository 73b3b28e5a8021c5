# syntax=docker/dockerfile:1
# safebench, installed from uv.lock only (scripts/install.sh: `uv sync --frozen`).
#   docker build -t safebench .                                 # CPU (default)
#   docker build --build-arg DEVICE=cuda -t safebench:cuda .    # CUDA base; run with --gpus all
#   docker run --rm -v "$PWD/results:/app/results" safebench \
#       safebench reproduce ctrpo-table --smoke                 # results land in ./results
# Both variants install the same locked packages: PyPI's torch wheel for Linux carries its CUDA
# libraries either way, so the CUDA variant differs only in its base image (NVIDIA's CUDA
# runtime, which the NVIDIA container toolkit expects); without a GPU torch runs on the CPU.
ARG DEVICE=cpu

# Base images pinned to exact versions. The CUDA one is Ubuntu 22.04, whose Python 3.10
# safebench supports (24.04 ships 3.12, which it does not).
FROM python:3.11.11-slim-bookworm AS base-cpu
ENV PYVER=3.11

FROM nvidia/cuda:12.8.1-runtime-ubuntu22.04 AS base-cuda
ENV PYVER=3.10
RUN apt-get update && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*

FROM base-${DEVICE}
# uv pinned by version (the same one scripts/install.sh would install with pip).
COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /usr/local/bin/uv

# UV_PYTHON_DOWNLOADS=never: the environment uses the base image's Python, never a download.
# MUJOCO_GL=egl: headless rendering, should a task render; training never does.
ENV PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    MUJOCO_GL=egl \
    PATH=/app/.venv/bin:$PATH

# MuJoCo's GL/EGL libraries (used only when rendering) and make for the Makefile's targets.
RUN apt-get update && apt-get install -y --no-install-recommends \
        libegl1 libgl1 libglib2.0-0 make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app

# Dependencies first, in their own cached layer: only pyproject.toml + uv.lock decide it.
COPY pyproject.toml uv.lock README.md ./
COPY scripts/install.sh scripts/install.sh
RUN sh scripts/install.sh --deps-only

# Then safebench itself, and the experiments and published numbers `reproduce` reads.
COPY safebench safebench
COPY algorithms algorithms
COPY experiments experiments
RUN sh scripts/install.sh && safebench --version

# `reproduce` and `run` write results/<experiment> relative to /app: mount a host folder here.
VOLUME ["/app/results"]
CMD ["safebench", "--help"]
