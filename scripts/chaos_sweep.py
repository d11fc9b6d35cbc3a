"""Chaos test: a sweep of thousands of runs while Ray workers are SIGKILLed at random, then a check
that the dataset holds every run exactly once.

    .venv/bin/python scripts/chaos_sweep.py                 # 2,010 runs, a kill every ~1 s
    .venv/bin/python scripts/chaos_sweep.py --runs 5000 --kill-every 0.2 --out /tmp/chaos

The sweep runs in this process on an embedded Ray (``kvsweep run`` through ``sweep.cli.main``);
a thread kills Ray worker processes (``ray::IDLE``, ``ray::run_batch``: the ones under this
process whose command line starts ``ray::``, the ``ray::...Agent`` helpers spared) at random
moments, from the first task to the last. Then the dataset is read back with pyarrow and DuckDB
and the script prints runs expected / present / duplicated / failed / missing and the kills the
sweep survived. Exit status 0 when every run is present once and none failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TextIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

USERS = [2, 3, 4, 5, 6, 8, 10, 12, 16, 20]
CACHING = ["off", "session", "prefix"]
SPEC = """\
name: chaos
description: tiny runs, many of them, for scripts/chaos_sweep.py
base:
  model: Llama-3.2-1B
  gpu: A100-40GB
  workload: {{kind: chat, users: 4, turns: 2}}
  run: {{num_requests: {requests}}}
grid:
  workload.users: {users}
  engine.prefix_caching: [{caching}]
seeds: {seeds}
"""


def ray_workers() -> list[tuple[int, bool]]:
    """(pid, running a task) of every Ray worker process descended from this one, from /proc."""
    procs: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                name = fh.read().split(b"\0")[0].decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        procs[int(entry)] = (ppid, name)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        name = procs[pid][1]
        if name.startswith("ray::") and not name.endswith("Agent"):
            found.append((pid, name.startswith("ray::run_batch")))
    return found


class Killer(threading.Thread):
    """SIGKILLs a random Ray worker every ``mean_s`` seconds on average (exponential gaps)."""

    def __init__(self, mean_s: float, seed: int, busy_share: float) -> None:
        super().__init__(daemon=True)
        self.mean_s = mean_s
        self.rng = random.Random(seed)
        self.busy_share = busy_share
        self.stop = threading.Event()
        self.busy_kills = 0
        self.idle_kills = 0

    def run(self) -> None:
        while not self.stop.wait(self.rng.expovariate(1 / self.mean_s)):
            workers = ray_workers()
            busy = [pid for pid, running in workers if running]
            idle = [pid for pid, running in workers if not running]
            pool, is_busy = (busy, True) if busy and (self.rng.random() < self.busy_share or not idle) else (
                idle, False)
            if not pool:
                continue
            try:
                os.kill(self.rng.choice(pool), signal.SIGKILL)
            except ProcessLookupError:
                continue
            if is_busy:
                self.busy_kills += 1
            else:
                self.idle_kills += 1


class Tee(io.TextIOBase):
    """Writes through to ``stream`` and keeps a copy."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def check(out: Path, expected: list[str]) -> dict[str, int]:
    import duckdb
    import pyarrow.dataset as ds

    table = ds.dataset(out / "runs", format="parquet").to_table(columns=["run_id", "status"])
    counts = Counter(table.column("run_id").to_pylist())
    statuses = Counter(table.column("status").to_pylist())
    want = set(expected)
    row = duckdb.connect().execute(f"SELECT count(*) FROM '{out}/runs/*.parquet'").fetchone()
    duck = row[0] if row else 0
    return {
        "expected": len(expected),
        "present": len(want & set(counts)),
        "duplicated": sum(n - 1 for n in counts.values()),
        "failed": statuses["failed"],
        "missing": len(want - set(counts)),
        "unexpected": len(set(counts) - want),
        "rows (pyarrow)": table.num_rows,
        "rows (duckdb)": int(duck),
        "temporary files": sum(1 for p in out.rglob("*") if p.name.endswith(".tmp")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="at least this many runs (default 2000)")
    parser.add_argument("--requests", type=int, default=40, help="requests per run (default 40: ~10 ms)")
    parser.add_argument("--kill-every", type=float, default=1.0, metavar="S",
                        help="mean seconds between kills (default 1; a fresh worker takes about that to"
                             " start, so much less keeps the sweep mostly restarting workers)")
    parser.add_argument("--busy-share", type=float, default=0.8,
                        help="share of kills aimed at workers running a task (default 0.8)")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--max-retries", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the killer's choices")
    parser.add_argument("--out", help="dataset folder (default: a new temporary folder)")
    args = parser.parse_args()

    from sweep.cli import main as kvsweep
    from sweep.spec import SweepSpec

    seeds = math.ceil(args.runs / (len(USERS) * len(CACHING)))
    folder = Path(args.out or tempfile.mkdtemp(prefix="kvsweep-chaos-"))
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "chaos.yaml"
    spec.write_text(SPEC.format(requests=args.requests, users=USERS, caching=", ".join(CACHING), seeds=seeds))
    out = folder / "ds"
    expected = SweepSpec.load(spec).expand().run_ids

    killer = Killer(args.kill_every, args.seed, args.busy_share)
    tee = Tee(sys.stderr)
    started = time.monotonic()
    killer.start()
    try:
        with contextlib.redirect_stderr(tee):
            code = kvsweep(["run", str(spec), "--out", str(out), "--num-cpus", str(args.num_cpus),
                            "--max-retries", str(args.max_retries), "--no-progress"])
    finally:
        killer.stop.set()
        killer.join()
    elapsed = time.monotonic() - started
    found = check(out, expected)
    lost = re.search(r"(\d+) tasks lost with their worker or node, (\d+) runs sent again",
                     tee.copy.getvalue())
    kills = killer.busy_kills + killer.idle_kills

    print(f"\nchaos sweep: {len(expected)} runs in {elapsed:.0f} s on {args.num_cpus} CPUs,"
          f" kvsweep exit {code}")
    for key, value in found.items():
        print(f"  {key:<18} {value}")
    print(f"  {'kills survived':<18} {kills} ({killer.busy_kills} of workers running a task,"
          f" {killer.idle_kills} of idle ones)")
    if lost:
        print(f"  {'tasks lost':<18} {lost.group(1)} (their {lost.group(2)} runs sent again)")
    good = (found["present"] == found["expected"] and not found["duplicated"] and not found["failed"]
            and not found["unexpected"] and found["rows (duckdb)"] == found["expected"]
            and not found["temporary files"] and code == 0)
    print(f"  {'verdict':<18} {'every run exactly once' if good else 'NOT every run exactly once'} -> {out}")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
