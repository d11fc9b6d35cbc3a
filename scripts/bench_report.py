"""Time `kvsweep report` as a user runs it (a fresh process: imports, reading, drawing, writing).

    python scripts/bench_report.py [DIR] [--slo "ttft_p99_s<1"] [--repeats 3]

Without DIR it first writes the synthetic dataset of configs/sweeps/capacity.yaml's shape
(scripts/synth_capacity.py: 6,804 runs) into a temporary folder. Prints the median wall time of
`kvsweep report DIR` with --jobs 1 (every model drawn in the one process) and with one worker
per CPU (the default), each over the same repeats, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def once(kvsweep: str, folder: str, out: str, slo: str | None, jobs: int) -> float:
    cmd = [kvsweep, "report", folder, "--out", out, "--jobs", str(jobs)] + (["--slo", slo] if slo else [])
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", help="a sweep's dataset (default: a synthetic capacity grid)")
    parser.add_argument("--slo", default=None, help='e.g. "ttft_p99_s<1"')
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    kvsweep = str(Path(sys.executable).parent / "kvsweep")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir
        if folder is None:
            import synth_capacity

            folder = f"{tmp}/capacity"
            synth_capacity.main(["--out", folder])
        times: dict[int, list[float]] = {1: [], cpus: []}
        for _ in range(args.repeats):  # interleaved, so both see the same machine
            for jobs in times:
                times[jobs].append(once(kvsweep, folder, f"{tmp}/report", args.slo, jobs))
    for jobs, wall in times.items():
        print(f"kvsweep report --jobs {jobs}: median {statistics.median(wall):.2f} s"
              f" (of {', '.join(f'{w:.2f}' for w in wall)})")
    if cpus > 1:
        ratio = statistics.median(times[1]) / statistics.median(times[cpus])
        print(f"--jobs {cpus} is {ratio:.2f}x as fast as --jobs 1 ({cpus} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
