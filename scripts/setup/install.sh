#!/bin/sh
# Install safebench exactly as uv.lock pins it: `uv sync --frozen` installs the locked versions
# and never re-resolves. The Dockerfile runs this script, and tests/project/test_install_script.py runs
# it into a fresh environment, so the image's install steps are exercised without Docker.
#
#   sh scripts/setup/install.sh               # dependencies and safebench itself
#   sh scripts/setup/install.sh --deps-only   # dependencies only (the Dockerfile's cached layer)
#
# Run it from the project root (pyproject.toml, uv.lock, safebench/, algorithms/). Settings:
#   PYVER                   Python of the environment, as uv's --python takes it: a version
#                           (default 3.11) or an interpreter (the image: python3, 3.11 or 3.10)
#   UV_PROJECT_ENVIRONMENT  where the environment goes (uv's variable; default ./.venv)
#   SAFEBENCH_NO_COMPILE=1  skip byte-compiling (the image compiles, so that a container
#                           starts fast; the test skips it, which saves a minute)
#   UV_VERSION              the uv installed with pip when none is on PATH
set -eu

UV_VERSION="${UV_VERSION:-0.13.8}"
if command -v uv >/dev/null 2>&1; then
  UV="uv"
else
  if ! python3 -m uv --version >/dev/null 2>&1; then
    # Debian/Ubuntu Pythons refuse user installs into the system (PEP 668) without the flag.
    python3 -m pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}" 2>/dev/null \
      || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
        "uv==${UV_VERSION}"
  fi
  UV="python3 -m uv"
fi

COMPILE="--compile-bytecode"
if [ "${SAFEBENCH_NO_COMPILE:-0}" = "1" ]; then
  COMPILE=""
fi

case "${1:-}" in
  --deps-only) PROJECT="--no-install-project" ;;
  # The project as a regular (not editable) install: the environment does not depend on the
  # source tree it was built from.
  "") PROJECT="--no-editable" ;;
  *) echo "usage: sh scripts/setup/install.sh [--deps-only]" >&2; exit 2 ;;
esac

# --frozen: the lock is the only source of versions; --no-dev: no test/lint tools in the image.
# shellcheck disable=SC2086  # $UV and the optional flags are meant to split into words
$UV sync --frozen --no-dev $COMPILE $PROJECT --python "${PYVER:-3.11}"
