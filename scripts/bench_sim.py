"""Benchmark one simulation: the standard scenario (configs/runs/chat.yaml) in one process.

Prints simulated requests per wall-second, simulated seconds per wall-second, engine steps,
events and peak RSS for the fast mode (median of --repeat runs), and the same figures for the
one-step-at-a-time reference mode on a shorter run, with the speed-up, measured in this run.
With ``--pure-requests`` it also runs fast mode with the compiled paths off
(KVSWEEP_PURE_PYTHON=1, in a child process) to show what the compiled module buys.

With ``--replicas N`` (default 4) it measures a cluster: N replicas serving N times the
scenario's users (the same load per replica) against one replica, in wall microseconds per
simulated request, for each router of ``--cluster-routers``; the target is 1.3x. Beside them it
measures the floor: N independent single engines stepped together in simulated-time order (no
router, no cluster bookkeeping), which costs more than one engine per request only because the
N engines' memory is touched in turn, and as a control the same N engines run one after another.

With ``--against REV`` it first compares this tree with git revision REV (e.g. ``HEAD`` for
uncommitted changes, ``HEAD~1`` for the last commit): REV is checked out in a temporary git
worktree, its compiled module built there, and both trees run the same scenario in alternating
child processes (the machine is noisy: interleaving spreads its noise over both). It prints the
medians and the ratio, and checks that both give the same figures unless told they differ.
With ``--against-routers`` it compares clusters the same way: one replica, the floor and
``--replicas`` replicas behind each router given.

    python scripts/bench_sim.py                 # 20,000 requests, 3 repeats
    python scripts/bench_sim.py --requests 5000 --repeat 1
    python scripts/bench_sim.py --against HEAD~1 --requests 10000 --repeat 5 --only-against
    python scripts/bench_sim.py --against HEAD~1 --only-against --against-routers prefix_aware
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TREE_ENV = "KVSWEEP_BENCH_TREE"  # a child process imports simcore and sweep from this tree
sys.path.insert(0, os.environ.get(TREE_ENV, str(ROOT)))

from simcore import native  # noqa: E402
from simcore.api import simulate  # noqa: E402
from sweep.cmd_simulate import load_config  # noqa: E402


def run(path: str, requests: int, mode: str) -> dict[str, float]:
    cfg = load_config(path, [f"run.num_requests={requests}", f"run.mode={mode}"])
    t0 = time.perf_counter()
    s = simulate(cfg).summary
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "req_per_s": s["num_completed"] / wall,
        "sim_s_per_s": s["sim_duration_s"] / wall,
        "steps": s["num_steps"],
        "events": s["sim_events"],
        "hit_rate": s["prefix_hit_rate"],
        "ttft_p50_ms": s["ttft_p50_s"] * 1e3,
    }


def run_cluster(path: str, requests: int, replicas: int, router: str) -> dict[str, float]:
    """The scenario with ``replicas`` replicas serving ``replicas`` x its users and requests."""
    users = load_config(path, []).workload.users  # type: ignore[union-attr]
    assert users is not None, "the scenario must be a chat workload with users"
    cfg = load_config(path, [f"run.num_requests={replicas * requests}", "run.mode=fast",
                             f"cluster.replicas={replicas}", f"cluster.router={router}",
                             f"workload.users={replicas * users}"])
    t0 = time.perf_counter()
    s = simulate(cfg).summary
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "us_per_req": 1e6 * wall / s["num_completed"], "hit_rate": s["prefix_hit_rate"]}


def run_interleaved(path: str, requests: int, replicas: int, switch_s: float = 0.0) -> dict[str, float]:
    """The floor under a cluster's cost: ``replicas`` independent single engines (the scenario
    each, seeds 0, 1, ...), stepped together in simulated-time order, event by event, as a
    cluster's replicas run. No router, no cluster bookkeeping: what it costs over one engine per
    request is what touching N engines' memory in turn costs (their caches, block pools and
    requests no longer fit the CPU's caches together). ``switch_s`` > 0 runs each engine on
    for that much simulated time before the next takes over (``scripts/bench_floor.py``); with
    ``math.inf`` the engines run one after another (the control: about one engine per request)."""
    try:
        from simcore.gctune import tuned_gc
    except ImportError:  # (a tree from before it, under --against)
        tuned_gc = contextlib.nullcontext  # type: ignore[assignment]
    with tuned_gc():  # as simulate() runs
        return _interleaved(path, requests, replicas, switch_s)


def _interleaved(path: str, requests: int, replicas: int, switch_s: float) -> dict[str, float]:
    import heapq

    from simcore.costmodel import kv_capacity_blocks
    from simcore.engine import Engine
    from simcore.metrics import summarize
    from simcore.steady import Setting
    from simcore.workload import Workload

    t0 = time.perf_counter()
    engines = []
    for seed in range(replicas):
        cfg = load_config(path, [f"run.num_requests={requests}", "run.mode=fast", f"run.seed={seed}"])
        engine = Engine(cfg, kv_capacity_blocks(cfg)[0])
        Workload(cfg).start(engine)
        engines.append((engine, cfg))
    envs = [e.env for e, _ in engines]
    inf = float("inf")
    until = switch_s  # each engine in turn up to the next multiple of switch_s (inf: to its end)
    while switch_s > 0 and any(env.peek() < inf for env in envs):
        for env in envs:
            while env.peek() <= until and env.peek() < inf:
                env.step()
        until += switch_s
    due = [(env.peek(), i) for i, env in enumerate(envs)]
    heapq.heapify(due)
    while due[0][0] < inf:
        env = envs[due[0][1]]
        env.step()
        heapq.heapreplace(due, (env.peek(), due[0][1]))
    done = 0
    for engine, cfg in engines:
        engine.collect()
        engine._client_times()
        s = summarize(engine.records, engine.counters, Setting.of(cfg), stop_s=engine.stop_s,
                      stop_reason=engine.stop_reason or "workload ended",
                      cache_full_s=engine.scheduler.cache_full_s,
                      capacity_blocks=int(engine.pool.usable_blocks), block_size=cfg.engine.block_size,
                      wall_s=time.perf_counter() - t0)
        done += s["num_completed"]
    return {"us_per_req": 1e6 * (time.perf_counter() - t0) / done}


def cluster_bench(path: str, requests: int, replicas: int, routers: list[str], repeat: int) -> None:
    """N replicas x N times the users against one replica, per simulated request: medians of
    alternating child processes (each run starts from a fresh interpreter, so one run's
    leftovers do not slow the next); with the floor (:func:`run_interleaved`) measured beside."""
    print(f"cluster: {replicas} replicas x {replicas}x the users against 1 replica, {requests:,} requests "
          f"per replica, median of {repeat} alternating child runs")
    rows: dict[str, list[dict[str, float]]] = {"1": [], "floor": [], "seq": [], **{r: [] for r in routers}}
    for _ in range(repeat):
        rows["1"].append(run_cluster_child(path, requests, 1, "round_robin"))
        rows["floor"].append(run_cluster_child(path, requests, replicas, "interleaved"))
        rows["seq"].append(run_cluster_child(path, requests, replicas, "sequential"))
        for router in routers:
            rows[router].append(run_cluster_child(path, requests, replicas, router))
    base = statistics.median(r["us_per_req"] for r in rows["1"])
    hit = statistics.median(r["hit_rate"] for r in rows["1"])
    print(f"  1 replica:           {base:6.1f} us/request | hit rate {hit:.4f}")
    floor = statistics.median(r["us_per_req"] for r in rows["floor"])
    print(f"  {replicas} independent engines, interleaved (no router): {floor:6.1f} us/request | "
          f"{floor / base:.2f}x one replica per request (the floor: their memory touched in turn)")
    seq = statistics.median(r["us_per_req"] for r in rows["seq"])
    print(f"  the same {replicas} engines, one after another: {seq:6.1f} us/request | "
          f"{seq / base:.2f}x one replica per request (the control)")
    for router in routers:
        us = statistics.median(r["us_per_req"] for r in rows[router])
        hit = statistics.median(r["hit_rate"] for r in rows[router])
        print(f"  {replicas} x {router:<17}{us:6.1f} us/request | hit rate {hit:.4f} | {us / base:.2f}x one "
              f"replica per request (target 1.3x) | {us / floor:.2f}x the floor")


def run_cluster_or_floor(path: str, requests: int, replicas: int, router: str) -> dict[str, float]:
    """:func:`run_cluster`, or for router ``interleaved`` / ``sequential`` :func:`run_interleaved`."""
    if router in ("interleaved", "sequential"):
        return run_interleaved(path, requests, replicas, 0.0 if router == "interleaved" else float("inf"))
    return run_cluster(path, requests, replicas, router)


def refuse_unknown_routers(prog: str, lists: list[str]) -> None:
    """Exit with code 2 and one line if a comma-separated list names something that is not a
    router (checked before any child process runs)."""
    from simcore.router import ROUTERS

    unknown = sorted({r for text in lists for r in text.split(",") if r and r not in ROUTERS})
    if unknown:
        print(f"{prog}: error: router {', '.join(unknown)}: use {', '.join(ROUTERS)}", file=sys.stderr)
        raise SystemExit(2)


def in_child(func: str, *args: Any, env: dict[str, str] | None = None, module: str = "bench_sim") -> Any:
    """``<module>.<func>(*args)`` (a script of this folder) in a fresh interpreter (extra
    environment ``env``: e.g. :data:`TREE_ENV` to run another tree's simcore); its result.
    Arguments and result cross as JSON."""
    code = ("import importlib, json, sys; sys.path.insert(0, sys.argv[1]); "
            "mod = importlib.import_module(sys.argv[2]); "
            "print(json.dumps(getattr(mod, sys.argv[3])(*json.loads(sys.argv[4]))))")
    argv = [sys.executable, "-c", code, str(Path(__file__).parent), module, func, json.dumps(args)]
    out = subprocess.run(argv, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def run_cluster_child(path: str, requests: int, replicas: int, router: str,
                      tree: Path | None = None) -> dict[str, float]:
    """:func:`run_cluster_or_floor` in a child process (on the simcore of ``tree`` if given)."""
    env = {TREE_ENV: str(tree)} if tree is not None else None
    return in_child("run_cluster_or_floor", path, requests, replicas, router, env=env)


def run_child(path: str, requests: int, env: dict[str, str]) -> dict[str, float]:
    """One fast-mode run in a child process with extra environment ``env``."""
    return in_child("run", path, requests, "fast", env=env)


def run_pure(path: str, requests: int) -> dict[str, float]:
    """One fast-mode run in a child process with the compiled paths turned off."""
    return run_child(path, requests, {native.PURE_ENV: "1"})


def checkout(rev: str) -> Path:
    """REV in a temporary git worktree, with its compiled module built (pip builds a wheel in
    an isolated environment, so Cython need not be installed here) and unpacked beside it."""
    tree = Path(tempfile.mkdtemp(prefix="kvsweep-bench-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                   check=True, capture_output=True)
    wheels = tree / ".wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(tree)],
                   check=True, capture_output=True, env={**os.environ, "KVSWEEP_REQUIRE_NATIVE": "1"})
    with zipfile.ZipFile(next(wheels.glob("*.whl"))) as whl:
        for name in whl.namelist():
            if name.startswith("simcore/_native"):
                whl.extract(name, tree)
    return tree


def against(rev: str, path: str, requests: int, repeat: int, same_figures: bool,
            cluster: tuple[int, list[str], int] | None = None) -> None:
    """This tree against REV, alternating child processes; prints medians and the ratio.
    ``cluster`` (replicas, routers, requests per replica): then also clusters, see
    :func:`against_cluster`."""
    tree = checkout(rev)
    try:
        if cluster is not None:
            against_cluster(rev, tree, path, repeat, *cluster)
        rows: dict[str, list[dict[str, float]]] = {"this tree": [], rev: []}
        for _ in range(repeat):
            rows["this tree"].append(run_child(path, requests, {TREE_ENV: str(ROOT)}))
            rows[rev].append(run_child(path, requests, {TREE_ENV: str(tree)}))
        print(f"this tree against {rev}: {requests:,} requests, {repeat} alternating child runs each")
        new, old = show("this tree", rows["this tree"]), show(rev, rows[rev])
        print(f"this tree / {rev}: {old['wall_s'] / new['wall_s']:.3f}x the speed "
              f"({new['req_per_s']:,.0f} vs {old['req_per_s']:,.0f} simulated req/wall-s)")
        figures = ("steps", "hit_rate", "ttft_p50_ms")
        if same_figures and any(new[k] != old[k] for k in figures):
            raise SystemExit("the trees give different figures: pass --figures-differ if that is meant")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       capture_output=True)


def against_cluster(rev: str, tree: Path, path: str, repeat: int, replicas: int, routers: list[str],
                    requests: int) -> None:
    """One replica, the floor (:func:`run_interleaved`) and ``replicas`` replicas behind each
    of ``routers``, this tree against REV's checkout ``tree``, alternating child processes."""
    kinds = [("1 replica", 1, "round_robin"), ("floor", replicas, "interleaved"),
             *((f"{replicas} x {r}", replicas, r) for r in routers)]
    rows: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeat):
        for label, n, router in kinds:
            for side, where in (("this tree", None), (rev, tree)):
                us = run_cluster_child(path, requests, n, router, where)["us_per_req"]
                rows.setdefault((label, side), []).append(us)
    print(f"clusters, this tree against {rev}: {requests:,} requests per replica, {repeat} alternating "
          "child runs each; wall microseconds per simulated request")
    for label, _, _ in kinds:
        new, old = (statistics.median(rows[(label, side)]) for side in ("this tree", rev))
        print(f"  {label:<22} this tree {new:6.1f} | {rev} {old:6.1f} | {old / new:.3f}x the speed")


