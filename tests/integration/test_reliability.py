"""Sweeps that survive crashes, lost nodes and damaged or unwritable output, on real Ray and files.

Every test ends with the same check: each run of the spec is in ``runs/`` exactly once, and what
readers glob (pyarrow, DuckDB) holds nothing partial. Workers are killed with SIGKILL, nodes
removed from a real ``ray.cluster_utils.Cluster``, the driver killed as a subprocess, disks
filled with a real (tiny) tmpfs.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from sweep.cli import main as kvsweep
from sweep.executors import FAULTS_ENV
from sweep.spec import SweepSpec
from sweep.store import LOCK_FILE, _start_ticks
from tests.simhelpers import tiny_sweep

pytestmark = [pytest.mark.ray]

TINY = tiny_sweep("rel")
# Runs of 60-80 ms (2,000 requests), so that kills and node loss land while tasks run (at 150
# requests the simulator's speed let a 64-run sweep end before the killer's second kill).
SLOW = TINY.replace("num_requests: 20", "num_requests: 2000").replace("[2, 4, 8]", "[2, 4, 8, 16]").replace(
    "[4, 40]", "[40]")


def write_spec(tmp_path: Path, text: str = TINY, seeds: int = 2) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text.replace("seeds: 2", f"seeds: {seeds}"))
    return path


def ids_of(spec: Path) -> list[str]:
    return SweepSpec.load(spec).expand().run_ids


def exactly_once(out: Path, spec: Path, statuses: tuple[str, ...] = ("ok", "infeasible")) -> dict[str, Any]:
    """Every run of ``spec`` once in ``out/runs`` (as pyarrow and DuckDB see it), nothing partial."""
    table = ds.dataset(out / "runs", format="parquet").to_table()
    counts = Counter(table.column("run_id").to_pylist())
    assert not [r for r, n in counts.items() if n > 1], "a run appears twice"
    assert sorted(counts) == sorted(ids_of(spec))
    duck = duckdb.sql(f"SELECT count(*), count(DISTINCT run_id) FROM '{out}/runs/*.parquet'").fetchall()
    assert duck == [(len(counts), len(counts))]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    rows = {row["run_id"]: row for row in table.to_pylist()}
    assert {row["status"] for row in rows.values()} <= set(statuses)
    return rows


def _proc(pid: int) -> tuple[int, str] | None:
    """(parent pid, first word of the command line) from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            name = fh.read().split(b"\0")[0].decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return None
    return ppid, name


def workers(parent: int | None = None, task: str = "") -> list[int]:
    """Pids of Ray worker processes (``ray::IDLE``, ``ray::run_batch``; not ``ray::...Agent``)
    descended from this process, or from ``parent``; with ``task``, only those running it."""
    procs = {int(p): info for p in os.listdir("/proc") if p.isdigit() and (info := _proc(int(p)))}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], list(children.get(parent or os.getpid(), []))
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        name = procs[pid][1]
        if name.startswith(f"ray::{task}") and not name.endswith("Agent"):
            found.append(pid)
    return found


def busy(parent: int | None = None) -> list[int]:
    return workers(parent, task="run_batch")


# ---- 1. workers killed at random moments ------------------------------------------------------


def test_workers_killed_at_random_moments(ray_local: Any, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, SLOW, seeds=8)  # 64 runs, 4 per task
    out = tmp_path / "ds"
    kills: list[int] = []
    done = threading.Event()
    rng = random.Random(6)

    def killer() -> None:
        while not done.is_set() and len(kills) < 5:
            time.sleep(rng.uniform(0.2, 0.6))
            targets = busy()
            if targets:
                victim = rng.choice(targets)
                try:
                    os.kill(victim, signal.SIGKILL)
                    kills.append(victim)
                except ProcessLookupError:
                    pass

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        code = kvsweep(["run", str(spec), "--out", str(out), "--runs-per-task", "4", "--part-rows", "8",
                        "--no-progress"])
    finally:
        done.set()
        thread.join()
    err = capsys.readouterr().err
    assert code == 0, err
    assert len(kills) >= 2, "the sweep ended before the killer got going"
    exactly_once(out, spec, statuses=("ok",))  # every run done, none failed: the killed ones retried
    lost = int(err.split(" tasks lost with their worker or node, ")[0].rsplit("; ", 1)[1])
    assert 1 <= lost <= len(kills)
    assert " runs sent again" in err


