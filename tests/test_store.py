"""The Parquet dataset of a sweep, written by real serial sweeps (no Ray here; see tests/integration)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from simcore.metrics import REQUEST_FIELDS, SUMMARY_FIELDS
from sweep.cli import main as kvsweep
from sweep.executors import FAULTS_ENV, BatchSizer, Result, parse_faults
from sweep.spec import SweepSpec
from sweep.store import CONTEXT_COLUMNS, LEAD_COLUMNS, TAIL_COLUMNS, Dataset, runs_columns, runs_schema
from tests.simhelpers import tiny_sweep

# engine.block_size is not a context column: it gets its own
TINY = tiny_sweep("tiny", users="[2, 4]", extra_axes="  engine.block_size: [16, 32]\n")
RUNS = 32


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def run(spec: Path, out: Path | str, *extra: str) -> int:
    return kvsweep(["run", str(spec), "--out", str(out), "--executor", "serial", "--no-progress", *extra])


def ids_of(spec: Path) -> list[str]:
    return SweepSpec.load(spec).expand().run_ids


def read(out: Path) -> pa.Table:
    return ds.dataset(out / "runs", format="parquet").to_table()


def test_runs_columns_are_in_the_documented_order() -> None:
    axes = {"workload.users": "int", "engine.block_size": "int", "gpu.memory_gib": "float"}
    cols = list(runs_columns(axes))
    assert cols[:5] == ["run_id", "sweep", "seed", "status", "error"]
    assert cols[5:14] == list(CONTEXT_COLUMNS)
    assert cols[14] == "engine.block_size"  # the one axis that is not a context column
    assert cols[15:-2] == list(SUMMARY_FIELDS)
    assert cols[-2:] == ["kvsweep_version", "config_json"]
    assert len(cols) == len(LEAD_COLUMNS) + len(CONTEXT_COLUMNS) + 1 + len(SUMMARY_FIELDS) + len(TAIL_COLUMNS)


def test_sweep_writes_a_dataset_that_pyarrow_pandas_and_duckdb_read_alike(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert run(spec, out, "--save-requests", "--part-rows", "10") == 0
    parts = sorted(p.name for p in (out / "runs").iterdir())
    assert len(parts) == 4 and all(p.startswith("part-0000") for p in parts)  # 10 + 10 + 10 + 2 rows
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    meta = json.loads((out / "_kvsweep.json").read_text())
    assert set(meta) == {"version", "sweep", "created"} and meta["sweep"] == "tiny"
    assert SweepSpec.model_validate(yaml.safe_load((out / "spec.yaml").read_text())) == SweepSpec.load(spec)

    table = read(out)
    schema = runs_schema(SweepSpec.load(spec).expand().axis_types)
    assert table.schema.equals(schema)
    assert sorted(table.column("run_id").to_pylist()) == sorted(ids_of(spec))
    for part in (out / "runs").iterdir():
        assert pq.read_schema(part).equals(schema)  # every part the same schema, nulls typed

    frame = pd.read_parquet(out / "runs", dtype_backend="pyarrow")
    assert len(frame) == RUNS
    assert pa.Schema.from_pandas(frame, preserve_index=False).equals(schema)
    assert len(pd.read_parquet(out / "runs")) == RUNS  # numpy dtypes too (ints with nulls -> float)

    con = duckdb.connect()
    glob = f"{out}/runs/*.parquet"
    duck = con.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning=true)").to_arrow_table()
    assert duck.num_rows == RUNS
    assert duck.schema.names == schema.names and duck.schema.types == schema.types

    status = dict(zip(table.column("run_id").to_pylist(), table.column("status").to_pylist(), strict=True))
    ok = sorted(r for r, s in status.items() if s == "ok")
    assert len(ok) == RUNS // 2 and set(status.values()) == {"ok", "infeasible"}
    req_dirs = sorted(p.name for p in (out / "requests").iterdir())
    assert req_dirs == [f"run_id={r}" for r in ok]  # requests of ok runs only
    requests = con.execute(
        f"SELECT run_id, count(*) AS n FROM read_parquet('{out}/requests/*/*.parquet',"
        " hive_partitioning=true) GROUP BY run_id"
    ).fetchall()
    assert sorted(r for r, _ in requests) == ok
    per_run = table.filter(pa.compute.equal(table.column("status"), "ok")).column("num_requests").to_pylist()
    assert sum(n for _, n in requests) == sum(per_run)
    one = pq.read_table(out / "requests" / f"run_id={ok[0]}" / "part-0.parquet")
    assert one.schema.names == list(REQUEST_FIELDS)
    assert len(pd.read_parquet(out / "requests")) == sum(per_run)


def test_rows_carry_context_axes_and_typed_nulls(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    run(spec, out)
    rows = read(out).to_pylist()
    infeasible = next(r for r in rows if r["status"] == "infeasible")
    assert infeasible["gpu.memory_gib"] == 4.0 and infeasible["error"]
    assert all(infeasible[m] is None for m in SUMMARY_FIELDS)
    ok = next(r for r in rows if r["status"] == "ok")
    assert ok["error"] is None and ok["num_requests"] == 20
    assert (ok["sweep"], ok["model.name"], ok["gpu.name"], ok["workload.kind"]) == (
        "tiny", "Llama-3.2-1B", "A100-40GB", "chat")
    assert ok["engine.prefix_caching"] in ("off", "prefix") and ok["engine.block_size"] in (16, 32)
    assert ok["engine.kv_budget_gib"] is None and ok["engine.tensor_parallel"] == 1
    cfg = json.loads(ok["config_json"])
    assert cfg["workload"]["users"] == ok["workload.users"] and cfg["run"]["seed"] == ok["seed"]


def test_resume_does_only_the_missing_runs(spec: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    run(spec, out, "--part-rows", "8")
    lost = sorted((out / "runs").iterdir())[1]
    lost.unlink()  # as if the sweep had stopped before writing these 8 rows
    capsys.readouterr()
    assert run(spec, out, "--part-rows", "8") == 0
    assert f"{RUNS} runs, {RUNS - 8} already in" in capsys.readouterr().err
    ids = read(out).column("run_id").to_pylist()
    assert sorted(ids) == sorted(ids_of(spec))  # every run exactly once
    assert run(spec, out) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert read(out).num_rows == RUNS


def test_failed_run_is_a_row_and_retry_failed_reruns_it(
    spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ds"
    bad, dying = ids_of(spec)[3], ids_of(spec)[9]
    monkeypatch.setenv(FAULTS_ENV, f"raise:{bad},exit:{dying}")
    assert run(spec, out, "--part-rows", "5") == 1
    assert "2 runs failed" in capsys.readouterr().err
    rows = {r["run_id"]: r for r in read(out).to_pylist()}
    assert len(rows) == RUNS
    assert rows[bad]["status"] == "failed"
    assert rows[bad]["error"].startswith(f"RuntimeError: injected fault (raise) for run {bad} (at ")
    assert " (at executors.py:" in rows[bad]["error"]  # where it was raised
    assert rows[dying]["status"] == "failed"  # the serial executor raises instead of exiting
    assert all(rows[bad][m] is None for m in SUMMARY_FIELDS)
    assert sum(r["status"] == "failed" for r in rows.values()) == 2

    monkeypatch.delenv(FAULTS_ENV)
    assert run(spec, out) == 0
    assert "nothing to do" in capsys.readouterr().err  # failed rows count as present...
    assert run(spec, out, "--retry-failed") == 0  # ...until asked to retry them
    assert "2 failed rows dropped to retry, 2 to do" in capsys.readouterr().err
    table = read(out)
    assert sorted(table.column("run_id").to_pylist()) == sorted(ids_of(spec))
    assert "failed" not in table.column("status").to_pylist()


def test_no_data_runs_are_rows_with_their_reason_and_a_warning_not_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs whose warm-up outlasts them are stored as no_data (their counts kept, their figures
    null), reported in the progress counts and a warning line; the exit status stays 0."""
    path = tmp_path / "short.yaml"
    path.write_text(
        "name: short\nbase:\n  model: Llama-3.2-1B\n  gpu: A100-40GB\n"
        "  workload: {kind: chat, users: 4, turns: 2}\n  run: {duration_s: 20, warmup_s: 10}\n"
        "grid:\n  run.warmup_s: [10, 30]\n"
    )
    out = tmp_path / "ds"
    assert run(path, out) == 0
    err = capsys.readouterr().err
    assert "(ok 1, no data 1, infeasible 0, failed 0)" in err
    assert "warning: 1 runs measured no request (status no_data)" in err
    rows = {r["run.warmup_s"]: r for r in read(out).to_pylist()}
    assert rows[10.0]["status"] == "ok" and rows[10.0]["error"] is None
    late = rows[30.0]
    assert late["status"] == "no_data"
    assert late["error"].startswith("no request arrived in the measured window")
    assert late["num_requests"] > 0 and late["num_measured"] == 0 and late["ttft_p99_s"] is None
    assert late["steady"] is False
    assert Dataset(str(out)).scan(runs_schema({"run.warmup_s": "float"})).present[late["run_id"]] == "no_data"


