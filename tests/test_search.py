"""SLO capacity search: the bisection, the SLO verdicts, probes as ordinary runs, capacity/,
resume, and the same boundary as a dense grid with fewer runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.errors import ConfigError
from sweep import analysis
from sweep.boundary import Bisection
from sweep.capacity import capacity_rows
from sweep.cli import main
from sweep.executors import SerialExecutor, Task
from sweep.search import TaskFeed
from sweep.slo import Slo
from sweep.spec import SweepSpec

Capture = pytest.CaptureFixture[str]

BASE: dict[str, Any] = {
    "model": "Llama-3.2-1B",
    "gpu": "A100-40GB",
    "workload": {"kind": "chat", "users": 4, "turns": 2, "think_time_s": 0.5},
    "run": {"num_requests": 60},
}
SLO = {"ttft_p99_s": 0.2}


def search_spec(name: str = "srch", high: int = 24, seeds: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "base": BASE,
        "grid": {"engine.prefix_caching": ["off", "prefix"]},
        "seeds": seeds,
        "search": {"axis": "workload.users", "slo": SLO, "low": 1, "high": high},
    }


def grid_spec(values: list[int], name: str = "dense", seeds: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "base": BASE,
        "seeds": seeds,
        "grid": {"engine.prefix_caching": ["off", "prefix"], "workload.users": values},
    }


def write(tmp_path: Path, spec: dict[str, Any], name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# ---- the bisection ----------------------------------------------------------------------------


def dense_boundary(points: list[float], meets: Any, goal: str) -> float | None:
    """What a dense grid says: walking from the easy end, the last value before the first failure."""
    best = None
    for v in points if goal == "max" else reversed(points):
        if not meets(v):
            break
        best = v
    return best


@settings(max_examples=300, deadline=None)
@given(
    low=st.integers(0, 50),
    span=st.integers(1, 3000),
    step=st.sampled_from([1, 1, 2, 0.5, 0.25, 3.5]),
    goal=st.sampled_from(["max", "min"]),
    where=st.floats(-0.2, 1.2),
)
def test_bisection_finds_the_dense_grid_boundary(
    low: int, span: int, step: float, goal: str, where: float
) -> None:
    integer = float(step).is_integer()
    high = low + span
    b = Bisection(low, high, step, goal, integer)
    threshold = low + where * span
    meets = (lambda v: v <= threshold) if goal == "max" else (lambda v: v >= threshold)
    probes = 0
    while (value := b.next()) is not None:
        assert low <= value <= high
        assert b.index(value) not in b.results  # never the same value twice
        b.record(value, meets(value))
        probes += 1
        assert probes <= b.max_probes()
    assert b.boundary == dense_boundary(b.points, meets, goal)
    assert b.bracketed == (b.boundary is not None and b.first_fail is not None)
    if b.bracketed:  # neighbours on the grid
        assert abs(b.index(b.boundary) - b.index(b.first_fail)) == 1
    if len(b.points) >= 64:
        assert probes < len(b.points) / 2


def test_bisection_probes_in_order_for_a_known_case() -> None:
    b = Bisection(1, 1024, 1, "max", integer=True)
    seen = []
    while (v := b.next()) is not None:
        seen.append(v)
        b.record(v, v <= 300)
    assert seen == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 384, 320, 288, 304, 296, 300, 302, 301]
    assert (b.boundary, b.first_fail, b.bracketed) == (300, 301, True)
    down = Bisection(16, 80, 1.0, "min")
    seen = []
    while (v := down.next()) is not None:
        seen.append(v)
        down.record(v, v >= 41.5)
    assert seen == [80, 40, 60, 50, 45, 42, 41] and down.boundary == 42


def test_bisection_ends_unbracketed_at_either_end() -> None:
    every = Bisection(1, 64, 1, "max", integer=True)
    while (v := every.next()) is not None:
        every.record(v, True)
    assert (every.boundary, every.first_fail, every.bracketed) == (64, None, False)
    none = Bisection(16, 80, 1, "min")
    while (v := none.next()) is not None:
        none.record(v, False)
    assert (none.boundary, none.first_fail, none.bracketed, len(none.results)) == (None, 80, False, 1)


# ---- SLO verdicts -----------------------------------------------------------------------------


def runs_frame(**cols: list[Any]) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    base: dict[str, list[Any]] = {"status": ["ok"] * n, "steady": [True] * n, "steady_reason": [""] * n}
    return pd.DataFrame({**base, **cols})


def test_an_overloaded_run_does_not_meet_the_slo_whatever_its_latency() -> None:
    slo = Slo.parse("ttft_p99_s<1")
    runs = runs_frame(
        ttft_p99_s=[0.5, 0.5, 2.0, None, 0.5],
        steady=[True, False, True, True, False],
        steady_reason=["", "overloaded: queue grows 3.1 req/s", "", "", "too few measured requests"],
        status=["ok", "ok", "ok", "ok", "ok"],
    )
    assert slo.meets(runs).tolist() == [True, False, False, False, True]
    why = slo.why_not(runs).tolist()
    assert why[:4] == ["", "overloaded", "ttft_p99_s 2 (limit < 1)", "ttft_p99_s none (limit < 1)"]
    infeasible = runs_frame(ttft_p99_s=[None], status=["infeasible"])
    assert slo.meets(infeasible).tolist() == [False] and slo.why_not(infeasible).tolist() == [
        "status infeasible"
    ]


def test_slo_text_forms_and_per_request_thresholds() -> None:
    slo = Slo.parse("ttft_p99<500ms, tpot_p99_s<=0.05")
    assert slo.text() == "ttft_p99_s<0.5,tpot_p99_s<=0.05"
    assert slo.describe() == "TTFT p99 < 0.5 s and TPOT p99 ≤ 0.05 s"
    assert slo.per_request() == {"ttft_s": 0.5, "tpot_s": 0.05}
    assert Slo.from_mapping({"e2e_p90_s": 20, "ttft_mean_s": 2}).per_request() == {
        "e2e_s": 20.0,
        "ttft_s": 2.0,
    }
    assert slo.same_as(Slo.parse("tpot_p99_s<0.05, ttft_p99_s<=0.5"))
    assert not slo.same_as(Slo.parse("ttft_p99_s<0.5")) and not slo.same_as(
        Slo.parse("ttft_p99_s>0.5,tpot_p99_s<0.05")
    )
    with pytest.raises(ConfigError, match="did you mean ttft_p99_s"):
        Slo.parse("ttft_p99_z<1")
    with pytest.raises(ConfigError, match="write METRIC<VALUE"):
        Slo.parse("fast please")


def test_a_probe_meets_the_slo_only_when_every_seed_does() -> None:
    slo = Slo.parse("ttft_p99_s<1")
    runs = runs_frame(
        **{
            "workload.users": [8, 8, 16, 16, 32, 32],
            "seed": [0, 1] * 3,
            "ttft_p99_s": [0.2, 0.3, 0.5, 1.5, 2.0, 3.0],
            "throughput_rps": [1, 1, 2, 2, 3, 3],
        }
    )
    row = capacity_rows(runs, "workload.users", slo, "max", []).iloc[0]
    assert (row["boundary"], row["first_fail"], row["bracketed"], row["probes"], row["runs"]) == (
        8,
        16,
        True,
        3,
        6,
    )
    assert row["why_fail"] == "ttft_p99_s 1.5 (limit < 1)"
    assert row["ttft_p99_s"] == pytest.approx(0.25) and row["throughput_rps"] == 1


# ---- probes are ordinary runs -----------------------------------------------------------------


def test_a_probe_has_the_run_id_of_the_same_grid_run() -> None:
    spec = SweepSpec.model_validate(search_spec(seeds=2))
    plan = spec.expand()
    assert plan.axis_types["workload.users"] == "int" and plan.seeds_per_cell == 2
    same = grid_spec([5], seeds=2)
    same["base"] = {**BASE, "run": {**BASE["run"], "slo": {"ttft_s": 0.2}}}  # the SLO the probes carry
    grid = SweepSpec.model_validate(same).expand()
    from sweep.search import probe_settings

    probes = [plan.probe_at(i, probe_settings(spec.search, 5)) for i in range(len(plan))]  # type: ignore[arg-type]
    assert sorted(p.run_id for p in probes) == sorted(grid.run_ids)  # the same runs, the same ids
    assert all(p.config.run.slo is not None and p.config.run.slo.ttft_s == 0.2 for p in probes)
    assert all(p.config.workload.users == 5 for p in probes)  # type: ignore[union-attr]
    assert [p.axis_values["workload.users"] for p in probes] == [5] * 4


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"grid": {"workload.users": [1, 2]}}, "search.axis workload.users is also a grid or zip axis"),
        ({"search": {"axis": "workload.users", "slo": SLO, "low": 1.5, "high": 8}}, "search.low = 1.5"),
        (
            {"search": {"axis": "workload.users", "slo": SLO, "low": 8, "high": 8}},
            "must be below search.high",
        ),
        ({"search": {"axis": "workload.users", "slo": {"ttft_p99": 1}, "low": 1, "high": 8}}, None),
        (
            {"search": {"axis": "workload.users", "slo": {"tfft_p99_s": 1}, "low": 1, "high": 8}},
            "did you mean ttft_p99_s",
        ),
        (
            {"search": {"axis": "workload.users", "slo": SLO, "low": 1, "high": 10**7}},
            r"search.high = 10000000 \(workload.users\).*must be <= 1000000",
        ),
        ({"search": {"axis": "engine.max_num_seqs", "slo": SLO, "low": 1, "high": 8}}, "goal: max"),
        (
            {"search": {"axis": "engine.prefix_caching", "slo": SLO, "low": 1, "high": 8, "goal": "max"}},
            "prefix_caching",
        ),
        (
            {"search": {"axis": "workload.userz", "slo": SLO, "low": 1, "high": 8, "goal": "max"}},
            "did you mean workload.users",
        ),
    ],
)
def test_bad_search_specs_are_one_line_errors(
    tmp_path: Path, change: dict[str, Any], says: str | None, capsys: Capture
) -> None:
    spec = search_spec()
    if "grid" in change:
        spec["grid"] = {**spec["grid"], **change["grid"]}
    else:
        spec.update(change)
    code = main(["plan", str(write(tmp_path, spec, "bad")), "--probe-runs", "0"])
    err = capsys.readouterr().err
    if says is None:  # `ttft_p99` is ttft_p99_s
        assert code == 0, err
        return
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert pytest.importorskip("re").search(says, err), err


# ---- executors take a feed that grows ---------------------------------------------------------


def test_the_serial_executor_takes_tasks_added_while_it_runs() -> None:
    plan = SweepSpec.model_validate(grid_spec([1, 2, 3])).expand()
    tasks = [Task(r.run_id, r.config_json, {"run_id": r.run_id}) for r in plan.runs()]
    feed = TaskFeed()
    feed.put(tasks[0])
    seen = []
    with SerialExecutor() as executor:
        for outcome in executor.run(feed, 1):
            seen.append(outcome.row["run_id"])
            if len(seen) < len(tasks):
                feed.put(tasks[len(seen)])  # the next one only once this one is back
    assert seen == [t.run_id for t in tasks]


@pytest.mark.ray
def test_the_ray_executor_takes_tasks_added_while_it_runs(ray_local: Any) -> None:
    from sweep.executors import RayExecutor

    plan = SweepSpec.model_validate(grid_spec([1, 2, 3])).expand()
    tasks = [Task(r.run_id, r.config_json, {"run_id": r.run_id}) for r in plan.runs()]
    feed = TaskFeed()
    feed.put(tasks[0])
    seen = []
    with RayExecutor(runs_per_task=1) as executor:
        for outcome in executor.run(feed, 1):
            seen.append(outcome.row["run_id"])
            if len(seen) < len(tasks):
                feed.put(tasks[len(seen)])
    assert seen == [t.run_id for t in tasks]


# ---- end to end -------------------------------------------------------------------------------


def run_search(tmp_path: Path, spec: dict[str, Any], out: Path, *extra: str) -> pd.DataFrame:
    assert (
        main(
            [
                "run",
                str(write(tmp_path, spec, spec["name"])),
                "--out",
                str(out),
                "--executor",
                "serial",
                "--no-progress",
                *extra,
            ]
        )
        == 0
    )
    table = analysis.load_capacity(out)
    assert table is not None
    return table.sort_values("engine.prefix_caching").reset_index(drop=True)


def test_search_finds_the_dense_grid_boundary_with_fewer_runs(tmp_path: Path, capsys: Capture) -> None:
    high = 64
    table = run_search(tmp_path, search_spec(high=high), tmp_path / "search")
    search_runs = len(analysis.load(tmp_path / "search", columns=["run_id"]))
    dense = grid_spec(list(range(1, high + 1)))
    dense["base"] = {**BASE, "run": {**BASE["run"], "slo": {"ttft_s": 0.2}}}  # as the probes carry
    assert (
        main(
            [
                "run",
                str(write(tmp_path, dense, "dense")),
                "--out",
                str(tmp_path / "grid"),
                "--executor",
                "serial",
                "--no-progress",
            ]
        )
        == 0
    )
    grid = analysis.load(tmp_path / "grid")
    from_grid = capacity_rows(grid, "workload.users", Slo.from_mapping(SLO), "max", ["engine.prefix_caching"])
    from_grid = from_grid.sort_values("engine.prefix_caching").reset_index(drop=True)
    capsys.readouterr()
    print(f"\ncapacity search: {search_runs} runs; dense grid: {len(grid)} runs")
    for (_, s), (_, g) in zip(table.iterrows(), from_grid.iterrows(), strict=True):
        print(f"  {s['engine.prefix_caching']}: search {s['boundary']} users, grid {g['boundary']} users")
        assert s["boundary"] == g["boundary"] and s["bracketed"] == g["bracketed"]
        assert s["first_fail"] == g["first_fail"] or (pd.isna(s["first_fail"]) and pd.isna(g["first_fail"]))
    assert table["bracketed"].any()  # at least one boundary inside the range: the comparison means something
    assert search_runs < len(grid) / 3
    assert table["runs"].sum() == search_runs
    # the probes are ordinary rows of runs/ with every column a grid run has
    probes = analysis.load(tmp_path / "search")
    assert set(probes.columns) == set(grid.columns) and set(probes["status"]) == {"ok"}


def test_a_resumed_search_runs_only_the_missing_probes(tmp_path: Path, capsys: Capture) -> None:
    spec = search_spec(name="resume", high=16)
    out = tmp_path / "out"
    first = run_search(tmp_path, spec, out)
    rows = analysis.load(out, columns=["run_id", "workload.users"])
    # as if interrupted: the probes above 4 users never finished
    for part in sorted((out / "runs").glob("part-*.parquet")):
        table = pq.read_table(part)
        keep = table.filter(pq.read_table(part, columns=["workload.users"])["workload.users"].to_numpy() <= 4)
        pq.write_table(keep, part)
    (out / "capacity" / "part-0.parquet").unlink()
    kept = len(analysis.load(out, columns=["run_id"]))
    capsys.readouterr()
    again = run_search(tmp_path, spec, out)
    err = capsys.readouterr().err
    assert f"{kept} probe runs already in" in err
    pd.testing.assert_frame_equal(first, again)
    assert len(analysis.load(out, columns=["run_id"])) == len(rows)
    # and once complete, nothing runs at all
    run_search(tmp_path, spec, out)
    assert f"{len(rows)} probe runs already in" in capsys.readouterr().err
    assert len(analysis.load(out, columns=["run_id"])) == len(rows)


@pytest.mark.ray
def test_search_on_ray_gives_the_serial_answer(tmp_path: Path, ray_local: Any) -> None:
    spec = search_spec(name="onray", high=16)
    serial = run_search(tmp_path, spec, tmp_path / "serial")
    assert (
        main(["run", str(write(tmp_path, spec, "onray")), "--out", str(tmp_path / "ray"), "--no-progress"])
        == 0
    )
    on_ray = analysis.load_capacity(tmp_path / "ray")
    assert on_ray is not None
    pd.testing.assert_frame_equal(serial, on_ray.sort_values("engine.prefix_caching").reset_index(drop=True))


def test_memory_search_goes_down_to_the_least_memory(tmp_path: Path, capsys: Capture) -> None:
    spec = {
        "name": "mem",
        "base": {
            **BASE,
            "workload": {**BASE["workload"], "users": 16},
            "model": "Llama-3.1-8B",
            "gpu": "A100-40GB",
        },
        "grid": {"engine.prefix_caching": ["off", "prefix"]},
        "search": {
            "axis": "gpu.memory_gib",
            "slo": {"ttft_p99_s": 2.0},
            "low": 16,
            "high": 40,
            "resolution": 1,
        },
    }
    table = run_search(tmp_path, spec, tmp_path / "mem")
    assert set(table["goal"]) == {"min"} and set(table["axis"]) == {"gpu.memory_gib"}
    runs = analysis.load(tmp_path / "mem")
    slo = Slo.from_mapping({"ttft_p99_s": 2.0})
    for _, row in table.iterrows():
        mine = runs[runs["engine.prefix_caching"] == row["engine.prefix_caching"]]
        meets = dict(zip(mine["gpu.memory_gib"], slo.meets(mine), strict=True))
        assert meets[40.0]  # the easy end
        if row["bracketed"]:
            assert meets[row["boundary"]] and not meets[row["first_fail"]]
            assert row["first_fail"] == row["boundary"] - 1
        assert all(meets[v] for v in meets if v >= row["boundary"])
    assert not math.isnan(table["ttft_p99_s"].iloc[0])
