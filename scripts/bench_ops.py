"""Python bytecodes per simulated request: a deterministic measure of the simulator's own work.

Wall-clock figures on a shared 2-core machine move by 5-10% from run to run, which hides the
few per cent a hot-path change is worth. The bytecodes the interpreter executes do not move:
this counts them (``sys.settrace`` with opcode events, in the simulator's and SimPy's own
functions; compiled code and C calls count nothing, so a change that moves work into C shows as
a drop) for one replica, the floor of ``scripts/bench_sim.py`` (4 independent engines stepped
together: no router, no cluster code) and 4 replicas behind each router, and prints

1. bytecodes per simulated request for each, against the floor;
2. for each router, the functions whose bytecodes per request differ most from the floor:
   where the cluster's machinery spends its work.

With ``--against REV`` every figure is also counted on git revision REV (checked out and built
as ``bench_sim.py --against`` does) and printed beside, with the change. The counts are exact,
so one run of each is enough; tracing makes a run about 40x slower, hence the short runs.
Figures the counts miss (cache misses, C time) still need ``bench_sim.py``'s wall clock.

    python scripts/bench_ops.py                                    # about 2 minutes on 2 cores
    python scripts/bench_ops.py --routers prefix_aware --top 25
    python scripts/bench_ops.py --against HEAD~1 --routers session_affinity,prefix_aware
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import bench_sim

ROOT = Path(__file__).resolve().parents[1]
TRACED = ("simcore", "simpy")  # path parts of the files whose functions are counted
REPLICAS = 4


def count(path: str, requests: int, kind: str) -> dict[str, Any]:
    """Bytecodes executed in the simulator's and SimPy's functions during one run of ``kind``
    (``one``: one replica; ``floor``: 4 independent engines interleaved; else 4 replicas behind
    router ``kind``), ``requests`` per replica: the total per simulated request, and per
    function (``file:name``) its bytecodes and calls per simulated request."""
    ops: Counter[CodeType] = Counter()
    calls: Counter[CodeType] = Counter()

    def opcode(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            ops[frame.f_code] += 1
        return opcode

    def call(frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        if any(part in code.co_filename for part in TRACED):
            frame.f_trace_opcodes = True
            calls[code] += 1
            return opcode
        return None

    gc.disable()  # a collection's timing would not change the counts, but keep runs alike
    sys.settrace(call)
    try:
        if kind == "floor":
            bench_sim.run_interleaved(path, requests, REPLICAS, 0.0)
        else:
            bench_sim.run_cluster(path, requests, 1 if kind == "one" else REPLICAS,
                                  "round_robin" if kind == "one" else kind)
    finally:
        sys.settrace(None)
        gc.enable()
    simulated = requests * (1 if kind == "one" else REPLICAS)
    per: dict[str, list[float]] = {}
    for code, n in ops.items():
        key = f"{Path(code.co_filename).name}:{code.co_name}"
        row = per.setdefault(key, [0.0, 0.0])
        row[0] += n / simulated
        row[1] += calls[code] / simulated
    return {"total": sum(ops.values()) / simulated, "functions": per}


def count_child(path: str, requests: int, kind: str, tree: Path | None) -> dict[str, Any]:
    """:func:`count` in a fresh interpreter (on the simcore of ``tree`` if given)."""
    env = {bench_sim.TREE_ENV: str(tree)} if tree is not None else None
    return bench_sim.in_child("count", path, requests, kind, env=env, module="bench_ops")  # type: ignore[no-any-return]


def differences(base: dict[str, Any], other: dict[str, Any], top: int) -> list[str]:
    """The ``top`` functions whose bytecodes per request differ most from ``base``'s."""
    a, b = base["functions"], other["functions"]
    rows = []
    for key in set(a) | set(b):
        (ops_a, calls_a), (ops_b, calls_b) = a.get(key, (0.0, 0.0)), b.get(key, (0.0, 0.0))
        rows.append((ops_b - ops_a, ops_a, ops_b, calls_a, calls_b, key))
    rows.sort(key=lambda r: -abs(r[0]))
    return [f"    {d:+8.1f} | {oa:7.1f} -> {ob:7.1f} bytecodes, {ca:5.2f} -> {cb:5.2f} calls | {key}"
            for d, oa, ob, ca, cb, key in rows[:top]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs/runs/chat.yaml"))
    ap.add_argument("--requests", type=int, default=1_000, help="requests per replica")
    ap.add_argument("--routers", default="session_affinity,prefix_aware,round_robin",
                    help="routers of the 4-replica runs, comma separated")
    ap.add_argument("--top", type=int, default=12, help="functions listed per router")
    ap.add_argument("--against", metavar="REV", help="also count on git revision REV")
    args = ap.parse_args()
    bench_sim.refuse_unknown_routers("bench_ops", [args.routers])
    if args.requests < 1:
        print(f"bench_ops: error: --requests {args.requests}: must be >= 1", file=sys.stderr)
        raise SystemExit(2)
    routers = [r for r in args.routers.split(",") if r]
    kinds = ["one", "floor", *routers]
    tree = bench_sim.checkout(args.against) if args.against else None
    try:
        here = {k: count_child(args.config, args.requests, k, None) for k in kinds}
        there = {k: count_child(args.config, args.requests, k, tree) for k in kinds} if tree else {}
    finally:
        if tree is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           capture_output=True)
    print(f"{args.config}: {args.requests:,} requests per replica; Python bytecodes per simulated request "
          f"(simcore and SimPy functions; exact)")
    floor = here["floor"]["total"]
    for k in kinds:
        label = {"one": "1 replica", "floor": f"floor ({REPLICAS} engines)"}.get(k, f"{REPLICAS} x {k}")
        total = here[k]["total"]
        line = f"  {label:<24} {total:8.0f} | {total / floor:.3f}x the floor"
        if there:
            old = there[k]["total"]
            line += f" | {args.against}: {old:8.0f} ({total / old - 1:+.1%})"
        print(line)
    for router in routers:
        print(f"  where {REPLICAS} x {router} differs from the floor (bytecodes per request):")
        print("\n".join(differences(here["floor"], here[router], args.top)))
        if there:
            print(f"  ... and from {args.against}:")
            print("\n".join(differences(there[router], here[router], args.top)))


if __name__ == "__main__":
    main()
