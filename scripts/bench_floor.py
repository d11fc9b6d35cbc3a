"""Why N replicas cost more than N single engines: the floor under a cluster's cost, measured.

A cluster's replicas run in one process in simulated-time order, so between two steps of one
replica the others run theirs. This benchmark runs N *independent* single engines (the standard
scenario each, seeds 0, 1, ...: no router, no cluster code) and prints the wall microseconds per
simulated request:

1. stepped together event by event (as a cluster's replicas are), for N = 1, 2, 4, 8: the cost
   per request grows with N although every engine does exactly the work it does alone;
2. N = 4, each engine running on for ``switch`` simulated seconds before the next takes over,
   from event by event to one after another: the same work gets cheaper the longer each engine
   keeps the CPU, which is what a working set that no longer fits the CPU's caches does (the
   machine this was written on has 1 MiB of L2 cache per core).

Each figure is the median of ``--repeat`` child processes, all measurements alternating (the
machine is noisy). ``scripts/bench_sim.py`` prints the cluster's routers against the floor of
part 1.

    python scripts/bench_floor.py                       # about 40 s on 2 cores
    python scripts/bench_floor.py --requests 2000 --repeat 1
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import bench_sim

ROOT = Path(__file__).resolve().parents[1]
COUNTS = (1, 2, 4, 8)
SWITCHES = (0.0, 1.0, 10.0, 100.0, math.inf)  # simulated seconds; 0: event by event


def child(path: str, requests: int, engines: int, switch_s: float) -> float:
    """``bench_sim.run_interleaved`` in a fresh interpreter: wall microseconds per request."""
    return bench_sim.in_child("run_interleaved", path, requests, engines, switch_s)["us_per_req"]


def label(switch_s: float) -> str:
    if switch_s == 0:
        return "event by event"
    return "one after another" if switch_s == math.inf else f"every {switch_s:g} simulated s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs/runs/chat.yaml"))
    ap.add_argument("--requests", type=int, default=5_000, help="requests per engine")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    runs = [(n, 0.0) for n in COUNTS] + [(4, s) for s in SWITCHES if s > 0]
    rows: dict[tuple[int, float], list[float]] = {r: [] for r in runs}
    for _ in range(args.repeat):
        for n, s in runs:
            rows[(n, s)].append(child(args.config, args.requests, n, s))
    med = {r: statistics.median(v) for r, v in rows.items()}
    one = med[(1, 0.0)]
    print(f"{args.config}: {args.requests:,} requests per engine, median of {args.repeat} alternating "
          "child runs; wall microseconds per simulated request")
    print("1. N independent engines stepped together event by event:")
    for n in COUNTS:
        print(f"   N = {n}: {med[(n, 0.0)]:6.1f} us/request | {med[(n, 0.0)] / one:.2f}x one engine")
    print("2. 4 independent engines, each running on before the next takes over:")
    for s in SWITCHES:
        us = med[(4, s)]
        print(f"   {label(s):<26}{us:6.1f} us/request | {us / one:.2f}x one engine")
    floor, apart = med[(4, 0.0)] / one, med[(4, math.inf)] / one
    print(f"RESULT floor_4_engines={floor:.2f}x one_after_another={apart:.2f}x")


if __name__ == "__main__":
    main()
