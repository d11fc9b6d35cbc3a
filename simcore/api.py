"""``simulate(cfg) -> RunResult``: the one entry point of a simulation.

Pure: the result depends only on ``cfg`` (wall time and event counts aside). Raises only on
bugs; a configuration whose model does not fit the GPU is a result with status ``infeasible``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from simcore.config import SimConfig
from simcore.costmodel import kv_capacity_blocks
from simcore.engine import Engine
from simcore.feasibility import config_refusal, memory_refusal
from simcore.metrics import empty_summary, summarize
from simcore.workload import Workload


@dataclass
class RunResult:
    """``summary`` has every key of ``metrics.SUMMARY_FIELDS``; ``requests`` one dict per request
    (keys of ``metrics.REQUEST_FIELDS``) when ``cfg.run.record_requests``."""

    status: str  # "ok" | "infeasible"
    summary: dict[str, Any]
    error: str | None = None
    requests: list[dict[str, Any]] | None = field(default=None, repr=False)


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
    engine = Engine(cfg, num_blocks, wall_limit_s)
    Workload(cfg).start(engine)
    engine.run()
    summary = summarize(
        engine.records,
        engine.counters,
        capacity_blocks=num_blocks - 1,
        block_size=cfg.engine.block_size,
        warmup_s=cfg.run.warmup_s,
        wall_s=time.perf_counter() - t0,
    )
    rows = [r.as_row() for r in engine.records] if cfg.run.record_requests else None
    return RunResult("ok", summary, requests=rows)