def show(label: str, rows: list[dict[str, float]]) -> dict[str, float]:
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"{label:<10} wall {med['wall_s']:7.2f} s | {med['req_per_s']:9,.0f} simulated req/wall-s | "
          f"{med['sim_s_per_s']:8,.0f} simulated s/wall-s | {int(med['steps']):,} steps | "
          f"{int(med['events']):,} events | hit rate {med['hit_rate']:.4f} | "
          f"TTFT p50 {med['ttft_p50_ms']:.2f} ms")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs/runs/chat.yaml"))
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reference-requests", type=int, default=3_000,
                    help="requests for the reference-mode comparison (0 to skip)")
    ap.add_argument("--scaling", default="5000,10000,20000,40000",
                    help="request counts for the linearity check (empty to skip)")
    ap.add_argument("--pure-requests", type=int, default=3_000,
                    help="requests for the compiled vs pure-Python comparison (0 to skip)")
    ap.add_argument("--replicas", type=int, default=4,
                    help="replicas for the cluster measurement (0 to skip)")
    ap.add_argument("--cluster-routers", default="session_affinity,prefix_aware,round_robin",
                    help="routers for the cluster measurement, comma separated")
    ap.add_argument("--cluster-requests", type=int, default=10_000,
                    help="requests per replica for the cluster measurement")
    ap.add_argument("--against", metavar="REV", help="first compare with git revision REV (see above)")
    ap.add_argument("--only-against", action="store_true", help="stop after the --against comparison")
    ap.add_argument("--against-routers", default="",
                    help="with --against: also compare clusters (--replicas, --cluster-requests) behind "
                         "these routers, comma separated, with one replica and the floor")
    ap.add_argument("--figures-differ", action="store_true",
                    help="with --against: the change is meant to change the simulated figures")
    args = ap.parse_args()
    refuse_unknown_routers("bench_sim", [args.cluster_routers, args.against_routers])
    if args.against:
        routers = [r for r in args.against_routers.split(",") if r]
        cluster = (args.replicas, routers, args.cluster_requests) if routers else None
        against(args.against, args.config, args.requests, args.repeat, not args.figures_differ, cluster)
        if args.only_against:
            return
    print(f"scenario: {args.config}, {args.requests:,} requests, median of {args.repeat} runs")
    print(f"fast mode runs: {native.describe()}")
    fast = show("fast", [run(args.config, args.requests, "fast") for _ in range(args.repeat)])
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss_mib:,.0f} MiB")
    if args.reference_requests:
        n = args.reference_requests
        print(f"same scenario, {n:,} requests, both modes:")
        f_small = show("fast", [run(args.config, n, "fast") for _ in range(args.repeat)])
        r_small = show("reference", [run(args.config, n, "reference") for _ in range(args.repeat)])
        print(f"fast / reference speed-up: {r_small['wall_s'] / f_small['wall_s']:.2f}x")
    if args.pure_requests and native.NATIVE is not None:
        n = args.pure_requests
        print(f"same scenario, {n:,} requests, fast mode compiled and pure Python:")
        c_small = show("compiled", [run(args.config, n, "fast") for _ in range(args.repeat)])
        p_small = show("pure", [run_pure(args.config, n) for _ in range(args.repeat)])
        if (c_small["hit_rate"], c_small["ttft_p50_ms"]) != (p_small["hit_rate"], p_small["ttft_p50_ms"]):
            raise SystemExit("compiled and pure-Python runs disagree: a bug")
        print(f"compiled / pure-Python speed-up: {p_small['wall_s'] / c_small['wall_s']:.2f}x")
    if args.scaling:
        print("linearity (fast mode): wall microseconds per simulated request")
        for n in (int(x) for x in args.scaling.split(",")):
            r = run(args.config, n, "fast")
            print(f"  {n:>7,} requests: {r['wall_s']:7.2f} s, {1e6 * r['wall_s'] / n:6.0f} us/request")
    if args.replicas:
        cluster_bench(args.config, args.cluster_requests, args.replicas, args.cluster_routers.split(","),
                      args.repeat)
    print(f"RESULT simulated_requests_per_wall_second={fast['req_per_s']:.0f} target=10000")


if __name__ == "__main__":
    main()
