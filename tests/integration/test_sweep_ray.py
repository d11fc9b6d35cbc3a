"""Sweeps on a real embedded Ray (the session's ``ray_local``): same rows as serial, faults, Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from sweep.cli import main as kvsweep
from sweep.executors import FAULTS_ENV
from sweep.spec import SweepSpec
from tests.simhelpers import tiny_sweep

pytestmark = [pytest.mark.ray]

SPEC = tiny_sweep("small")
RUNS = 24


def write_spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def rows(out: Path) -> dict[str, dict[str, object]]:
    table = ds.dataset(out / "runs", format="parquet").to_table()
    result = {row["run_id"]: row for row in table.to_pylist()}
    assert len(result) == table.num_rows, "a run appears twice"
    return result


def test_serial_and_ray_give_identical_rows(ray_local: object, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    serial, on_ray = tmp_path / "serial", tmp_path / "ray"
    assert kvsweep(["run", str(spec), "--out", str(serial), "--executor", "serial", "--no-progress"]) == 0
    assert kvsweep(["run", str(spec), "--out", str(on_ray), "--runs-per-task", "3", "--max-in-flight", "2",
                    "--no-progress"]) == 0
    a, b = rows(serial), rows(on_ray)
    assert sorted(a) == sorted(b) == sorted(SweepSpec.load(spec).expand().run_ids)
    for run_id, row in a.items():
        other = dict(b[run_id])
        # wall time is a measurement of the machine, not of the simulated system
        assert {k: v for k, v in row.items() if k != "sim_wall_s"} == {
            k: v for k, v in other.items() if k != "sim_wall_s"
        }
    assert {r["status"] for r in a.values()} == {"ok", "infeasible"}


def test_failing_run_and_dying_worker_each_give_one_failed_row(
    ray_local: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path)
    ids = SweepSpec.load(spec).expand().run_ids
    bad, dying = ids[2], ids[13]
    monkeypatch.setenv(FAULTS_ENV, f"raise:{bad},exit:{dying}")
    out = tmp_path / "ds"
    # 4 runs per task: the dying worker takes its whole batch down; the batch is retried, split
    # into one-run tasks, and only the run that kills its worker ends up failed.
    code = kvsweep(["run", str(spec), "--out", str(out), "--runs-per-task", "4", "--max-retries", "1",
                    "--no-progress"])
    assert code == 1
    assert "2 runs failed" in capsys.readouterr().err
    got = rows(out)
    assert sorted(got) == sorted(ids)
    failed = {run_id: row["error"] for run_id, row in got.items() if row["status"] == "failed"}
    assert set(failed) == {bad, dying}
    assert str(failed[bad]).startswith(f"RuntimeError: injected fault (raise) for run {bad}")
    assert str(failed[dying]).startswith("worker died: WorkerCrashedError:")
    assert got[dying]["num_requests"] is None and got[dying]["workload.users"] is not None

    monkeypatch.delenv(FAULTS_ENV)
    assert kvsweep(["run", str(spec), "--out", str(out), "--retry-failed", "--no-progress"]) == 0
    again = rows(out)
    assert sorted(again) == sorted(ids) and {r["status"] for r in again.values()} == {"ok", "infeasible"}


def test_interrupted_sweep_leaves_whole_parts_and_resumes(ray_local: object, tmp_path: Path) -> None:
    # Runs of ~0.1 s, one per task, a part every 4 rows: Ctrl-C lands mid-sweep.
    spec = write_spec(tmp_path, SPEC.replace("num_requests: 20", "num_requests: 150")
                      .replace("[4, 40]", "[40]").replace("seeds: 2", "seeds: 6"))
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "sweep.cli", "run", str(spec), "--out", str(out),
           "--runs-per-task", "1", "--part-rows", "4", "--no-progress"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list((out / "runs").glob("part-*.parquet"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before Ctrl-C"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted after" in err and "rerun the same command to resume" in err
    assert not list(out.rglob("*.tmp"))
    done = rows(out)  # every part is whole: pyarrow reads them all
    total = len(SweepSpec.load(spec).expand())
    assert 8 <= len(done) < total

    assert kvsweep(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    final = rows(out)
    assert sorted(final) == sorted(SweepSpec.load(spec).expand().run_ids)  # each exactly once
    assert all(final[run_id] == row for run_id, row in done.items())  # earlier rows left alone


def test_save_requests_on_ray(ray_local: object, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "ds"
    assert kvsweep(["run", str(spec), "--out", str(out), "--save-requests", "--no-progress"]) == 0
    ok = sorted(r for r, row in rows(out).items() if row["status"] == "ok")
    requests = ds.dataset(out / "requests", format="parquet", partitioning="hive").to_table()
    assert sorted(set(requests.column("run_id").to_pylist())) == ok
    assert requests.num_rows == 20 * len(ok)
    assert requests.schema.field("arrival_s").type == pa.float64()
