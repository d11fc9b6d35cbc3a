"""What the cyclic garbage collector costs a simulation, with CPython's default thresholds and
with :func:`simcore.gctune.tuned_gc` (what ``simulate`` runs under).

For one replica and for ``--replicas`` replicas behind each router of ``--routers``, on the
standard scenario (``configs/runs/chat.yaml``, N times the users for N replicas), it prints the
collections per generation and the collector's own time per simulated request (timed with
``gc.callbacks``), each run in a fresh child process.

    python scripts/bench_gc.py                  # about 30 s on 2 cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import gc, json, sys, time
sys.path.insert(0, sys.argv[1])
import bench_sim
from simcore import gctune
if sys.argv[2] == "default":
    gctune.GEN0 = 0  # tuned_gc keeps the larger of this and the current threshold: the default
runs, spent, started = [0, 0, 0], [0.0, 0.0, 0.0], [0.0]
def timed(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        runs[info["generation"]] += 1
        spent[info["generation"]] += time.perf_counter() - started[0]
gc.callbacks.append(timed)
replicas, router = int(sys.argv[4]), sys.argv[5]
r = bench_sim.run_cluster(sys.argv[3], int(sys.argv[6]), replicas, router)
done = r["wall_s"] / r["us_per_req"] * 1e6
print(json.dumps({"runs": runs, "us_per_req": [1e6 * s / done for s in spent], "total": r["us_per_req"]}))
"""


def child(config: str, thresholds: str, replicas: int, router: str, requests: int) -> dict[str, list[float]]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(Path(__file__).parent), thresholds, config,
                          str(replicas), router, str(requests)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs/runs/chat.yaml"))
    ap.add_argument("--requests", type=int, default=10_000, help="requests per replica")
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--routers", default="session_affinity,prefix_aware")
    args = ap.parse_args()
    cases = [(1, "round_robin")] + [(args.replicas, r) for r in args.routers.split(",") if r]
    print(f"{args.config}, {args.requests:,} requests per replica: collections per generation (0, 1, 2) "
          "and the collector's time in microseconds per simulated request")
    for replicas, router in cases:
        name = "1 replica" if replicas == 1 else f"{replicas} x {router}"
        for thresholds in ("default", "tuned"):
            r = child(args.config, thresholds, replicas, router, args.requests)
            runs = ", ".join(str(int(n)) for n in r["runs"])
            gc_us = sum(r["us_per_req"])
            print(f"  {name:<22} {thresholds:<8} collections {runs:<12} GC {gc_us:5.2f} us/request "
                  f"of {r['total']:5.1f}")


if __name__ == "__main__":
    main()
