"""Sweep runner benchmark: serial vs Ray on all cores, driver memory at scale, resume time.

    python scripts/bench_sweep.py                 # everything (~4 minutes on 2 cores)
    python scripts/bench_sweep.py --skip-scale    # only serial vs Ray
    python scripts/bench_sweep.py --skip-scale --seeds 2000 --cores 16  # a bigger grid for more cores
    python scripts/bench_sweep.py --skip-scale --requests 1000 --cores 4,8,16  # longer runs, a curve

1. A 1,000-run grid (10 cells x ``--seeds`` 100) of short simulations, run by ``kvsweep run``
   in this process twice: with the serial executor, then on an embedded Ray with every core.
   Ray's start-up (``ray.init`` plus the first import of kvsweep in each worker) is timed apart.
   Parallel efficiency is serial wall / (Ray wall without start-up x cores); per-run overhead is
   the core time Ray spends beyond the serial run, per run. Target: efficiency >= 0.85.
2. A 5,000-run and then a 20,000-run sweep of tiny runs, each driver in a process of its own,
   whose resident memory is read as the rows land (at 5,000 and 20,000 runs). Target: under
   1 GiB and flat.
3. Rerunning the finished 5,000-run sweep (everything present, nothing to do). Target: < 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.dataset as ds

BASE = """\
base:
  model: Llama-3.2-1B
  gpu: A100-40GB
  workload: {{kind: chat, turns: 2}}
  run: {{num_requests: {requests}}}
"""
def short(seeds: int, requests: int = 50) -> str:
    """10 cells x ``seeds`` short runs (``requests`` each: 50 is a few ms of simulation per run)."""
    return f"name: bench-short-{requests}\n" + BASE.format(requests=requests) + f"""\
grid:
  workload.users: [2, 4, 8, 16, 32]
  engine.prefix_caching: [off, prefix]
seeds: {seeds}
"""


def tiny(runs: int) -> str:
    return f"name: bench-tiny-{runs}\n" + BASE.format(requests=2) + f"""\
grid:
  workload.users: [1, 2, 3, 4]
  engine.prefix_caching: [off, prefix]
