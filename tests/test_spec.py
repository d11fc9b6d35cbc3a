"""SweepSpec: loading, expansion, stable run ids, axis columns and one-line errors."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.config import SimConfig
from simcore.errors import ConfigError
from sweep.spec import SweepSpec

BASE: dict[str, Any] = {
    "model": "Llama-3.2-1B",
    "gpu": "A100-40GB",
    "workload": {"kind": "chat", "users": 4, "turns": 2},
    "run": {"num_requests": 20},
}


def make(**fields: Any) -> SweepSpec:
    return SweepSpec.model_validate({"name": "t", "base": BASE, **fields})


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_zip_and_seeds_multiply() -> None:
    spec = make(
        grid={"workload.users": [2, 4, 8], "engine.prefix_caching": ["off", "prefix"]},
        zip=[{"model": ["Llama-3.2-1B", "Llama-3.2-3B"], "engine.tensor_parallel": [1, 2]}],
        seeds=2,
    )
    plan = spec.expand()
    assert spec.count() == len(plan) == 3 * 2 * 2 * 2
    assert spec.seeds == [0, 1]
    runs = list(plan.runs())
    pairs = {(r.config.model.name, r.config.engine.tensor_parallel) for r in runs}
    assert pairs == {("Llama-3.2-1B", 1), ("Llama-3.2-3B", 2)}  # zipped, not crossed
    assert [r.seed for r in runs[:4]] == [0, 1, 0, 1]  # seeds vary fastest
    assert len({r.run_id for r in runs}) == len(runs)


def test_run_id_is_sha256_of_canonical_config() -> None:
    run = make(grid={"workload.users": [3]}).expand().run_at(0)
    cfg = SimConfig.model_validate({**BASE, "workload": {**BASE["workload"], "users": 3}})
    canonical = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    assert run.config_json == canonical
    assert run.run_id == hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_run_id_ignores_key_order_axis_order_and_spelling(tmp_path: Path) -> None:
    a = write(tmp_path, """
name: a
base:
  model: Llama-3.2-1B
  gpu: A100-40GB
  workload: {kind: chat, users: 4, turns: 2}
  run: {num_requests: 20}
grid:
  gpu.memory_gib: [24, 40]
  engine.prefix_caching: [off, prefix]
seeds: [0, 1]
""", "a.yaml")
    b = write(tmp_path, """
name: b
seeds: [1, 0]
grid:
  engine.prefix_caching: [prefix, "off"]
  gpu.memory_gib: [40.0, 24]
base:
  run: {num_requests: 20}
  workload: {turns: 2, users: 4, kind: chat}
  gpu: {name: A100-40GB}
  model: {name: Llama-3.2-1B}
