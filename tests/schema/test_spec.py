"""Experiment YAML: the schema, expand() into RunSpecs, --smoke, and malformed files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from safebench import registry
from safebench.cli.app import main
from safebench.schema.spec import (
    SMOKE_EPOCHS,
    SMOKE_STEPS_PER_EPOCH,
    ExperimentError,
    RunSpec,
    expand,
    load_experiment,
    parse_experiment,
)

ENV = "safebench/ContinuousTarget-v0"
TAB = "safebench/TabularCMDP-v0"

VALID = f"""\
name: demo
algorithms:
  - cpo
  - {{name: pcpo, label: pcpo-kl, config: {{target_kl: 0.005}}}}
environments:
  - {ENV}
  - {{id: "tests.envs_fixture:SixTupleWalk", kwargs: {{length: 5}}, cost_limit: 1}}
seeds: 3
budget: 4000
steps_per_epoch: 400
cost_limit: 5
eval: {{episodes: 2, deterministic: false, every_epochs: 2}}
resources: {{cpus: 1, gpus: 0}}
"""


def test_valid_experiment_fields_and_defaults() -> None:
    exp = parse_experiment(VALID, "demo.yaml")
    assert exp.labels == ["cpo", "pcpo-kl"]
    assert exp.seeds == [0, 1, 2]
    assert exp.algorithms[1].config == {"target_kl": 0.005}
    assert exp.environments[1].kwargs == {"length": 5}
    assert exp.output_dir == Path("results/demo")
    assert exp.cost_limit == 5.0 and exp.eval.deterministic is False
    minimal = parse_experiment(
        f"name: m\nalgorithms: [p3o]\nenvironments: [{TAB}]\nseeds: [0, 1000, 2000]\n"
        "budget: 100000\noutput: elsewhere/m\n"
    )
    assert minimal.seeds == [0, 1000, 2000]
    assert (minimal.steps_per_epoch, minimal.cost_limit) == (20_000, 25.0)
    assert (minimal.resources.cpus, minimal.resources.gpus) == (1, 0.0)
    assert minimal.eval.episodes == 10 and minimal.device == "auto"
    assert minimal.output_dir == Path("elsewhere/m")
    assert minimal.ours == [] and exp.ours == []
    # the methods under test: a label, or a list of labels
    assert parse_experiment(VALID + "ours: pcpo-kl\n").ours == ["pcpo-kl"]
    assert parse_experiment(VALID + "ours: [cpo, pcpo-kl]\n").ours == ["cpo", "pcpo-kl"]


def test_expand_grid_configs_and_content_addressed_ids(tmp_path: Path) -> None:
    exp = parse_experiment(VALID, "demo.yaml")
    specs = expand(exp)
    assert len(specs) == 2 * 2 * 3
    assert all(isinstance(s, RunSpec) for s in specs)
    assert [(s.label, s.env_id, s.seed) for s in specs[:4]] == [
        ("cpo", ENV, 0),
        ("cpo", ENV, 1),
        ("cpo", ENV, 2),
        ("cpo", "tests.envs_fixture:SixTupleWalk", 0),
    ]
    pcpo = specs[-1]
    assert pcpo.algo == "pcpo" and pcpo.label == "pcpo-kl"
    # The config is resolved: the override applied, every other key at its default (fields
    # added later are left out at their default: spec_dump).
    assert pcpo.config == {**registry.resolve_config("pcpo").spec_dump(), "target_kl": 0.005}
    assert specs[0].config == registry.resolve_config("cpo").spec_dump()
    assert "cost_estimate" not in specs[0].config
    assert (pcpo.budget, pcpo.steps_per_epoch, pcpo.epochs, pcpo.cost_limit) == (4000, 400, 10, 1)
    assert pcpo.eval.episodes == 2 and pcpo.eval.every_epochs == 2
    assert pcpo.experiment == "demo"
    # Run ids: unique, stable across loads, change with the spec, not with the experiment name.
    ids = [s.run_id for s in specs]
    assert len(set(ids)) == len(ids)
    assert ids == [s.run_id for s in expand(parse_experiment(VALID))]
    renamed = expand(parse_experiment(VALID.replace("name: demo", "name: other")))
    assert [s.run_id for s in renamed] == ids
    longer = expand(parse_experiment(VALID.replace("budget: 4000", "budget: 4400")))
    assert not set(s.run_id for s in longer) & set(ids)
    assert specs[0].run_dir(tmp_path) == (
        tmp_path / "cpo" / "safebench_ContinuousTarget-v0" / f"seed0-{ids[0][:8]}"
    )
    assert specs[3].run_dir(tmp_path).parent.name == "tests.envs_fixture_SixTupleWalk"
    # An env's own cost limit wins over the experiment's.
    assert {s.env_id: s.cost_limit for s in specs} == {
        ENV: 5.0,
        "tests.envs_fixture:SixTupleWalk": 1.0,
    }


def test_env_budget_overrides_the_experiment_budget() -> None:
    text = VALID.replace("cost_limit: 1}", "cost_limit: 1, budget: 1200}")
    assert text != VALID
    specs = expand(parse_experiment(text))
    budgets = {(s.env_id, s.budget, s.epochs) for s in specs}
    assert budgets == {(ENV, 4000, 10), ("tests.envs_fixture:SixTupleWalk", 1200, 3)}
    # the other env's runs are the same runs as without the override
    plain = {s.run_id for s in expand(parse_experiment(VALID)) if s.env_id == ENV}
    assert plain == {s.run_id for s in specs if s.env_id == ENV}
    smoke = expand(parse_experiment(text, smoke=True))
    assert {s.budget for s in smoke} == {SMOKE_EPOCHS * SMOKE_STEPS_PER_EPOCH}


def test_a_cost_limit_list_sweeps_the_limit_with_distinct_runs(tmp_path: Path) -> None:
    """`cost_limit: [3, 5, 8]` runs every cell once per limit; one limit keeps its old ids."""
    sweep = expand(parse_experiment(VALID.replace("cost_limit: 5\n", "cost_limit: [3, 5, 8]\n")))
    # the env without a limit of its own sweeps; the one with its own (1) does not
    cells = [(s.label, s.env_id, s.cost_limit, s.seed) for s in sweep]
    assert len(cells) == len(set(cells)) == 2 * (3 + 1) * 3
    assert cells[:4] == [("cpo", ENV, 3.0, 0), ("cpo", ENV, 3.0, 1), ("cpo", ENV, 3.0, 2),
                         ("cpo", ENV, 5.0, 0)]  # fmt: skip
    assert {s.cost_limit for s in sweep if s.env_id != ENV} == {1.0}
    ids = [s.run_id for s in sweep]
    dirs = [s.run_dir(tmp_path) for s in sweep]
    assert len(set(ids)) == len(ids) and len(set(dirs)) == len(dirs)
    # runs that differ only in the limit sit side by side under <label>/<env>/
    same_cell = [
        s.run_dir(tmp_path) for s in sweep if (s.label, s.env_id, s.seed) == ("cpo", ENV, 0)
    ]
    assert len(same_cell) == 3 and len({d.parent for d in same_cell}) == 1
    # the single-limit experiment's runs are the sweep's runs at that limit, spec for spec
    single = expand(parse_experiment(VALID))
    at_5 = {s.run_id: s for s in sweep if s.cost_limit in (5.0, 1.0)}
    assert {s.run_id for s in single} == set(at_5)
    assert all(at_5[s.run_id].model_dump() == s.model_dump() for s in single)
    # a one-item list is the scalar; an env entry sweeps its own env only
    one = expand(parse_experiment(VALID.replace("cost_limit: 5\n", "cost_limit: [5]\n")))
    assert [s.run_id for s in one] == [s.run_id for s in single]
    own = expand(parse_experiment(VALID.replace("cost_limit: 1}", "cost_limit: [1, 2]}")))
    assert {(s.env_id, s.cost_limit) for s in own} == {
        (ENV, 5.0),
        ("tests.envs_fixture:SixTupleWalk", 1.0),
        ("tests.envs_fixture:SixTupleWalk", 2.0),
    }
    assert {s.run_id for s in single} < {s.run_id for s in own}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("[]", "an empty list of cost limits"),
        ("[3, 5, 3.0]", "cost limit 3 is listed twice"),
        ("[3, -1]", "cost limit -1 in [3, -1] is not a number >= 0"),
        ("[3, '5']", "cost limit '5' in [3, '5'] is not a number >= 0"),
        ("-2", "got -2; expected a number >= 0, or a non-empty list"),
        ("yes", "got True; expected a number >= 0"),
    ],
)
def test_a_bad_cost_limit_is_one_line_at_its_key(value: str, problem: str) -> None:
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(VALID.replace("cost_limit: 5\n", f"cost_limit: {value}\n"), "x.yaml")
    assert caught.value.field == "cost_limit" and caught.value.line == 11
    assert problem in str(caught.value)


def test_smoke_shrinks_budget_keeps_every_cell() -> None:
    exp = parse_experiment(VALID, smoke=True)
    specs = expand(exp)
    assert exp.name == "demo-smoke" and exp.output_dir == Path("results/demo-smoke")
    assert {(s.label, s.env_id) for s in specs} == {
        (a, e) for a in ("cpo", "pcpo-kl") for e in (ENV, "tests.envs_fixture:SixTupleWalk")
    }
    assert {s.seed for s in specs} == {0, 1}
    assert all(s.budget == SMOKE_EPOCHS * SMOKE_STEPS_PER_EPOCH for s in specs)
    assert all(s.epochs == SMOKE_EPOCHS and s.eval.episodes == 1 for s in specs)
    assert specs[-1].config["target_kl"] == 0.005  # variants keep their configs


def test_shipped_experiments_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "experiments"
    quick = load_experiment(root / "quickstart.yaml")
    assert quick.output_dir == Path("results/quickstart")  # where `make run` reports from
    smoke = load_experiment(root / "smoke.yaml")
    assert len(expand(smoke)) >= 4 and smoke.budget <= 5_000
    # the cost-limit sweep whose report is results/reference/cost-limit-sweep
    sweep = expand(load_experiment(root / "cost_limit_sweep.yaml"))
    assert len(sweep) == len({s.run_id for s in sweep}) == 2 * 3 * 3
    assert sorted({s.cost_limit for s in sweep}) == [3.0, 5.0, 8.0]


# A fresh-seed replication is only evidence about a grid's runs if everything but the seed is
# the grid's: resolved algorithm config, env, budget, epoch size, cost limit, vector envs.
FRESH_SEEDS = [
    ("halfcheetah_fresh_seeds", "fidelity_baselines_official_halfcheetah"),
    ("hopper_fresh_seeds", "fidelity_baselines_official"),
    ("navigation_fresh_seeds", "fidelity_navigation"),
    ("official_protocol_fresh_seeds", "fidelity_official_protocol"),
]


@pytest.mark.parametrize(("fresh", "grid"), FRESH_SEEDS)
def test_fresh_seed_replications_differ_from_their_grid_in_the_seed_only(
    fresh: str, grid: str
) -> None:
    root = Path(__file__).resolve().parents[2] / "experiments"
    ignore = {"seed", "experiment"}

    def runs(stem: str) -> list[RunSpec]:
        return expand(load_experiment(root / f"{stem}.yaml"))

    grid_runs = {(s.label, s.env_id): s.model_dump(exclude=ignore) for s in runs(grid)}
    fresh_runs = runs(fresh)
    assert fresh_runs
    for spec in fresh_runs:
        assert grid_runs[(spec.label, spec.env_id)] == spec.model_dump(exclude=ignore), spec.label
    # and the seeds are new ones
    assert not {s.seed for s in fresh_runs} & {s.seed for s in runs(grid)}


# ---------------------------------------------------------------------------------------------
# Malformed experiment files: exit code 2, one line naming the problem, nothing written
# ---------------------------------------------------------------------------------------------

BASE = {
    "name": "name: bad",
    "algorithms": "algorithms: [cpo, pcpo]",
    "environments": f"environments: [{ENV}]",
    "seeds": "seeds: 2",
    "budget": "budget: 2000",
    "steps_per_epoch": "steps_per_epoch: 400",
}


def _yaml(**changes: str | None) -> str:
    lines = {**BASE, **changes}
    return "".join(f"{v}\n" for v in lines.values() if v is not None)


# (id, file text, fragments the one-line message must contain)
MALFORMED: list[tuple[str, str, list[str]]] = [
    ("missing-field", _yaml(budget=None), ["line 1", "budget", "missing required key"]),
    ("wrong-type", _yaml(budget="budget: lots"), ["line 5", "budget", "valid integer", "'lots'"]),
    (
        "float-notation",
        _yaml(budget="budget: 1e6"),
        ["line 5", "budget", "write 1000000"],
    ),
    (
        "unknown-algorithm",
        _yaml(algorithms="algorithms: [cpo, cpoo]"),
        ["line 2", "algorithms[1].name", "unknown algorithm 'cpoo'", "Did you mean"],
    ),
    (
        "unknown-env",
        _yaml(environments="environments: [SafetyPointGoal9-v0]"),
        ["line 3", "environments[0]", "unknown env id 'SafetyPointGoal9-v0'", "SafetyPointGoal1"],
    ),
    (
        "unknown-custom-env",
        _yaml(environments="environments: ['nopkg_zz.envs:Env']"),
        ["line 3", "environments[0]", "nopkg_zz"],
    ),
    ("negative-budget", _yaml(budget="budget: -5"), ["line 5", "budget", "greater than 0"]),
    (
        "ours-not-a-label",
        _yaml(steps_per_epoch="steps_per_epoch: 400\nours: [cpoo]"),
        ["line 7", "ours[0]", "'cpoo' is not one of this experiment's algorithm labels"],
    ),
    (
        "duplicate-variant-labels",
        _yaml(
            algorithms="algorithms:\n  - {name: cpo, label: v}\n  - {name: pcpo, label: v}",
        ),
        ["line 4", "algorithms[1]", "label 'v' is already used", "line 3"],
    ),
    (
        "duplicate-default-labels",
        _yaml(algorithms="algorithms: [cpo, {name: cpo, config: {target_kl: 0.02}}]"),
        ["line 2", "label 'cpo' is already used", "own label"],
    ),
    (
        "yaml-syntax",
        _yaml(seeds="seeds: [1, 2"),
        ["line 5", "YAML syntax error"],
    ),
    (
        "yaml-indentation",
        _yaml(budget="budget: 2000\n  steps: 3"),
        ["line 6", "YAML syntax error", "indentation"],
    ),
    (
        "unknown-top-level-key",
        _yaml(budget="budget: 2000\nbudgte: 3"),
        ["line 6", "budgte", "unknown key", "did you mean 'budget'"],
    ),
    (
        "unknown-config-key",
        _yaml(algorithms="algorithms: [{name: cpo, config: {target_kll: 0.1}}]"),
        ["line 2", "algorithms[0].config", "unknown config key 'target_kll'", "Valid keys"],
    ),
    (
        "wrong-config-type",
        _yaml(algorithms="algorithms: [{name: cpo, config: {target_kl: big}}]"),
        ["line 2", "algorithms[0].config", "target_kl"],
    ),
    (
        "unknown-eval-key",
        _yaml(budget="budget: 2000\neval: {episodes: 2, every: 3}"),
        ["line 6", "eval.every", "unknown key", "every_epochs"],
    ),
    (
        "wrong-bool",
        _yaml(budget="budget: 2000\neval:\n  deterministic: sure"),
        ["line 7", "eval.deterministic", "valid boolean"],
    ),
    (
        "object-tag",
        _yaml(name="name: !!python/object/apply:os.system ['touch pwned']"),
        ["line 1", "!!python/object/apply:os.system", "not allowed", "plain YAML"],
    ),
    ("duplicate-key", _yaml(budget="budget: 2000\nbudget: 3000"), ["line 6", "duplicate key"]),
    ("zero-seed-count", _yaml(seeds="seeds: 0"), ["line 4", "seeds", "at least 1"]),
    ("duplicate-seed", _yaml(seeds="seeds: [3, 7, 3]"), ["line 4", "seeds[2]", "listed twice"]),
    ("negative-seed", _yaml(seeds="seeds: [0, -1]"), ["line 4", "seeds[1]", ">= 0"]),
    (
        "epoch-over-budget",
        _yaml(steps_per_epoch="steps_per_epoch: 5000"),
        ["line 6", "steps_per_epoch", "larger than the budget"],
    ),
    (
        "env-budget-under-epoch",
        _yaml(environments=f"environments: [{{id: {ENV}, budget: 200}}]"),
        ["line 3", "environments[0].budget", "smaller than steps_per_epoch"],
    ),
    (
        "label-escapes-output",
        _yaml(algorithms="algorithms: [{name: cpo, label: ../../etc}]"),
        ["line 2", "algorithms[0].label", "not a valid name"],
    ),
    ("name-with-slash", _yaml(name="name: a/b"), ["line 1", "name", "not a valid name"]),
    (
        "fractional-gpus-above-one",
        _yaml(budget="budget: 2000\nresources: {gpus: 1.5}"),
        ["line 6", "resources.gpus", "whole number"],
    ),
    (
        "cuda-without-gpu",
        _yaml(budget="budget: 2000\ndevice: cuda"),
        ["line 6", "device", "resources.gpus"],
    ),
    (
        "duplicate-env",
        _yaml(environments=f"environments: [{ENV}, {{id: {ENV}, kwargs: {{}}}}]"),
        ["line 3", "environments[1]", "already listed"],
    ),
    ("empty-list", _yaml(algorithms="algorithms: []"), ["line 2", "algorithms", "at least 1"]),
    (
        "entry-not-mapping",
        _yaml(algorithms="algorithms: [[cpo]]"),
        ["line 2", "algorithms[0]", "mapping"],
    ),
    ("empty-file", "", ["line 1", "empty"]),
    ("top-level-list", "- cpo\n- pcpo\n", ["line 1", "must be a mapping"]),
]


@pytest.mark.parametrize(
    ("text", "fragments"), [(t, f) for _, t, f in MALFORMED], ids=[i for i, _, _ in MALFORMED]
)
def test_malformed_experiment_exit_2_one_line_nothing_written(
    text: str,
    fragments: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "exp.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)  # the default output, results/bad, would land here
    monkeypatch.setattr(sys, "argv", ["safebench", "run", "exp.yaml", "--backend", "local"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    message = err.strip()
    assert "\n" not in message, message
    assert message.startswith("error: exp.yaml")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "Traceback" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]  # nothing written


def test_malformed_table_is_large_enough() -> None:
    assert len(MALFORMED) >= 15


def test_every_problem_of_a_file_is_reported_in_line_order() -> None:
    with pytest.raises(ExperimentError) as info:
        parse_experiment(_yaml(budget="budget: -1\nbudgte: 3", seeds="seeds: x"), "f.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.index("line 4") < message.index("line 5") < message.index("line 6")


def test_missing_file_and_real_process_exit_code(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(_yaml(budget="budget: -5"))
    for name, expected in (("nope.yaml", "does not exist"), ("bad.yaml", "greater than 0")):
        proc = subprocess.run(
            [sys.executable, "-m", "safebench.cli", "run", name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        )
        assert proc.returncode == 2
        assert expected in proc.stderr and proc.stderr.count("\n") == 1
        assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
