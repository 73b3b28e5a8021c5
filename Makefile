# safebench — the README's commands. Every target sets itself up from uv.lock first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH if present, else the one `make setup` installs into the user's Python.
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PY := .venv/bin/python
PYTEST_ARGS ?=
EXPERIMENT ?= experiments/quickstart.yaml
RESULTS ?= results/quickstart
# The quick-start report draws each env's learning curves over env steps and over training
# wall-clock time (figures/curves_<env> and curves_time_<env>).
REPORT_ARGS ?= --x both

.PHONY: help setup test test-slow test-robustness lint run report-png bench-envs bench bench-cvpo \
	bench-scaling docker-check clean

help:
	@echo "make setup       install uv (if missing) and the locked environment into .venv"
	@echo "make test        set up, then run the default test suite (a few minutes on 2 cores)"
	@echo "make test-slow   set up, then run the heavier tests marked 'slow'"
	@echo "make test-robustness  rerun every learning-outcome test under thread and CPU-feature"
	@echo "                 perturbations and print each check's worst margin (1-2 h on 2 cores)"
	@echo "make lint        ruff + mypy + import-linter (imports run one way)"
	@echo "make run         set up, train experiments/quickstart.yaml, write its report"
	@echo "                 (curves over env steps and wall-clock time: REPORT_ARGS=--x both)"
	@echo "make bench-envs  raw environment step rates (the baseline for throughput ratios)"
	@echo "make bench       training throughput vs raw env step rate and vs OmniSafe, per algorithm"
	@echo "make bench-cvpo  CVPO's throughput at the official update-to-data ratio vs OmniSafe SACLag"
	@echo "make bench-scaling  Ray start-up cost and parallel efficiency of N runs on N cores"
	@echo "make report-png  the top of the quick-start report as a PNG (needs chromium)"
	@echo "make docker-check  (root, Debian) install/start Docker, build the image, run"
	@echo "                 'reproduce quickstart --smoke' in it; DOCKER_CHECK_ARGS=--cuda: CUDA too"

# --inexact: packages installed into .venv by hand (a plug-in algorithm: `uv pip install -e
# ../myalgo`) stay installed; every locked package is still installed at its locked version.
.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		python3 -m pip install --quiet --disable-pip-version-check uv
	$(UV) sync --frozen --inexact --compile-bytecode --python 3.11
	@touch $@

setup: .venv/.synced

# pytest exits 5 when it collected nothing: that is a failure here, never a green run.
test: setup
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

test-slow: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# Every learning test (slow ones too) under each perturbation; ROBUSTNESS_ARGS="-p base -p threads2"
# picks perturbations.
ROBUSTNESS_ARGS ?=
test-robustness: setup
	$(PY) scripts/tools/test_robustness.py --slow $(ROBUSTNESS_ARGS)

lint: setup
	$(PY) -m ruff check safebench algorithms tests scripts
	$(PY) -m ruff format --check safebench algorithms tests scripts
	$(PY) -m mypy
	.venv/bin/lint-imports

run: setup
	$(PY) -m safebench.cli run $(EXPERIMENT)
	$(PY) -m safebench.cli report $(RESULTS) $(REPORT_ARGS)

# The top of the report as a PNG (the README's screenshot); RESULTS picks the results folder.
report-png: setup
	bash scripts/tools/screenshot_report.sh $(RESULTS)/report/report.html $(RESULTS)/report/report.png

bench-envs: setup
	$(PY) scripts/bench/envs.py

# CPO and each baseline OmniSafe also has, on PointGoal1 and HalfCheetah (about 1 h on 2 cores).
BENCH_ALGOS ?= cpo ppo ppo-lag trpo-lag cppo-pid focops cup
bench: setup
	$(PY) scripts/bench/throughput.py --algo $(BENCH_ALGOS)

bench-cvpo: setup
	$(PY) scripts/bench/cvpo.py

bench-scaling: setup
	$(PY) scripts/bench/scaling.py

# Needs no host environment: everything happens in Docker (scripts/setup/docker_check.sh --help).
DOCKER_CHECK_ARGS ?=
docker-check:
	bash scripts/setup/docker_check.sh $(DOCKER_CHECK_ARGS)

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
