"""Are the quickstart's headline figures steady-state answers? Each headline cell against the
same cell run five times longer.

Runs every cell of the sweep spec (default: configs/sweeps/quickstart.yaml) as the spec says,
picks the headline cells the way the report states its findings, per model: the cell where
prefix caching cuts TTFT p99 the most (among cells whose runs with and without caching are both
steady with both p99 intervals within ``MAX_P99_CI`` of their values: a ratio of two p99s known
to +-40% is no finding) and the cell where it raises throughput the most (among steady cells).
Then it runs those cells again with ``until: limits`` and ``num_requests`` five times what each
steady run used (warm-up found the same way), and prints one row per figure the headline
states (the two TTFT p99s and their ratio, or the two throughputs and theirs, and the hit
rate): the quickstart's value, the long run's and their ratio. Exit status 1 if any figure is
off by more than ``--tolerance`` (default 25%).

    python scripts/check_steady.py                       # about 2 minutes on 2 cores
    python scripts/check_steady.py --factor 5 --workers 2 --spec configs/sweeps/quickstart.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simcore.api import simulate  # noqa: E402
from simcore.config import SimConfig  # noqa: E402
from sweep.spec import SweepSpec  # noqa: E402

CACHING = "engine.prefix_caching"
MAX_P99_CI = 0.25  # largest relative p99 interval behind a stated TTFT p99 speed-up
KEEP = ("num_requests", "steady", "steady_reason", "ttft_p99_s", "ttft_p99_s_ci95_run", "throughput_rps",
        "prefix_hit_rate")


def run(config_json: str) -> dict[str, Any]:
    """One simulation (in a worker process): its status and the figures the check reads."""
    result = simulate(SimConfig.model_validate_json(config_json))
    return {"status": result.status, **{k: result.summary[k] for k in KEEP}}


def longer(config_json: str, requests: int) -> str:
    """The same run with ``until: limits`` and ``requests`` requests (warm-up found as before)."""
    raw = json.loads(config_json)
    raw["run"] = {**raw["run"], "until": "limits", "num_requests": requests, "duration_s": None}
    return SimConfig.model_validate(raw).model_dump_json()


def cells(spec_path: str) -> dict[tuple[Any, ...], dict[str, str]]:
    """(cell key without the caching axis) -> {caching mode: config JSON}."""
    plan = SweepSpec.load(spec_path).expand(source=spec_path)
    out: dict[tuple[Any, ...], dict[str, str]] = {}
    for i in range(len(plan)):
        spec = plan.run_at(i)
        axes = dict(spec.axis_values)
        mode = axes.pop(CACHING)
        key = (spec.config.model.name, *sorted(axes.items()))
        out.setdefault(key, {})[mode] = spec.config_json
    return out


Results = dict[tuple[Any, ...], dict[str, dict[str, Any]]]
SPEED, GAIN = "TTFT p99 speed-up", "throughput gain"


def _p99_known(run: dict[str, Any]) -> bool:
    half = run["ttft_p99_s_ci95_run"]
    return half is not None and half <= MAX_P99_CI * run["ttft_p99_s"]


def headlines(results: Results) -> list[tuple[str, tuple[Any, ...]]]:
    """Per model, the cell with the largest TTFT p99 speed-up and the one with the largest
    throughput gain from caching (see the module docstring)."""
    picks: list[tuple[str, tuple[Any, ...]]] = []
    for model in sorted({key[0] for key in results}):
        ok = [k for k, r in results.items() if k[0] == model and all(
            r[m]["status"] == "ok" and r[m]["steady"] for m in ("off", "prefix"))]
        known = [k for k in ok if all(_p99_known(results[k][m]) for m in ("off", "prefix"))]
        if known:
            picks.append((SPEED, max(known, key=lambda k: figures(results[k], SPEED)[SPEED_FIG])))
        if ok:
            picks.append((GAIN, max(ok, key=lambda k: figures(results[k], GAIN)[GAIN_FIG])))
    return picks


SPEED_FIG, GAIN_FIG = "TTFT p99 speed-up (x)", "throughput on / off"


def figures(pair: dict[str, dict[str, Any]], headline: str) -> dict[str, float]:
    """The figures a headline states about a cell."""
    off, on = pair["off"], pair["prefix"]
    if headline == SPEED:
        stated = {"TTFT p99 off (s)": off["ttft_p99_s"], "TTFT p99 on (s)": on["ttft_p99_s"],
                  SPEED_FIG: off["ttft_p99_s"] / on["ttft_p99_s"]}
    else:
        stated = {"throughput off (req/s)": off["throughput_rps"],
                  "throughput on (req/s)": on["throughput_rps"],
                  GAIN_FIG: on["throughput_rps"] / off["throughput_rps"]}
    return {**stated, "hit rate": on["prefix_hit_rate"]}


def describe(key: tuple[Any, ...]) -> str:
    return " ".join([key[0]] + [f"{k.split('.')[-1]}={v}" for k, v in key[1:] if k != "model"])


def run_all(pool: ProcessPoolExecutor, jobs: list[tuple[tuple[Any, ...], str, str]]) -> Results:
    out: Results = {}
    for (key, mode, _), res in zip(jobs, pool.map(run, [cfg for _, _, cfg in jobs]), strict=True):
        out.setdefault(key, {})[mode] = res
    return out


def compare(picks: list[tuple[str, tuple[Any, ...]]], short: Results, long: Results, factor: float) -> float:
    """Print the table; return the largest relative difference."""
    worst = 0.0
    longer_head = f"{factor:g}x longer"
    print(f"\n{'headline cell':<58} {'figure':<24} {'quickstart':>11} {longer_head:>11} {'ratio':>7}")
    for why, key in picks:
        short_f, long_f = figures(short[key], why), figures(long[key], why)
        cell = f"{describe(key)} ({why})"
        runs = "/".join(str(short[key][m]["num_requests"]) for m in ("off", "prefix"))
        for i, (name, value) in enumerate(short_f.items()):
            ratio = value / long_f[name] if long_f[name] else float("nan")
            worst = max(worst, abs(ratio - 1))
            print(f"{cell:<58} {name:<24} {value:>11.4g} {long_f[name]:>11.4g} {ratio:>7.3f}")
            cell = f"  ({runs} requests off/on)" if i == 0 else ""
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "configs/sweeps/quickstart.yaml"))
    parser.add_argument("--factor", type=float, default=5.0, help="how much longer the check runs (5)")
    parser.add_argument("--tolerance", type=float, default=0.25, help="largest relative difference (0.25)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    grid = cells(args.spec)
    with ProcessPoolExecutor(args.workers) as pool:
        short = run_all(pool, [(k, mode, cfg) for k, modes in grid.items() for mode, cfg in modes.items()])
        runs = [r for pair in short.values() for r in pair.values()]
        steady = sum(r["status"] == "ok" and r["steady"] for r in runs)
        print(f"{args.spec}: {len(runs)} runs, {sum(r['status'] == 'ok' for r in runs)} ok, {steady} of them"
              f" steady ({time.perf_counter() - started:.0f} s)")
        picks = headlines(short)
        long = run_all(pool, [
            (key, mode, longer(grid[key][mode], int(args.factor * short[key][mode]["num_requests"])))
            for key in sorted({key for _, key in picks}) for mode in ("off", "prefix")])
    worst = compare(picks, short, long, args.factor)
    passed = worst <= args.tolerance
    verdict = "PASS" if passed else "FAIL"
    print(f"\nlargest difference {worst:.1%} (tolerance {args.tolerance:.0%}): {verdict};"
          f" {time.perf_counter() - started:.0f} s in all")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
