#!/bin/sh
# Install safebench exactly as uv.lock pins it into ./.venv. Used by the Dockerfile and by
# `make setup`-equivalent fresh-environment tests, so both run the same commands.
#   sh scripts/install.sh [--deps-only]
set -eu
if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check uv 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages uv
fi
UV="uv"; command -v uv >/dev/null 2>&1 || UV="python3 -m uv"
if [ "${1:-}" = "--deps-only" ]; then
  $UV sync --frozen --compile-bytecode --no-dev --no-install-project --python "${PYVER:-3.11}"
else
  $UV sync --frozen --compile-bytecode --no-dev --python "${PYVER:-3.11}"
fi