seeds: {runs // 8}
"""


def kvsweep(*args: str) -> int:
    from sweep.cli import main

    return main(list(args))


def timed(*args: str) -> float:
    start = time.perf_counter()
    code = kvsweep(*args)
    if code != 0:
        sys.exit(f"kvsweep {' '.join(args)} exited with {code}")
    return time.perf_counter() - start


def rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(spec: str, out: str, marks: list[int]) -> None:
    """Run one sweep in this process and report the driver's RSS as rows land (JSON on stdout)."""
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        runs_dir = Path(out) / "runs"
        while not done.is_set():
            rows = 1000 * len(list(runs_dir.glob("part-*.parquet"))) if runs_dir.is_dir() else 0
            for mark in marks:
                if rows >= mark and str(mark) not in seen:
                    seen[str(mark)] = rss_mib()
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    code = kvsweep("run", spec, "--out", out, "--part-rows", "1000", "--no-progress")
    wall = time.perf_counter() - start
    seen.setdefault(str(marks[-1]), rss_mib())
    done.set()
    peak = max(rss_mib("VmHWM"), *seen.values())  # VmHWM can trail VmRSS by a page or two
    print(json.dumps({"code": code, "wall_s": wall, "rss_mib": seen, "peak_mib": peak}))


def in_child(spec: Path, out: Path, marks: list[int]) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(spec), str(out), *map(str, marks)],
        capture_output=True, text=True, check=False,
    )
    try:
        result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        sys.exit(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    if result["code"] != 0:
        sys.exit(f"benchmark child sweep failed:\n{proc.stderr[-3000:]}")
    return result


def parallel(tmp: Path, cores: list[int], seeds: int, requests: int) -> None:

    spec = tmp / "short.yaml"
    spec.write_text(short(seeds, requests))
    serial_s = timed("run", str(spec), "--out", str(tmp / "serial"), "--executor", "serial", "--no-progress")
    table = ds.dataset(tmp / "serial" / "runs").to_table(columns=["sim_wall_s", "status"])
    runs = table.num_rows
    mean_sim = sum(table.column("sim_wall_s").to_pylist()) / runs
    print(f"{runs:,} short runs of {requests} requests (simulate: mean {1000 * mean_sim:.1f} ms per run)")
    print(f"  serial, one process:         {serial_s:6.1f} s")
    for n in cores:
        on_ray(tmp / f"ray{n}", spec, n, serial_s, runs)


def on_ray(out: Path, spec: Path, cores: int, serial_s: float, runs: int) -> None:
    """The same grid on an embedded Ray of ``cores`` CPUs; the driver's own CPU time is read
    apart (near the wall time, the driver is what limits the sweep)."""
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - start

    @ray.remote(num_cpus=1)
    def warm() -> int:
        import sweep.executors  # noqa: F401 - what the first task in each worker would import

        return os.getpid()

    pids = set(ray.get([warm.remote() for _ in range(4 * cores)]))
    warm_s = time.perf_counter() - start - init_s
    cpu0 = time.process_time()
    ray_s = timed("run", str(spec), "--out", str(out), "--no-progress")
    driver_cpu_s = time.process_time() - cpu0
    ray.shutdown()

    efficiency = serial_s / (ray_s * cores)
    overhead_ms = 1000 * (ray_s * cores - serial_s) / runs
    start_s = init_s + warm_s
    print(f"  Ray, {cores} cores:")
    print(f"    start-up:                  {start_s:6.1f} s  (ray.init {init_s:.1f} s"
          f" + first import in {len(pids)} workers {warm_s:.1f} s)")
    print(f"    sweep w/o start-up:        {ray_s:6.1f} s  (with start-up {ray_s + start_s:.1f} s);"
          f" the driver's own CPU {driver_cpu_s:.1f} s ({driver_cpu_s / ray_s:.0%} of it)")
    print(f"    parallel efficiency:       {efficiency:6.2f}  serial / (Ray x {cores} cores), target >= 0.85")
    print(f"    per-run overhead:          {overhead_ms:6.2f} ms of core time: (Ray x cores - serial) / runs")


def scale(tmp: Path) -> None:
    small, big = tmp / "tiny5k.yaml", tmp / "tiny20k.yaml"
    small.write_text(tiny(5_000))
    big.write_text(tiny(20_000))
    first = in_child(small, tmp / "t5k", [5_000])
    second = in_child(big, tmp / "t20k", [5_000, 20_000])
    rss5k = second["rss_mib"]["5000"]  # type: ignore[index]
    rss20k = second["rss_mib"]["20000"]  # type: ignore[index]
    first5k = first["rss_mib"]["5000"]  # type: ignore[index]
    print("driver memory (its own process, embedded Ray, tiny runs, a part every 1,000 rows)")
    print(f"  5,000-run sweep:   {first['wall_s']:6.1f} s, RSS at 5,000 runs {first5k:6.0f} MiB,"
          f" peak {first['peak_mib']:.0f} MiB")
    print(f"  20,000-run sweep:  {second['wall_s']:6.1f} s, RSS at 5,000 runs {rss5k:6.0f} MiB,"
          f" at 20,000 runs {rss20k:.0f} MiB, peak {second['peak_mib']:.0f} MiB")
    print(f"  growth 5k -> 20k:  {rss20k - rss5k:+.0f} MiB; target: peak < 1024 MiB and flat")
    start = time.perf_counter()
    code = subprocess.run(
        [sys.executable, "-m", "sweep.cli", "run", str(small), "--out", str(tmp / "t5k"), "--no-progress"],
        capture_output=True, text=True, check=False,
    ).returncode
    resume_s = time.perf_counter() - start
    assert code == 0 and ds.dataset(tmp / "t5k" / "runs").count_rows() == 5_000
    print(f"resume of the finished 5,000-run sweep (a fresh `kvsweep run`, nothing to do): {resume_s:.1f} s;"
          " target < 10 s")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], [int(m) for m in sys.argv[4:]])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", default=str(os.cpu_count() or 1),
                        help="Ray CPUs, or a comma-separated list to run the grid at each (default: all)")
    parser.add_argument("--requests", type=int, default=50, help="requests per run of the serial-vs-Ray grid")
    parser.add_argument("--seeds", type=int, default=100,
                        help="seeds per cell of the serial-vs-Ray grid (10 cells; default 100: 1,000 runs)")
    parser.add_argument("--skip-scale", action="store_true", help="only serial vs Ray")
    args = parser.parse_args()
    import ray

    from simcore import __version__

    cores = [int(c) for c in args.cores.split(",")]
    print(f"kvsweep {__version__} sweep benchmark: {args.cores} cores, Ray {ray.__version__},"
          f" Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        parallel(Path(tmp), cores, args.seeds, args.requests)
        if not args.skip_scale:
            scale(Path(tmp))
    print(f"load average {os.getloadavg()[0]:.1f} at the end (other work on the machine skews the figures)")


if __name__ == "__main__":
    main()