# ---- 3. the driver killed, then the same command again -----------------------------------------


def test_driver_killed_then_rerun_gives_every_run_once(ray_local: Any, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, SLOW, seeds=6)  # 48 runs
    out = tmp_path / "ds"
    args = ["run", str(spec), "--out", str(out), "--runs-per-task", "1", "--part-rows", "3",
            "--save-requests", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Its own session, so that whatever the killed driver leaves behind can be ended by the test.
    proc = subprocess.Popen([sys.executable, "-m", "sweep.cli", *args, "--num-cpus", "2"], env=env,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(list((out / "runs").glob("part-*.parquet"))) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before the kill"
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no handler runs, no flush, the lock stays
        proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # Ray's processes die with their driver; make sure
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL
    assert (out / LOCK_FILE).exists()  # stale: its process is gone
    # What a writer killed mid-file leaves: hidden temporaries, which readers do not see.
    junk = [out / "runs" / ".part-00077-0123abcd.parquet.5f5f5f5f.tmp",
            out / "requests" / "run_id=0123456789abcdef" / ".part-0.parquet.0badcafe.tmp"]
    for path in junk:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PAR1 half a file")
    before = ds.dataset(out / "runs", format="parquet").to_table()  # every visible part reads whole
    assert 6 <= before.num_rows < 48
    assert duckdb.sql(f"SELECT count(*) FROM '{out}/runs/*.parquet'").fetchall() == [(before.num_rows,)]

    assert kvsweep(args) == 0  # the same command, resumed
    err = capsys.readouterr().err
    assert f"48 runs, {before.num_rows} already in {out}" in err
    rows = exactly_once(out, spec, statuses=("ok",))
    assert not any(path.exists() for path in junk) and not (out / LOCK_FILE).exists()
    assert {r: rows[r] for r in before.column("run_id").to_pylist()} == {  # earlier rows left alone
        row["run_id"]: row for row in before.to_pylist()}
    requests = ds.dataset(out / "requests", format="parquet", partitioning="hive").to_table()
    per_run = Counter(requests.column("run_id").to_pylist())
    assert per_run == {r: 2000 for r in rows}  # runs redone after the kill overwrote, not added


# ---- 4. a damaged dataset --------------------------------------------------------------------


def flip_page_bytes(path: Path) -> None:
    """Flip 8 bytes of the config_json column's data: the end of its one page (the page's
    header comes first)."""
    meta = pq.read_metadata(path)
    group = meta.row_group(0)
    column = next(group.column(i) for i in range(group.num_columns)
                  if group.column(i).path_in_schema == "config_json")
    at = column.data_page_offset + column.total_compressed_size - 24
    data = bytearray(path.read_bytes())
    data[at:at + 8] = bytes(b ^ 0x5A for b in data[at:at + 8])
    path.write_bytes(bytes(data))


def test_damaged_parts_are_quarantined_and_their_runs_redone(ray_local: Any, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "ds"
    assert kvsweep(["run", str(spec), "--out", str(out), "--part-rows", "4", "--no-progress"]) == 0
    parts = sorted((out / "runs").glob("part-*.parquet"))
    assert len(parts) == 6
    truncated, flipped, garbage = parts[1], parts[3], parts[4]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    flip_page_bytes(flipped)
    garbage.write_bytes(b"PAR1" + bytes(range(256)) * 20 + b"PAR1")
    capsys.readouterr()

    assert kvsweep(["plan", str(spec), "--out", str(out)]) == 0  # plan reports, changes nothing
    text = capsys.readouterr().out
    assert "12 present" in text and f"damaged: {flipped}" in text and truncated.exists()

    assert kvsweep(["run", str(spec), "--out", str(out), "--part-rows", "4", "--no-progress"]) == 0
    err = capsys.readouterr().err
    for part, why in [(truncated, "not a whole Parquet file"), (flipped, "unreadable"),
                      (garbage, "unreadable")]:
        moved = out / "_quarantine" / "runs" / part.name
        line = f"kvsweep run: warning: {out}/runs/{part.name} is damaged ({why}"
        assert line in err and f"moved to {moved}; its runs will be done again" in err
        assert moved.exists() and not part.exists()
    assert "checksum" in err.lower() or "crc" in err.lower()  # the flipped page: its CRC mismatched
    assert "24 runs, 12 already in" in err
    exactly_once(out, spec)


def test_duplicated_rows_are_dropped_on_resume(ray_local: Any, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """As two drivers writing one dataset at once (without the lock) would leave it."""
    spec = write_spec(tmp_path)
    out = tmp_path / "ds"
    assert kvsweep(["run", str(spec), "--out", str(out), "--part-rows", "10", "--no-progress"]) == 0
    first = sorted((out / "runs").glob("part-*.parquet"))[0]
    shutil.copy(first, out / "runs" / "part-00009-0badcafe.parquet")
    capsys.readouterr()
    assert kvsweep(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"{out}/runs/part-00009-0badcafe.parquet repeated 10 runs held by an earlier part" in err
    assert "nothing to do" in err
    exactly_once(out, spec)


def test_damaged_metadata_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "ds"
    assert kvsweep(["run", str(spec), "--out", str(out), "--executor", "serial", "--no-progress"]) == 0
    meta = out / "_kvsweep.json"
    meta.write_text(meta.read_text()[:20])
    capsys.readouterr()
    assert kvsweep(["run", str(spec), "--out", str(out), "--executor", "serial", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kvsweep run: error: {meta} is damaged (") and "\n" not in err
    assert err.endswith(f"if {out} holds this sweep, delete that file and rerun (kvsweep writes it again)")
    meta.unlink()
    assert kvsweep(["run", str(spec), "--out", str(out), "--executor", "serial", "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().err
    exactly_once(out, spec)


def test_a_live_lock_refuses_a_second_writer_and_a_stale_one_is_taken_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import socket

    spec = write_spec(tmp_path)
    out = tmp_path / "ds"
    out.mkdir()
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = {"host": socket.gethostname(), "pid": holder.pid, "start": _start_ticks(holder.pid),
                "since": "2026-01-01T00:00:00+00:00"}
        (out / LOCK_FILE).write_text(json.dumps(lock))
        assert kvsweep(["run", str(spec), "--out", str(out), "--executor", "serial", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"kvsweep run: error: --out {out} is being written by another kvsweep"
                       f" (pid {holder.pid} on {socket.gethostname()} since 2026-01-01T00:00:00+00:00):"
                       " wait for it to finish or choose another --out"
                       f" (if none runs, delete {out / LOCK_FILE})")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    assert kvsweep(["run", str(spec), "--out", str(out), "--executor", "serial", "--no-progress"]) == 0
    exactly_once(out, spec)
    assert not (out / LOCK_FILE).exists()


# ---- 5. output that cannot be written ---------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 72 KiB tmpfs (root only): a disk that fills after two parts (of 6 or 7 pages each)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=72k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_stops_with_a_clear_error_and_whole_parts(ray_local: Any, tmpfs: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path)
    out = tmpfs / "ds"
    args = ["run", str(spec), "--out", str(out), "--part-rows", "4", "--no-progress"]
    assert kvsweep(args) == 3  # a part is ~25 KB: the third does not fit
    err = capsys.readouterr().err
    assert "kvsweep run: stopped after" in err
    message = [line for line in err.splitlines() if line.startswith("kvsweep run: error:")]
    assert len(message) == 1 and f"cannot write {out}/runs/part-000" in message[0]
    assert message[0].endswith(": No space left on device; finished runs are saved in whole parts: fix that"
                               " and rerun the same command to resume")
    saved = ds.dataset(out / "runs", format="parquet").to_table()  # no corrupt part
    assert saved.num_rows == 8 and len(list((out / "runs").iterdir())) == 2
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]

    subprocess.run(["mount", "-o", "remount,size=4m", str(tmpfs)], check=True)  # space freed
    assert kvsweep(args) == 0
    assert "24 runs, 8 already in" in capsys.readouterr().err
    exactly_once(out, spec)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder that cannot be written: a read-only tmpfs as root, else mode 0o555."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True
    ).returncode == 0
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("root ignores permissions and no tmpfs could be mounted")
        folder.chmod(0o555)
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        else:
            folder.chmod(0o755)


def test_unwritable_out_is_refused_before_any_run(read_only: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path)
    out = read_only / "ds"
    assert kvsweep(["run", str(spec), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kvsweep run: error: cannot create {out}: ")
    assert err.endswith(("Read-only file system", "Permission denied")) and "\n" not in err
    assert not out.exists()

    afile = tmp_path / "afile"
    afile.write_text("x")
    assert kvsweep(["run", str(spec), "--out", str(afile), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"kvsweep run: error: --out {afile} is a file, not a folder: choose another --out")


def test_a_row_that_does_not_fit_its_columns_is_a_failed_row(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # 1e30 GiB of memory: a KV capacity in blocks beyond int64, the type of its column.
    text = TINY.replace("gpu: A100-40GB", "gpu: {name: A100-40GB, memory_gib: 1.0e+30}").replace(
        "  gpu.memory_gib: [4, 40]          # 4 GiB: infeasible\n", "")
    spec = write_spec(tmp_path, text, seeds=1)
    out = tmp_path / "ds"
    assert kvsweep(["run", str(spec), "--out", str(out), "--executor", "serial", "--no-progress"]) == 1
    assert "(ok 0, infeasible 0, failed 6)" in capsys.readouterr().err
    rows = exactly_once(out, spec, statuses=("failed",))
    for row in rows.values():
        assert row["error"].startswith("row cannot be stored: kv_capacity_blocks = 18432000000000")
        assert row["error"].endswith(" does not fit a 64-bit integer column")
        assert row["kv_capacity_blocks"] is None and row["workload.users"] in (2, 4, 8)


# ---- 7. runaway runs ---------------------------------------------------------------------------


def test_run_timeout_stops_runaway_runs_and_the_sweep_goes_on(
    ray_local: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, TINY.replace("gpu.memory_gib: [4, 40]          # 4 GiB: infeasible",
                                             "run.num_requests: [20, 1000000]"), seeds=1)
    plan = SweepSpec.load(spec).expand()
    runaway = [plan.run_ids[i] for i in range(len(plan)) if "1000000" in plan.describe(i)]
    hanging = next(r for r in plan.run_ids if r not in runaway)
    monkeypatch.setenv(FAULTS_ENV, f"hang:{hanging}")  # stuck outside the engine: the backstop's case
    out = tmp_path / "ds"
    started = time.monotonic()
    code = kvsweep(["run", str(spec), "--out", str(out), "--run-timeout", "1", "--runs-per-task", "1",
                    "--no-progress"])
    assert code == 1
    assert time.monotonic() - started < 60
    assert f"{len(runaway) + 1} runs failed" in capsys.readouterr().err
    rows = exactly_once(out, spec, statuses=("ok", "failed"))
    failed = {r: row["error"] for r, row in rows.items() if row["status"] == "failed"}
    assert set(failed) == {*runaway, hanging}
    for run_id in runaway:
        assert failed[run_id].startswith("timeout: simulation exceeded its wall-time limit of 1 s at")
    assert failed[hanging] == ("timeout: run exceeded --run-timeout 1 s: stopped after 2.1 s outside the"
                               " engine loop")
    assert all(row["num_requests"] == 20 for row in rows.values() if row["status"] == "ok")


# ---- 2. a node lost mid-sweep (last: the module's cluster keeps only its head) -----------------


@pytest.mark.slow
def test_node_lost_mid_sweep_finishes_on_the_head(ray_cluster: Any, tmp_path: Path) -> None:
    from ray._private.ray_constants import PROCESS_TYPE_RAYLET

    spec = write_spec(tmp_path, SLOW, seeds=5)  # 40 runs
    out = tmp_path / "ds"
    node = next(iter(ray_cluster.worker_nodes))
    raylet = node.all_processes[PROCESS_TYPE_RAYLET][0].process.pid
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.cli", "run", str(spec), "--out", str(out), "--address",
         ray_cluster.address, "--runs-per-task", "5", "--part-rows", "2", "--no-progress"],
        env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not (busy(raylet) and any((out / "runs").glob("part-*.parquet"))):
        assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before the node loss"
        time.sleep(0.02)
    # The node goes down with everything on it, a task of ~0.3 s among them: its raylet and
    # workers at once (remove_node alone lets a worker finish the task it is running).
    doomed = [raylet, *workers(raylet)]
    for pid in doomed:
        os.kill(pid, signal.SIGKILL)
    ray_cluster.remove_node(node, allow_graceful=False)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "cluster at" in err and ", 2 CPUs" in err
    assert " tasks lost with their worker or node, " in err
    exactly_once(out, spec, statuses=("ok",))
