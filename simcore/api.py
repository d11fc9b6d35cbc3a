"""``simulate(cfg) -> RunResult``: the one entry point of a simulation.

Pure: the result depends only on ``cfg`` (wall time and event counts aside). Raises only on
bugs; a server vLLM would refuse to start (or whose model does not fit the GPU) is a result with
status ``infeasible``, and a run that measured no request one with status ``no_data``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from simcore.cluster import Cluster
from simcore.config import SimConfig
from simcore.costmodel import cpu_tier_blocks, kv_capacity_blocks, shared_pool_blocks
from simcore.feasibility import config_refusal, memory_refusal
from simcore.gctune import tuned_gc
from simcore.metrics import empty_summary, merge_counters, no_data_reason, summarize
from simcore.steady import STEADY_STOPS, Setting
from simcore.workload import Workload

STATUSES = ("ok", "no_data", "infeasible")  # what simulate() returns; a sweep adds "failed"


@dataclass
class RunResult:
    """``summary`` has every key of ``metrics.SUMMARY_FIELDS``; ``requests`` one dict per request
    (keys of ``metrics.REQUEST_FIELDS``) when ``cfg.run.record_requests``. ``error`` holds the
    reason of an ``infeasible`` or ``no_data`` run."""

    status: str  # one of STATUSES
    summary: dict[str, Any]
    error: str | None = None
    requests: list[dict[str, Any]] | None = field(default=None, repr=False)


def run_cluster(cfg: SimConfig, num_blocks: int, wall_limit_s: float | None = None) -> Cluster:
    """The simulation itself, as :func:`simulate` runs it: the cluster (one replica: a single
    engine) of ``num_blocks`` KV blocks per replica under the workload, run to its end."""
    cluster = Cluster(cfg, num_blocks, wall_limit_s)
    # one replica: the router steps aside and the workload talks to the engine itself
    Workload(cfg).start(cluster if len(cluster.engines) > 1 else cluster.engines[0])
    cluster.run()
    return cluster


def simulate(cfg: SimConfig, wall_limit_s: float | None = None) -> RunResult:
    """Run one simulation. ``wall_limit_s`` bounds its wall-clock time: past it the run raises
    :class:`simcore.engine.SimulationTimeout` (checked every few hundred engine iterations)."""
    t0 = time.perf_counter()
    reason = config_refusal(cfg)
    if reason is None:
        num_blocks, reason = kv_capacity_blocks(cfg)
    if reason is None:
        reason = memory_refusal(cfg, num_blocks)
    if reason is not None:
        return RunResult("infeasible", empty_summary(), error=reason)
    with tuned_gc():
        cluster = run_cluster(cfg, num_blocks, wall_limit_s)
    parts = [e.counters for e in cluster.engines]
    counters = merge_counters(parts)
    counters.events += cluster.events
    summary = summarize(
        cluster.records,
        counters,
        Setting.of(cfg),
        stop_s=cluster.stop_s,
        stop_reason=cluster.stop_reason or "workload ended",
        cache_full_s=cluster.cache_full_s(),
        capacity_blocks=num_blocks - 1,
        block_size=cfg.engine.block_size,
        wall_s=time.perf_counter() - t0,
        # a run the steady check stopped reports what the check saw (see steady.py)
        known_at=cluster.stop_s if cluster.stop_reason in STEADY_STOPS else math.inf,
        cpu_capacity_blocks=cpu_tier_blocks(cfg) if cfg.engine.prefix_caching != "off" else 0,
        shared_capacity_blocks=shared_pool_blocks(cfg),
        replica_counters=parts,
        sim_mode=cluster.cfg.run.mode,
    )
    warmup_end = summary["warmup_end_s"]
    for rec in cluster.records:
        rec.warmup = rec.arrival_s < warmup_end
    rows = [r.as_row() for r in cluster.records] if cfg.run.record_requests else None
    if not summary["num_measured"]:
        reason = no_data_reason(cluster.records, summary, cluster.stop_s)
        return RunResult("no_data", summary, error=reason, requests=rows)
    return RunResult("ok", summary, requests=rows)
