"""Write a synthetic dataset of a sweep's shape, to time and look at `kvsweep report` on a big grid
without the core-hours of simulating it.

    python scripts/synth_capacity.py [SPEC] --out /tmp/capacity-synth   # SPEC: capacity.yaml
    kvsweep report /tmp/capacity-synth [--slo "ttft_p99_s<1"]

Every row is what `kvsweep run SPEC` would store, except the metrics: the same run ids, axis and
context columns, schema, spec.yaml and _kvsweep.json (through sweep.store), and the same
infeasible runs with the simulator's own reasons (simcore's start-up checks). The metrics of the
feasible runs come from a closed-form sketch of a closed-loop chat server, NOT the simulator:

    decode step   t = weights per GPU / (HBM bandwidth x 0.7) + 4 ms
    batch         at most max_num_seqs, and what the KV cache holds at the mean context
    hit rate      session: earlier turns of the conversation; prefix: also the system prompt,
                  shared by users / system_prompts users, while the cache holds the prompts
    prefill       uncached prompt tokens x 2 x parameters / (FLOP/s x TP x 0.5)
    capacity      batch / (output tokens x t + prefill), requests/s
    load          users / (think time + response time); overloaded above the capacity

with 3% lognormal noise per seed. Use it for timing and for the look of the page, never for
conclusions about caching.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from simcore import __version__
from simcore.config import SimConfig
from simcore.costmodel import kv_capacity_blocks
from simcore.feasibility import config_refusal, memory_refusal
from simcore.metrics import SUMMARY_FIELDS
from sweep.spec import SweepSpec
from sweep.store import Dataset, row_head, runs_schema

ROOT = Path(__file__).resolve().parent.parent
OUTPUT_TOKENS = 250.0
USER_TOKENS = 200.0
TURNS = 4.0


def _mean(dist: Any, default: float) -> float:
    value = getattr(dist, "mean", None)
    if value is None:
        value = getattr(dist, "value", None)
    return float(value) if value is not None else default


def metrics(cfg: SimConfig, blocks: int, rng: np.random.Generator) -> dict[str, Any]:
    """The run's summary row from the closed-form sketch in the module docstring."""
    w, e, m, g = cfg.workload, cfg.engine, cfg.model, cfg.gpu
    tp = e.tensor_parallel
    system = _mean(getattr(w, "system_prompt_tokens", None), 1000.0)
    prompts = max(int(getattr(w, "system_prompts", 1)), 1)
    users = int(getattr(w, "users", 16))
    think = _mean(getattr(w, "think_time_s", None), 3.0)
    out_tokens = _mean(getattr(w, "output_tokens", None), OUTPUT_TOKENS)
    turns = _mean(getattr(w, "turns", None), TURNS)
    turn_tokens = _mean(getattr(w, "user_tokens", None), USER_TOKENS) + out_tokens
    context = system + turn_tokens * (turns + 1) / 2  # mean prompt over a session's turns
    kv_tokens = (blocks - 1) * e.block_size
    held = kv_tokens / (context + out_tokens)  # sequences the cache holds at once
    fits = min(1.0, kv_tokens / max(users * (context + out_tokens), 1.0))  # share of sessions kept
    session_hit = turn_tokens * (turns - 1) / 2 / context * fits
    shared = min(1.0, kv_tokens / (prompts * system * 4)) if users >= 2 * prompts else users / (2 * prompts)
    hit = {"off": 0.0, "session": session_hit, "prefix": session_hit + system / context * shared}[
        e.prefix_caching
    ]
    step = m.weight_bytes / tp / (g.hbm_bandwidth * 0.7) + 0.004
    prefill = context * (1 - hit) * 2 * m.num_params / (g.flops * tp * 0.5)
    batch = max(1.0, min(e.max_num_seqs, held, users))
    capacity = batch / (out_tokens * step + batch * prefill)
    noise = float(rng.lognormal(0.0, 0.03))
    response = out_tokens * step * (1 + batch * prefill / (out_tokens * step)) + prefill
    offered = users / (think + response)
    rho = offered / capacity
    overloaded = rho >= 0.97
    throughput = (capacity if overloaded else offered) * noise
    queue = 0.0 if overloaded else prefill * rho / (1 - rho) * 4
    ttft_p50 = (prefill + step + queue) * noise
    ttft_p99 = ttft_p50 * (3.0 + 2.0 * rho) if not overloaded else 30.0 * noise * (1 + rho)
    measured = float(min(20000, max(2000, 400 * users)) / max(throughput, 1e-3))
    row: dict[str, Any] = dict.fromkeys(SUMMARY_FIELDS)
    n = int(min(20000, max(2000, 400 * users)))
    row.update(
        num_requests=n,
        num_completed=n,
        num_failed=0,
        num_measured=int(n * 0.8),
        sim_duration_s=measured * 1.2,
        stop_reason="steady" if not overloaded else "overloaded",
        warmup_rule="mser",
        warmup_end_s=measured * 0.2,
        measured_s=measured,
        steady=not overloaded,
        steady_reason=f"overloaded: queue grows {offered - capacity:.3g} req/s" if overloaded else "",
        capacity_rps=capacity * noise,
        throughput_rps=throughput,
        output_tokens_per_s=throughput * out_tokens,
        ttft_mean_s=ttft_p50 * 1.3,
        ttft_p50_s=ttft_p50,
        ttft_p90_s=ttft_p50 * 2.0,
        ttft_p99_s=ttft_p99,
        tpot_mean_s=step * (1 + batch * prefill / (out_tokens * step)),
        tpot_p50_s=step,
        tpot_p90_s=step * 1.5,
        tpot_p99_s=step * 2.5,
        e2e_p99_s=ttft_p99 + out_tokens * step * 2,
        prefix_hit_rate=hit,
        hit_request_share=min(1.0, hit * 1.5),
        prefill_tokens_total=int(context * n),
        prefill_tokens_computed=int(context * (1 - hit) * n),
        prefill_reduction=hit,
        recomputed_tokens=0,
        preemptions=0,
        evictions=0,
        kv_capacity_blocks=blocks - 1,
        kv_capacity_tokens=kv_tokens,
        kv_peak_util=min(1.0, users * (context + out_tokens) / kv_tokens),
        mean_batch_size=batch,
        engine_busy_fraction=min(1.0, rho),
        sim_wall_s=0.5,
    )
    for key in ("ttft_mean_s", "ttft_p99_s", "tpot_mean_s", "throughput_rps"):
        row[f"{key}_ci95_run"] = 0.04 * row[key]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(ROOT / "configs/sweeps/capacity.yaml"))
    parser.add_argument("--out", required=True, help="a new folder for the dataset")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    plan = SweepSpec.load(args.spec).expand(args.spec)
    dataset = Dataset(args.out)
    schema = runs_schema(plan.axis_types)
    name = plan.spec.name
    counts: dict[str, int] = {}
    with dataset.lock():
        dataset.prepare(name, plan.spec.to_yaml(), schema, __version__)
        if dataset.existing():
            print(f"{args.out} already holds runs: give a new --out", file=sys.stderr)
            return 2
        writer = dataset.writer(schema, part_rows=1000)
        for run in plan.runs():
            cfg = run.config
            reason = config_refusal(cfg)
            blocks = 0
            if reason is None:
                blocks, reason = kv_capacity_blocks(cfg)
            if reason is None:
                reason = memory_refusal(cfg, blocks)
            head = row_head(run, name, __version__)
            if reason is not None:
                row = {**head, **dict.fromkeys(SUMMARY_FIELDS), "status": "infeasible", "error": reason}
            else:
                rng = np.random.default_rng(int(run.run_id, 16))  # per run, so reruns agree
                row = {**head, **metrics(cfg, blocks, rng), "status": "ok", "error": None}
            counts[row["status"]] = counts.get(row["status"], 0) + 1
            writer.add(row)
        writer.flush()
    took = time.perf_counter() - started
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    print(f"{args.out}: {len(plan)} runs ({summary}) of {name}, synthetic metrics; {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