def test_another_spec_in_the_same_out_is_refused(spec: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    run(spec, out)
    spec.write_text(TINY.replace("seeds: 2", "seeds: 3"))
    assert run(spec, out) == 2
    err = capsys.readouterr().err
    assert f"holds sweep 'tiny' from a different spec ({out}/spec.yaml)" in err
    spec.write_text(TINY.replace("name: tiny", "name: other"))
    assert run(spec, out) == 2
    assert "holds sweep 'tiny', not 'other': choose another --out" in capsys.readouterr().err


def test_a_dataset_of_another_version_is_refused_naming_the_columns(
        spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Parts written by a kvsweep with other columns (here: one without ``sim_mode``, as before
    the shared pool) are not resumed into: the error names what they lack."""
    out = tmp_path / "ds"
    assert run(spec, out) == 0
    for part in (out / "runs").glob("*.parquet"):
        pq.write_table(pq.read_table(part).drop_columns(["sim_mode"]), part)
    capsys.readouterr()
    assert run(spec, out) == 2
    err = capsys.readouterr().err
    assert "runs/ parts have other columns than this sweep writes (they lack sim_mode:" in err
    assert "written by another version of kvsweep?): choose another --out" in err


def test_temporary_files_are_invisible_and_cleaned_up(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    run(spec, out, "--part-rows", "16")
    junk = out / "runs" / ".part-00009-0123abcd.parquet.5f5f5f5f.tmp"
    junk.write_bytes(b"PAR1 half a file")  # what a killed writer leaves
    assert read(out).num_rows == RUNS
    assert duckdb.sql(f"SELECT count(*) FROM '{out}/runs/*.parquet'").fetchall() == [(RUNS,)]
    assert len(pd.read_parquet(out / "runs")) == RUNS
    run(spec, out)
    assert not junk.exists()


def test_an_interrupted_write_leaves_no_temporary(tmp_path: Path) -> None:
    """A Ctrl-C that lands while a part is being written (the sweep then stops) deletes the
    half-written temporary, as a failed write does."""
    dataset = Dataset(str(tmp_path / "d"))
    dataset.prepare("s", "name: s\n", runs_schema({}), "0")
    runs = tmp_path / "d" / "runs"

    def half_then_interrupt(tmp: str) -> None:
        Path(tmp).write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dataset._write_atomic(f"{dataset.runs_dir}/part-00000-0123abcd.parquet", half_then_interrupt)
    assert list(runs.iterdir()) == []


def test_out_may_be_a_pyarrow_fs_uri(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "by-uri"
    assert run(spec, f"file://{out}") == 0
    assert read(out).num_rows == RUNS


def test_drop_failed_rewrites_parts(tmp_path: Path) -> None:
    dataset = Dataset(str(tmp_path / "d"))
    schema = runs_schema({})
    dataset.prepare("s", "name: s\n", schema, "0")
    writer = dataset.writer(schema, part_rows=3)
    for i, status in enumerate(["ok", "failed", "ok", "failed", "failed", "failed", "infeasible"]):
        writer.add({"run_id": f"r{i}", "sweep": "s", "seed": 0, "status": status})
    writer.flush()
    assert [seq for seq, _ in dataset._parts()] == [0, 1, 2]
    assert dataset.drop_failed() == 4
    assert dataset.existing() == {"r0": "ok", "r2": "ok", "r6": "infeasible"}
    assert [seq for seq, _ in dataset._parts()] == [0, 2]  # the all-failed part is gone
    assert dataset.writer(schema).seq == 3


def test_writer_flushes_after_flush_s(tmp_path: Path) -> None:
    dataset = Dataset(str(tmp_path / "d"))
    schema = runs_schema({})
    dataset.prepare("s", "name: s\n", schema, "0")
    writer = dataset.writer(schema, part_rows=1000, flush_s=0.0)
    writer.add({"run_id": "a", "status": "ok"})
    assert writer.parts_written == 1 and not writer.rows


def test_bad_spec_is_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace("engine.block_size", "engine.blok_size"))
    assert kvsweep(["plan", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kvsweep plan: error: {path}: grid axis engine.blok_size = 16: invalid config:")
    assert "\n" not in err


def test_plan_prints_count_axes_and_examples(spec: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    assert kvsweep(["plan", str(spec), "--examples", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"sweep tiny ({spec}): {RUNS} runs" in text
    assert "  grid    engine.prefix_caching    2 x  false, prefix" in text
    assert f"= 2 x 2 x 2 x 2 x 2 = {RUNS} runs" in text
    assert "examples (3 of 32):" in text and ids_of(spec)[0] in text
    assert f"in {out}: 0 present (ok 0, no data 0, infeasible 0, failed 0), {RUNS} to do" in text


def test_parse_faults() -> None:
    assert parse_faults("raise:ab, exit:cd,") == {"ab": "raise", "cd": "exit"}
    assert parse_faults(None) == {}
    with pytest.raises(ValueError, match=r"'boom:ab' is not raise:<run_id> or exit:<run_id>"):
        parse_faults("boom:ab")


def test_batch_sizer_aims_at_half_a_second_and_keeps_the_tail_balanced() -> None:
    sizer = BatchSizer()
    assert sizer.size(remaining=10_000, workers=2) == 1  # nothing timed yet
    sizer.observe([Result("ok", None, {}, None, 0.01)] * 10)
    assert sizer.size(remaining=10_000, workers=2) == 50  # 50 x 10 ms = 0.5 s
    assert sizer.size(remaining=100, workers=2) == 13  # 4 tasks per worker for what is left
    assert sizer.size(remaining=1, workers=2) == 1
    assert BatchSizer(fixed=7).size(remaining=3, workers=2) == 7