""", "b.yaml")
    ids_a = SweepSpec.load(a).expand().run_ids
    ids_b = SweepSpec.load(b).expand().run_ids
    assert sorted(ids_a) == sorted(ids_b)
    assert ids_a != ids_b  # same runs, numbered in another order


@settings(max_examples=15, deadline=None)
@given(st.permutations(["workload.users", "gpu.memory_gib", "engine.prefix_caching", "engine.block_size"]))
def test_run_ids_do_not_depend_on_axis_order(order: list[str]) -> None:
    values = {
        "workload.users": [1, 2],
        "gpu.memory_gib": [30, 40],
        "engine.prefix_caching": ["off", "session", "prefix"],
        "engine.block_size": [16, 32],
    }
    reference = set(make(grid=values).expand().run_ids)
    assert set(make(grid={k: values[k] for k in order}).expand().run_ids) == reference


def test_catalog_name_becomes_a_mapping_for_a_sub_key() -> None:
    plan = make(base={**BASE, "gpu": "H100-SXM-80GB"}, grid={"gpu.memory_gib": [40, 80]}).expand()
    gpus = [run.config.gpu for run in plan.runs()]
    assert [(g.name, g.memory_gib, g.flops) for g in gpus] == [
        ("H100-SXM-80GB", 40.0, 989.4e12),
        ("H100-SXM-80GB", 80.0, 989.4e12),
    ]


def test_specific_axis_refines_a_general_one() -> None:
    spec = make(grid={"gpu.memory_gib": [20], "gpu": ["A100-80GB", "H100-SXM-80GB"]})
    assert [r.config.gpu.memory_gib for r in spec.expand().runs()] == [20.0, 20.0]


def test_expansion_leaves_base_and_values_untouched() -> None:
    workloads = [{"kind": "chat", "users": 2}, {"kind": "chat", "users": 5}]
    spec = make(grid={"workload": workloads, "workload.turns": [1, 3], "gpu.memory_gib": [30]})
    before = spec.model_dump()
    runs = list(spec.expand().runs())
    got = [(r.config.workload.users, r.config.workload.turns.value) for r in runs]  # type: ignore[union-attr]
    assert got == [(2, 1), (2, 3), (5, 1), (5, 3)]
    assert spec.model_dump() == before and BASE["gpu"] == "A100-40GB"


def test_seeds_default_to_the_base_seed() -> None:
    plan = make(base={**BASE, "run": {"num_requests": 20, "seed": 7}}).expand()
    assert len(plan) == 1 and plan.run_at(0).seed == 7


def test_axis_columns_take_resolved_scalars_and_types() -> None:
    plan = make(
        grid={
            "engine.prefix_caching": [False, "prefix"],  # YAML `off` reads as False
            "gpu.memory_gib": [24, 40.5],
            "workload.user_tokens": [100, 200],  # a constant distribution, written as a number
            "model": ["Llama-3.2-1B", "Llama-3.2-3B"],  # already the model.name column
            "engine.kv_budget_gib": [None, 4],
        }
    ).expand()
    assert plan.axis_types == {
        "engine.prefix_caching": "str",
        "gpu.memory_gib": "float",
        "workload.user_tokens": "int",
        "engine.kv_budget_gib": "float",
    }
    run = plan.run_at(len(plan) - 1)
    assert run.axis_values == {
        "engine.prefix_caching": "prefix",
        "gpu.memory_gib": 40.5,
        "workload.user_tokens": 200,
        "engine.kv_budget_gib": 4.0,
    }
    assert plan.run_at(0).axis_values["engine.prefix_caching"] == "off"


def test_catalog_names_in_a_zip_are_not_an_extra_column() -> None:
    plan = make(zip=[{"engine.tensor_parallel": [1, 2], "model": ["Llama-3.2-1B", "Llama-3.2-3B"]}]).expand()
    assert plan.axis_types == {"engine.tensor_parallel": "int"}


def test_mapping_valued_axis_is_a_json_column() -> None:
    dists = [{"kind": "lognormal", "mean": 100}, {"kind": "lognormal", "mean": 300}]
    plan = make(grid={"workload.user_tokens": dists}).expand()
    assert plan.axis_types == {"workload.user_tokens": "str"}
    assert json.loads(plan.run_at(1).axis_values["workload.user_tokens"])["mean"] == 300


def test_base_may_name_a_run_file(tmp_path: Path) -> None:
    write(tmp_path, yaml.safe_dump(BASE), "run.yaml")
    spec = SweepSpec.load(write(tmp_path, "name: s\nbase: run.yaml\ngrid: {workload.users: [1, 2]}\n"))
    assert spec.base == BASE and len(spec.expand()) == 2
    assert yaml.safe_load(spec.to_yaml())["base"] == BASE  # written resolved, base inline


def test_spec_survives_its_yaml_round_trip() -> None:
    spec = make(grid={"engine.prefix_caching": [False, "prefix"]}, seeds=3)
    again = SweepSpec.model_validate(yaml.safe_load(spec.to_yaml()))
    assert again == spec and again.expand().run_ids == spec.expand().run_ids


def test_plan_runs_rebuild_the_same_runs() -> None:
    plan = make(grid={"workload.users": [1, 2, 3]}, seeds=2).expand()
    assert [r.run_id for r in plan.runs([5, 0])] == [plan.run_ids[5], plan.run_ids[0]]
    assert plan.describe(5) == "workload.users=3 seed=1"


# ---- errors name the file, the axis and the value -------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("grid: {engine.prefx_caching: [off]}",
         r"spec.yaml: grid axis engine.prefx_caching = False: invalid config: engine.prefx_caching"
         r" = False: Extra inputs are not permitted"),
        ("grid: {engin.kv_budget_gib: [4]}", r"grid axis engin.kv_budget_gib = 4: invalid config: engin"),
        ("grid: {workload.users: []}",
         r"spec.yaml: grid axis workload.users has no values: give at least one"),
        ("grid: {workload.users: 4}", r"spec.yaml: invalid config: grid.workload.users = 4: Input should be a"
                                      r" valid list"),
        ("grid: {workload.users: [4, 0]}",
         r"grid axis workload.users = 0: invalid config: workload.users = 0: must be > 0 \(raise it\)"),
        ("grid: {workload.users: [4, 4]}", r"grid axis workload.users lists 4 twice: keep one"),
        ("grid: {run.seed: [1, 2]}", r"grid axis run.seed: give seeds with the top-level `seeds:` key"),
        ("grid: {model: [Llama-9B]}", r"grid axis model = 'Llama-9B': invalid config: model = 'Llama-9B':"
                                      r" unknown model 'Llama-9B': use one of"),
        ("zip: [{model: [Llama-3.2-1B, Llama-3.2-3B], engine.tensor_parallel: [1]}]",
         r"zip\[0\]: axes that vary together need equal lengths"
         r" \(model has 2, engine.tensor_parallel has 1\)"),
        ("grid: {workload.user_tokens.mean: [10]}",
         r"grid axis workload.user_tokens.mean = 10: workload.user_tokens is 100, not a mapping"),
        ("grid: {engine.prefix_caching: [off, 'off']}",
         r"spec.yaml: runs engine.prefix_caching=False and engine.prefix_caching='off' resolve to the same"
         r" config: drop one of the values"),
        ("seeds: 0", r"seeds = 0: a seed count must be at least 1"),
        ("seeds: [1, 2, 1]", r"spec.yaml: seeds list 1 twice: list each seed once"),
        ("zip: [{model: [Llama-3.2-1B, Llama-3.2-1B], engine.tensor_parallel: [1, 1]}]",
         r"zip\[0\] axis model, engine.tensor_parallel lists \('Llama-3.2-1B', 1\) twice"),
        ("grid: {Workload users: [1]}", r"'Workload users' is not a dotted path"),
        ("name: bad name", r"name = 'bad name': use letters"),
        ("grids: {}", r"grids = {}: Extra inputs are not permitted"),
    ],
)
def test_bad_specs_are_one_line_errors(tmp_path: Path, text: str, match: str) -> None:
    head = "base:\n  model: Llama-3.2-1B\n  gpu: A100-40GB\n  workload: {kind: chat, user_tokens: 100}\n"
    body = text if text.startswith("name") else f"name: t\n{text}"
    path = write(tmp_path, f"{head}{body}\n")
    with pytest.raises(ConfigError, match=match) as err:
        SweepSpec.load(path).expand(source=str(path))
    assert "\n" not in str(err.value)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\ngrid:\n  workload.users: [1, 2\n")
    match = r"spec.yaml: malformed YAML at line 4, column 1: expected ',' or ']'"
    with pytest.raises(ConfigError, match=match):
        SweepSpec.load(path)


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read the sweep spec: No such file"):
        SweepSpec.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"must be a YAML mapping, got list"):
        SweepSpec.load(write(tmp_path, "- 1\n- 2\n"))


def test_invalid_combination_names_the_base_and_the_run() -> None:
    spec = SweepSpec.model_validate(
        {"name": "t", "base": {"gpu": "A100-40GB"}, "grid": {"workload.users": [1]}}
    )
    match = r"t: base \(run workload.users=1\): invalid config: model: Field required"
    with pytest.raises(ConfigError, match=match):
        spec.expand()


def test_configs_in_the_repository_are_valid() -> None:
    root = Path(__file__).resolve().parents[1] / "configs" / "sweeps"
    sizes = {path.stem: len(SweepSpec.load(path).expand(str(path))) for path in sorted(root.glob("*.yaml"))}
    assert 50 <= sizes["quickstart"] <= 200  # each run until steady: fewer, longer runs
    assert sizes["capacity"] >= 5000
    for name in ("quickstart", "capacity"):  # steady-state answers
        plan = SweepSpec.load(root / f"{name}.yaml").expand()
        assert all(plan.run_at(i).config.until_steady for i in range(len(plan)))


def test_every_axis_value_appears() -> None:
    grid = {"workload.users": [1, 2], "engine.block_size": [16, 32]}
    plan = make(grid=grid).expand()
    seen = {(r.config.workload.users, r.config.engine.block_size) for r in plan.runs()}  # type: ignore[union-attr]
    assert seen == set(itertools.product(*grid.values()))
