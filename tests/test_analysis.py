"""sweep.analysis on small hand-made datasets with hand-computed answers.

``write_dataset`` (also used by test_report.py and test_query.py) writes the exact layout that
``sweep.store`` writes: runs/part-*.parquet in several parts, optional requests/run_id=*/, spec.yaml
and _kvsweep.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.errors import ConfigError
from simcore.metrics import REQUEST_FIELDS, SUMMARY_FIELDS
from sweep import analysis

_ARROW = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_()}
CONTEXT: dict[str, pa.DataType] = {
    "model.name": pa.string(),
    "gpu.name": pa.string(),
    "gpu.memory_gib": pa.float64(),
    "engine.kv_budget_gib": pa.float64(),
    "engine.tensor_parallel": pa.int64(),
    "engine.prefix_caching": pa.string(),
    "workload.kind": pa.string(),
    "workload.users": pa.int64(),
    "cluster.replicas": pa.int64(),
}
DEFAULTS: dict[str, Any] = {
    "model.name": "Llama-3.1-8B",
    "gpu.name": "H100-SXM-80GB",
    "gpu.memory_gib": 80.0,
    "engine.kv_budget_gib": None,
    "engine.tensor_parallel": 1,
    "engine.prefix_caching": "prefix",
    "workload.kind": "chat",
    "workload.users": 8,
    "cluster.replicas": 1,
}


def runs_schema(extra_axes: dict[str, pa.DataType] | None = None) -> pa.Schema:
    fields = [
        pa.field("run_id", pa.string()),
        pa.field("sweep", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        *(pa.field(k, t) for k, t in CONTEXT.items()),
        *(pa.field(k, t) for k, t in (extra_axes or {}).items()),
        *(pa.field(k, _ARROW[t]) for k, t in SUMMARY_FIELDS.items()),
        pa.field("kvsweep_version", pa.string()),
        pa.field("config_json", pa.string()),
    ]
    return pa.schema(fields)


def write_dataset(
    out: Path,
    rows: list[dict[str, Any]],
    *,
    extra_axes: dict[str, pa.DataType] | None = None,
    parts: int = 2,
    spec: dict[str, Any] | None = None,
    requests: dict[str, list[dict[str, Any]]] | None = None,
    name: str = "test-sweep",
) -> Path:
    """Write ``rows`` (dicts of column -> value; missing context columns take DEFAULTS, missing
    metrics are null) as a sweep dataset under ``out``, split round-robin into ``parts`` parts."""
    schema = runs_schema(extra_axes)
    full = []
    for i, row in enumerate(rows):
        record: dict[str, Any] = dict.fromkeys(schema.names)
        record.update(DEFAULTS)
        record.update(
            {"run_id": f"r{i:04d}", "sweep": name, "seed": 0, "status": "ok", "kvsweep_version": "0.1.0"}
        )
        record.update(row)
        record["config_json"] = json.dumps({"seed": record["seed"]})
        full.append(record)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for p in range(parts):
        chunk = full[p::parts]
        if chunk:
            table = pa.Table.from_pylist(chunk, schema=schema)
            pq.write_table(table, out / "runs" / f"part-{p:05d}-{p:08x}.parquet")
    req_schema = pa.schema([pa.field(k, _ARROW[t]) for k, t in REQUEST_FIELDS.items()])
    for run_id, reqs in (requests or {}).items():
        folder = out / "requests" / f"run_id={run_id}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(reqs, schema=req_schema), folder / "part-0.parquet")
    spec = spec or {"name": name, "base": {"model": "Llama-3.1-8B", "gpu": "H100-SXM-80GB"}, "grid": {}}
    (out / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (out / "_kvsweep.json").write_text(
        json.dumps({"version": "0.1.0", "sweep": name, "created": "2026-01-01"})
    )
    return out


def request_row(i: int, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "request_id": i,
        "session_id": i // 2,
        "turn": i % 2,
        "profile": 0,
        "arrival_s": float(i),
        "admitted_s": float(i),
        "first_token_s": i + 0.1,
        "finish_s": i + 1.0,
        "prompt_tokens": 100,
        "cached_tokens": 0,
        "output_tokens": 10,
        "prefill_computed_tokens": 100,
        "preemptions": 0,
        "warmup": False,
        "status": "completed",
        "error": "",
    }
    row.update(kw)
    return row


# A 2 (caching) x 2 (users) grid with 3 seeds, one infeasible and one failed run:
#
#   caching users seed  ttft_p99_s  throughput_rps  prefill_tokens_computed
#   off     8     0,1,2  1.0 2.0 3.0   10 12 14       1000 1000 1000
#   prefix  8     0,1,2  0.5 1.0 1.5   11 13 15        400  500  600
#   off     16    0,1    4.0 6.0       20 20          2000 2000     (seed 2 infeasible)
#   prefix  16    0,1,2  2.0 2.0 -     30 34 -         800 1200 -   (seed 2 failed)
GRID = [
    ("off", 8, 0, 1.0, 10.0, 1000),
    ("off", 8, 1, 2.0, 12.0, 1000),
    ("off", 8, 2, 3.0, 14.0, 1000),
    ("prefix", 8, 0, 0.5, 11.0, 400),
    ("prefix", 8, 1, 1.0, 13.0, 500),
    ("prefix", 8, 2, 1.5, 15.0, 600),
    ("off", 16, 0, 4.0, 20.0, 2000),
    ("off", 16, 1, 6.0, 20.0, 2000),
    ("prefix", 16, 0, 2.0, 30.0, 800),
    ("prefix", 16, 1, 2.0, 34.0, 1200),
]


def grid_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {
            "engine.prefix_caching": c,
            "workload.users": u,
            "seed": s,
            "ttft_p99_s": t,
            "ttft_p50_s": t / 2,
            "throughput_rps": r,
            "output_tokens_per_s": r * 100,
            "prefill_tokens_computed": p,
            "prefix_hit_rate": 0.0 if c == "off" else 0.5,
            "kv_capacity_tokens": 1000 * u,
        }
        for c, u, s, t, r, p in GRID
    ]
    rows.append(
        {
            "engine.prefix_caching": "off",
            "workload.users": 16,
            "seed": 2,
            "status": "infeasible",
            "error": "model does not fit",
        }
    )
    rows.append(
        {
            "engine.prefix_caching": "prefix",
            "workload.users": 16,
            "seed": 2,
            "status": "failed",
            "error": "RuntimeError: boom",
        }
    )
    return rows


@pytest.fixture
def grid_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "sweep", grid_rows(), parts=3)


# ---------------------------------------------------------------------------------------- load


def test_load_reads_every_part_in_column_order(grid_dir: Path) -> None:
    df = analysis.load(grid_dir)
    assert len(df) == 12
    assert list(df.columns) == runs_schema().names
    assert sorted(df["run_id"]) == [f"r{i:04d}" for i in range(12)]


def test_load_reads_only_requested_columns(grid_dir: Path) -> None:
    df = analysis.load(grid_dir, columns=["seed", "ttft_p99_s"])
    assert list(df.columns) == ["seed", "ttft_p99_s"]
    assert len(df) == 12


def test_load_unifies_parts_with_all_null_columns(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "d", [{"seed": 0}], parts=1)
    # a second part whose error column has type null (a writer that inferred types)
    table = pa.Table.from_pylist([{"run_id": "x", "seed": 1, "status": "ok", "error": None}])
    pq.write_table(table, out / "runs" / "part-00001-deadbeef.parquet")
    df = analysis.load(out, columns=["run_id", "seed", "error"])
    assert sorted(df["seed"]) == [0, 1]


def test_load_missing_dataset_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no sweep dataset here \(missing runs/\): run `kvsweep run"):
        analysis.load(tmp_path)


def test_load_unknown_column_names_the_known_ones(grid_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"no column 'ttft' in runs/: use one of run_id, sweep"):
        analysis.load(grid_dir, columns=["ttft"])


def test_load_requests_filters_runs(tmp_path: Path) -> None:
    out = write_dataset(
        tmp_path / "d",
        [{"seed": 0}, {"seed": 1}],
        requests={"r0000": [request_row(0), request_row(1)], "r0001": [request_row(0)]},
    )
    req = analysis.load_requests(out, run_ids=["r0000"])
    assert len(req) == 2
    assert set(req["run_id"]) == {"r0000"}


def test_read_info_and_grid_keys(tmp_path: Path) -> None:
    spec = {
        "name": "s",
        "base": {},
        "grid": {"workload.users": [1, 2], "gpu.memory_gib": [40, 80]},
        "zip": [{"engine.kv_budget_gib": [10, 20], "engine.max_num_seqs": [8, 16]}],
    }
    out = write_dataset(tmp_path / "d", [{}], spec=spec, name="s")
    info = analysis.read_info(out)
    assert (info.name, info.version, info.created) == ("s", "0.1.0", "2026-01-01")
    assert info.grid_keys == [
        "workload.users",
        "gpu.memory_gib",
        "engine.kv_budget_gib",
        "engine.max_num_seqs",
    ]


# ---------------------------------------------------------------------------------------- axes


def test_axes_are_the_varying_columns_between_context_and_metrics(tmp_path: Path) -> None:
    rows = [
        {"engine.max_num_seqs": n, "engine.prefix_caching": c, "seed": s}
        for n in (64, 128)
        for c in ("off", "prefix")
        for s in (0, 1)
    ]
    out = write_dataset(tmp_path / "d", rows, extra_axes={"engine.max_num_seqs": pa.int64()})
    assert analysis.axes(analysis.load(out)) == ["engine.prefix_caching", "engine.max_num_seqs"]


# ---------------------------------------------------------------------------------------- t


def test_t975_table_and_expansion() -> None:
    assert analysis.t975(1) == pytest.approx(12.706205, abs=1e-6)
    assert analysis.t975(2) == pytest.approx(4.302653, abs=1e-6)
    assert analysis.t975(30) == pytest.approx(2.042272, abs=1e-6)
    assert analysis.t975(40) == pytest.approx(2.021075, abs=2e-6)
    assert analysis.t975(120) == pytest.approx(1.979930, abs=2e-6)
    assert math.isnan(analysis.t975(0))


# ---------------------------------------------------------------------------------------- summarize


def test_summarize_mean_and_ci_over_seeds(grid_dir: Path) -> None:
    df = analysis.load(grid_dir)
    s = analysis.summarize(
        df, by=["engine.prefix_caching", "workload.users"], metrics=["ttft_p99_s", "throughput_rps"]
    )
    assert list(s.columns) == [
        "engine.prefix_caching",
        "workload.users",
        "n_runs",
        "n_ok",
        "ttft_p99_s_mean",
        "ttft_p99_s_ci95",
        "throughput_rps_mean",
        "throughput_rps_ci95",
    ]
    rows = {(r["engine.prefix_caching"], r["workload.users"]): r for r in s.to_dict("records")}
    assert list(rows) == [("off", 8), ("off", 16), ("prefix", 8), ("prefix", 16)]
    t2, t1 = 4.302653, 12.706205
    # off, 8: ttft 1, 2, 3 -> mean 2, s 1, n 3; throughput 10, 12, 14 -> mean 12, s 2
    off8 = rows[("off", 8)]
    assert (off8["n_runs"], off8["n_ok"]) == (3, 3)
    assert off8["ttft_p99_s_mean"] == pytest.approx(2.0)
    assert off8["ttft_p99_s_ci95"] == pytest.approx(t2 * 1 / math.sqrt(3), rel=1e-6)
    assert off8["throughput_rps_mean"] == pytest.approx(12.0)
    assert off8["throughput_rps_ci95"] == pytest.approx(t2 * 2 / math.sqrt(3), rel=1e-6)
    # off, 16: ttft 4, 6 (seed 2 infeasible, null) -> mean 5, s sqrt(2), n 2; throughput 20, 20 -> CI 0
    off16 = rows[("off", 16)]
    assert (off16["n_runs"], off16["n_ok"]) == (3, 2)
    assert off16["ttft_p99_s_mean"] == pytest.approx(5.0)
    assert off16["ttft_p99_s_ci95"] == pytest.approx(t1 * math.sqrt(2) / math.sqrt(2), rel=1e-6)
    assert off16["throughput_rps_ci95"] == 0.0
    # prefix, 16: throughput 30, 34 -> mean 32, s 2*sqrt(2)
    assert rows[("prefix", 16)]["throughput_rps_mean"] == pytest.approx(32.0)
    assert rows[("prefix", 16)]["throughput_rps_ci95"] == pytest.approx(t1 * 2 * math.sqrt(2) / math.sqrt(2))


def test_summarize_single_seed_has_no_ci(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "d", [{"ttft_p99_s": 1.5}])
    s = analysis.summarize(analysis.load(out), by=["model.name"], metrics=["ttft_p99_s"])
    assert s["ttft_p99_s_mean"].tolist() == [1.5]
    assert math.isnan(s["ttft_p99_s_ci95"].iloc[0])


def test_summarize_unknown_metric(grid_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"metric 'ttft' is not a column"):
        analysis.summarize(analysis.load(grid_dir), by=["seed"], metrics=["ttft"])


# ---------------------------------------------------------------------------------------- compare


def test_compare_ratios_and_differences_per_cell(grid_dir: Path) -> None:
    c = analysis.compare(analysis.load(grid_dir))
    assert c["workload.users"].tolist() == [8, 16]
    assert c["engine.prefix_caching"].tolist() == ["prefix", "prefix"]
    u8, u16 = c.to_dict("records")
    # users 8: ttft p99 mean on 1.0 vs off 2.0; throughput 13 vs 12; prefill 500 vs 1000
    assert (u8["ttft_p99_s"], u8["ttft_p99_s_base"]) == (pytest.approx(1.0), pytest.approx(2.0))
    assert u8["ttft_p99_s_ratio"] == pytest.approx(0.5)
    assert u8["ttft_p99_s_diff"] == pytest.approx(-1.0)
    assert u8["ttft_p50_s_ratio"] == pytest.approx(0.5)
    assert u8["throughput_rps_ratio"] == pytest.approx(13 / 12)
    assert u8["throughput_rps_diff"] == pytest.approx(1.0)
    assert u8["output_tokens_per_s_diff"] == pytest.approx(100.0)
    assert u8["prefill_tokens_computed_ratio"] == pytest.approx(0.5)
    assert u8["prefill_tokens_computed_diff"] == pytest.approx(-500.0)
    assert (u8["n_ok"], u8["n_ok_base"]) == (3, 3)
    # users 16: ttft on 2.0 (the failed seed drops out) vs off 5.0; throughput 32 vs 20; prefill 1000 vs 2000
    assert u16["ttft_p99_s_ratio"] == pytest.approx(0.4)
    assert u16["ttft_p99_s_diff"] == pytest.approx(-3.0)
    assert u16["throughput_rps_ratio"] == pytest.approx(1.6)
    assert u16["prefill_tokens_computed_ratio"] == pytest.approx(0.5)
    assert (u16["n_ok"], u16["n_ok_base"]) == (2, 2)


def test_compare_matches_on_every_other_axis(tmp_path: Path) -> None:
    rows = [
        {"model.name": m, "engine.prefix_caching": c, "gpu.memory_gib": g, "ttft_p99_s": t}
        for m, c, g, t in [
            ("A", "off", 40.0, 4.0),
            ("A", "prefix", 40.0, 1.0),
            ("A", "session", 40.0, 2.0),
            ("A", "off", 80.0, 3.0),
            ("A", "prefix", 80.0, 3.0),
            ("B", "off", 40.0, 10.0),
            ("B", "prefix", 40.0, 5.0),
            ("B", "prefix", 80.0, 1.0),  # no baseline: ratio is nan, the row stays
        ]
    ]
    out = write_dataset(tmp_path / "d", rows)
    c = analysis.compare(analysis.load(out), metrics=["ttft_p99_s"])
    got = [(r["model.name"], r["gpu.memory_gib"], r["engine.prefix_caching"]) for r in c.to_dict("records")]
    assert got == [
        ("A", 40.0, "prefix"),
        ("A", 40.0, "session"),
        ("A", 80.0, "prefix"),
        ("B", 40.0, "prefix"),
        ("B", 80.0, "prefix"),
    ]
    assert c["ttft_p99_s_ratio"].tolist()[:4] == [0.25, 0.5, 1.0, 0.5]
    assert math.isnan(c["ttft_p99_s_ratio"].iloc[4])


def test_compare_zero_baseline_gives_nan_ratio(tmp_path: Path) -> None:
    rows = [
        {"engine.prefix_caching": "off", "prefix_hit_rate": 0.0},
        {"engine.prefix_caching": "prefix", "prefix_hit_rate": 0.4},
    ]
    out = write_dataset(tmp_path / "d", rows)
    c = analysis.compare(analysis.load(out), metrics=["prefix_hit_rate"])
    assert math.isnan(c["prefix_hit_rate_ratio"].iloc[0])
    assert c["prefix_hit_rate_diff"].iloc[0] == pytest.approx(0.4)


def test_compare_unknown_baseline(grid_dir: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"baseline engine.prefix_caching='none' is not in the dataset: "
        r"use one of off, prefix",
    ):
        analysis.compare(analysis.load(grid_dir), baseline="none")


def test_load_then_pandas_agrees_with_summary(grid_dir: Path) -> None:
    df = analysis.load(grid_dir)
    ok = df[df["status"] == "ok"]
    expected = ok.groupby("engine.prefix_caching")["ttft_p99_s"].mean()
    s = analysis.summarize(df, by=["engine.prefix_caching"], metrics=["ttft_p99_s"])
    assert s.set_index("engine.prefix_caching")["ttft_p99_s_mean"].to_dict() == pytest.approx(
        expected.to_dict()
    )
    assert isinstance(s, pd.DataFrame)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["off", "prefix"]), st.floats(0.001, 1000.0), st.floats(0.001, 1000.0)),
        min_size=1,
        max_size=12,
    )
)
def test_summarize_and_compare_agree_with_numpy(cells: list[tuple[str, float, float]]) -> None:
    """Property: the mean is numpy's mean, the CI is t * s / sqrt(n), and compare's value = ratio * base."""
    df = pd.DataFrame(
        {
            "status": "ok",
            "seed": range(len(cells)),
            "engine.prefix_caching": [c for c, _, _ in cells],
            "ttft_p99_s": [t for _, t, _ in cells],
            "throughput_rps": [r for _, _, r in cells],
        }
    )
    s = analysis.summarize(df, by=["engine.prefix_caching"], metrics=["ttft_p99_s"]).set_index(
        "engine.prefix_caching"
    )
    for mode, group in df.groupby("engine.prefix_caching"):
        values = group["ttft_p99_s"].to_numpy()
        assert s.loc[mode, "ttft_p99_s_mean"] == pytest.approx(values.mean())
        if len(values) > 1:
            expected = analysis.t975(len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
            assert s.loc[mode, "ttft_p99_s_ci95"] == pytest.approx(expected, abs=1e-9)
    if {"off", "prefix"} <= set(df["engine.prefix_caching"]):
        c = analysis.compare(df, metrics=["ttft_p99_s", "throughput_rps"]).iloc[0]
        assert c["ttft_p99_s"] == pytest.approx(c["ttft_p99_s_ratio"] * c["ttft_p99_s_base"])
        assert c["throughput_rps_diff"] == pytest.approx(c["throughput_rps"] - c["throughput_rps_base"])
