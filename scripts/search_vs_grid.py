"""Capacity search against a dense grid: the same boundary, with fewer runs.

Runs one capacity search (``search:`` over concurrent users, caching off and prefix) and the dense
grid of every user count it could have probed, reads the grid's boundary the same way
(``sweep.capacity.capacity_rows``: the most users before the first that fails the SLO, every
seed meeting it) and prints both boundaries and both run counts::

    .venv/bin/python scripts/search_vs_grid.py        # Llama-3.1-8B, H100 at 40 GiB: ~3 min on 2 cores
    .venv/bin/python scripts/search_vs_grid.py --high 64 --executor serial --duration 600

Measured on the 2-core machine (1800 s runs, one seed, TTFT p99 <= 1 s): the search found 68 users
without caching and 98 with prefix caching in 28 runs (13 s); the dense grid of users 1..128
found the same in 256 runs (112 s), with no inversion. With 300 s runs the grid has inversions
near the boundary (the p99 of a short run is noisy) and the two readings differ by a few users.

Both sweeps go through ``kvsweep run`` (on one embedded Ray, started here, unless ``--executor
serial``) into a temporary folder (``--keep DIR`` keeps them). The search assumes the SLO verdict
is monotone in users; the script counts the grid's inversions (a user count that meets the SLO
above one that fails), which short, noisy runs produce near the boundary: where there are
some, the two readings may differ by a few users.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from sweep import analysis
from sweep.capacity import capacity_rows
from sweep.cli import main as kvsweep
from sweep.slo import Slo


def base(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.model,
        "gpu": {"name": "H100-SXM-80GB", "memory_gib": args.memory_gib},
        "workload": {
            "kind": "chat",
            "users": 1,
            "system_prompts": 8,
            "system_prompt_tokens": 1000,
            "turns": {"kind": "geometric", "mean": 4},
            "user_tokens": {"kind": "lognormal", "mean": 200, "sigma": 0.8},
            "output_tokens": {"kind": "lognormal", "mean": 250, "sigma": 0.8, "max": 1024},
            "think_time_s": {"kind": "exponential", "mean": 3.0},
        },
        "run": {"num_requests": None, "duration_s": args.duration, "warmup_s": args.duration / 5},
    }


def run(spec: dict[str, Any], out: Path, executor: str) -> float:
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(spec))
    start = time.perf_counter()
    code = kvsweep(["run", str(path), "--out", str(out), "--executor", executor, "--no-progress"])
    if code != 0:
        sys.exit(f"kvsweep run {path} exited {code}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Llama-3.1-8B")
    parser.add_argument("--memory-gib", type=float, default=40.0)
    parser.add_argument("--slo", default="ttft_p99_s<=1", help="SLO (default ttft_p99_s<=1)")
    parser.add_argument("--high", type=int, default=128, help="users searched: 1 .. HIGH (default 128)")
    parser.add_argument(
        "--duration", type=float, default=1800.0, help="simulated seconds per run (default 1800)"
    )
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--executor", choices=("ray", "serial"), default="ray")
    parser.add_argument("--keep", type=Path, help="keep both datasets under this folder")
    args = parser.parse_args()
    slo = Slo.parse(args.slo)
    limits = {lim.metric: lim.value for lim in slo.limits}
    common = {"base": base(args), "seeds": args.seeds, "grid": {"engine.prefix_caching": ["off", "prefix"]}}
    search = {
        **common,
        "name": "search",
        "search": {"axis": "workload.users", "slo": limits, "low": 1, "high": args.high},
    }
    # the grid's runs get the same per-request SLO as the probes, so the two configs match run for run
    probe_run = {**common["base"]["run"], "slo": slo.per_request()}
    grid = {
        **common,
        "name": "grid",
        "base": {**common["base"], "run": probe_run},
        "grid": {**common["grid"], "workload.users": list(range(1, args.high + 1))},
    }
    folder = args.keep or Path(tempfile.mkdtemp(prefix="search-vs-grid-"))
    folder.mkdir(parents=True, exist_ok=True)
    if args.executor == "ray":  # one Ray for both sweeps: kvsweep uses it and leaves it running
        import ray

        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    search_s = run(search, folder / "search", args.executor)
    grid_s = run(grid, folder / "grid", args.executor)
    found = analysis.load_capacity(folder / "search")
    assert found is not None
    runs = analysis.load(folder / "grid")
    dense = capacity_rows(runs, "workload.users", slo, "max", ["engine.prefix_caching"])
    n_search = len(analysis.load(folder / "search", columns=["run_id"]))
    n_grid = len(runs)
    print(
        f"\n{args.model} on H100 at {args.memory_gib:g} GiB, chat, {args.duration:g} s runs,"
        f" {args.seeds} seed(s); SLO {slo.describe()}; users 1..{args.high}"
    )
    print(f"{'caching':<8} {'search':>8} {'grid':>8}  same  grid inversions")
    same = True
    for mode in ("off", "prefix"):
        s = found.set_index("engine.prefix_caching").loc[mode]
        g = dense.set_index("engine.prefix_caching").loc[mode]
        agree = s["boundary"] == g["boundary"] and s["bracketed"] == g["bracketed"]
        same &= bool(agree)
        late = _inversions(runs[runs["engine.prefix_caching"] == mode], slo)
        print(f"{mode:<8} {_users(s):>8} {_users(g):>8}  {'yes' if agree else 'NO ':<4}  {late}")
    print(
        f"runs: search {n_search} ({search_s:.0f} s), dense grid {n_grid} ({grid_s:.0f} s):"
        f" {n_grid / n_search:.1f}x fewer runs; same boundaries: {'yes' if same else 'NO'}"
    )
    print(f"datasets in {folder}")


def _inversions(runs: Any, slo: Slo) -> str:
    """User counts that meet the SLO above the first that fails (every seed), as text."""
    meets = runs.assign(_m=slo.meets(runs)).groupby("workload.users")["_m"].all().sort_index()
    failed = meets[~meets]
    if failed.empty:
        return "0"
    late = meets[(meets.index > failed.index[0]) & meets]
    shown = ", ".join(map(str, late.index[:6]))
    return f"{len(late)}" + (f" (meets at {shown} above {failed.index[0]}, which fails)" if len(late) else "")


def _users(row: Any) -> str:
    if row["boundary"] != row["boundary"]:  # NaN: none meets
        return "none"
    return f"{int(row['boundary'])}" + ("" if row["bracketed"] else "+")


if __name__ == "__main__":
    main()
