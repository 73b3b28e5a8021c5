# safebench, pinned by uv.lock. CPU by default:
#   docker build -t safebench .
# CUDA hosts: the locked torch wheel from PyPI already carries its CUDA libraries; pick a CUDA
# base image (Ubuntu 22.04 ships Python 3.10, which safebench supports):
#   docker build --build-arg BASE=nvidia/cuda:12.8.1-runtime-ubuntu22.04 \
#                --build-arg PYVER=3.10 -t safebench:cuda .
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ARG PYVER=3.11

ENV PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    MUJOCO_GL=egl \
    PYVER=${PYVER} \
    PATH=/app/.venv/bin:$PATH

RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-pip git libegl1 libgl1 libglib2.0-0 make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app

# Dependencies first (cached layer): only pyproject + lock, installed exactly as locked.
COPY pyproject.toml uv.lock README.md ./
COPY scripts/install.sh scripts/install.sh
RUN sh scripts/install.sh --deps-only

# Then the project itself.
COPY safebench safebench
COPY algorithms algorithms
COPY experiments experiments
RUN sh scripts/install.sh

VOLUME ["/app/results"]
ENTRYPOINT []
CMD ["safebench", "--help"]
