"""The only place metrics are computed: per-request records + engine counters -> one summary row.

Units: seconds and tokens. TTFT counts from arrival (queueing included); TPOT is (finish - first
token) / (output tokens - 1); queueing is arrival to first admission. Hit rate = tokens hit /
tokens queried, both recorded once, at a request's first admission (re-admissions after
preemption are not counted again, as in vLLM); ``prefill_reduction`` = prompt tokens served from
cache / prompt tokens, the same figure by that definition; tokens computed again after a
preemption are ``recomputed_tokens``, never prefill.

Which requests count: a run's warm-up, its measured window, the ``steady`` verdict and the
within-run confidence intervals (``*_ci95_run``) are defined in ``steady.py``. In short, the
window runs from the end of the warm-up (``warmup_end_s``, by ``warmup_rule``) to when arrivals
stopped (``stop_reason``), ``measured_s`` long.

- Whole run: num_requests, num_completed, num_failed, sim_duration_s, stop_reason, preemptions,
  evictions, kv_capacity_*, kv_peak_*, kv_mean_util, mean_batch_size, engine_busy_fraction,
  num_steps, sim_events, sim_wall_s.
- Measured window (requests that arrived in it): num_measured, latency statistics and their
  CIs, prefix_hit_rate, hit_request_share, prefill_tokens_*, prefill_reduction,
  recomputed_tokens, slo_attainment; (completions inside it, per second of it): throughput_rps,
  output_tokens_per_s, goodput_rps, capacity_rps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from simcore.config import CI_METRICS
from simcore.steady import CI_SUFFIX, Setting, columns, ratio, series, window, window_figures

# name -> Parquet-friendly type ("int", "float", "str", "bool"); the order is the column order.
REQUEST_FIELDS: dict[str, str] = {
    "request_id": "int",
    "session_id": "int",
    "turn": "int",
    "profile": "int",
    "arrival_s": "float",
    "admitted_s": "float",
    "first_token_s": "float",
    "finish_s": "float",
    "prompt_tokens": "int",
    "cached_tokens": "int",
    "output_tokens": "int",
    "prefill_computed_tokens": "int",
    "recomputed_tokens": "int",
    "preemptions": "int",
    "warmup": "bool",
    "status": "str",
    "error": "str",
}

_LATENCIES = ("ttft", "tpot", "e2e", "queue")
_STATS = ("mean", "p50", "p90", "p99")

SUMMARY_FIELDS: dict[str, str] = {
    "num_requests": "int",
    "num_completed": "int",
    "num_failed": "int",
    "num_measured": "int",
    "sim_duration_s": "float",
    "stop_reason": "str",
    "warmup_rule": "str",
    "warmup_end_s": "float",
    "measured_s": "float",
    "steady": "bool",
    "steady_reason": "str",
    "capacity_rps": "float",
    "throughput_rps": "float",
    "output_tokens_per_s": "float",
    **{f"{lat}_{stat}_s": "float" for lat in _LATENCIES for stat in _STATS},
    **{f"{col}{CI_SUFFIX}": "float" for col in CI_METRICS.values()},
    "slo_attainment": "float",
    "goodput_rps": "float",
    "prefix_hit_rate": "float",
    "hit_request_share": "float",
    "prefill_tokens_total": "int",
    "prefill_tokens_computed": "int",
    "prefill_reduction": "float",
    "recomputed_tokens": "int",
    "preemptions": "int",
    "evictions": "int",
    "kv_capacity_blocks": "int",
    "kv_capacity_tokens": "int",
    "kv_peak_blocks": "int",
    "kv_peak_util": "float",
    "kv_mean_util": "float",
    "mean_batch_size": "float",
    "engine_busy_fraction": "float",
    "num_steps": "int",
    "sim_events": "int",
    "sim_wall_s": "float",
}

@dataclass(slots=True)
class Counters:
    """Engine-wide counters, updated on the hot path, aggregated once in :func:`summarize`."""

    steps: int = 0
    busy_s: float = 0.0
    batch_seq_s: float = 0.0  # integral of running sequences over busy time
    used_block_s: float = 0.0  # integral of blocks in use (ref count > 0) over busy time
    peak_used_blocks: int = 0
    preemptions: int = 0
    evictions: int = 0
    events: int = 0


@dataclass(slots=True)
class RequestRecord:
    """One request's life. Times are simulated seconds; -1 means "did not happen"."""

    request_id: int
    session_id: int
    turn: int
    profile: int
    arrival_s: float
    admitted_s: float = -1.0
    first_token_s: float = -1.0
    finish_s: float = -1.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    prefill_computed_tokens: int = 0  # prompt tokens computed at first admission (not cache hits)
    recomputed_tokens: int = 0  # tokens computed again after preemption
    preemptions: int = 0
    warmup: bool = False
    status: str = "pending"
    error: str = ""

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


assert [f.name for f in fields(RequestRecord)] == list(REQUEST_FIELDS), "keep REQUEST_FIELDS in step"



def summarize(
    records: list[RequestRecord],
    counters: Counters,
    setting: Setting,
    *,
    stop_s: float,
    stop_reason: str,
    cache_full_s: float | None,
    capacity_blocks: int,
    block_size: int,
    wall_s: float,
    known_at: float = math.inf,
) -> dict[str, Any]:
    """One flat row with every key of :data:`SUMMARY_FIELDS` (see the module docstring).
    ``stop_s``: when arrivals stopped; ``cache_full_s``: when the KV cache first filled;
    ``known_at``: measure only what was known then (``steady.py``: a run the steady check
    stopped reports what the check saw)."""
    s = series(columns(records), known_at)
    w = window(s, stop_s, setting.warmup_s, cache_full_s)
    m = w.measured
    end = max((r.finish_s for r in records if r.finish_s >= 0), default=0.0)
    prompt_total = int(s.prompt[m].sum())
    hits = int(s.cached[m].sum())
    row: dict[str, Any] = {
        "num_requests": len(records),
        "num_completed": sum(r.status == "completed" for r in records),
        "num_failed": int(s.failed.sum()),
        "num_measured": int(m.sum()),
        "sim_duration_s": end,
        "stop_reason": stop_reason,
        "warmup_rule": w.rule,
        "warmup_end_s": w.start,
        "measured_s": max(w.length, 0.0),
        **window_figures(s, w, setting, cache_full_s),
        "prefix_hit_rate": ratio(hits, prompt_total),
        "hit_request_share": ratio(int((s.cached[m] > 0).sum()), int(m.sum())),
        "prefill_tokens_total": prompt_total,
        "prefill_tokens_computed": prompt_total - hits,
        "prefill_reduction": ratio(hits, prompt_total),
        "recomputed_tokens": int(s.recomputed[m].sum()),
        "preemptions": counters.preemptions,
        "evictions": counters.evictions,
        "kv_capacity_blocks": capacity_blocks,
        "kv_capacity_tokens": capacity_blocks * block_size,
        "kv_peak_blocks": counters.peak_used_blocks,
        "kv_peak_util": ratio(counters.peak_used_blocks, capacity_blocks),
        "kv_mean_util": ratio(counters.used_block_s / capacity_blocks, end) if capacity_blocks else None,
        "mean_batch_size": ratio(counters.batch_seq_s, counters.busy_s),
        "engine_busy_fraction": ratio(counters.busy_s, end),
        "num_steps": counters.steps,
        "sim_events": counters.events,
        "sim_wall_s": wall_s,
    }
    row = {key: row[key] for key in SUMMARY_FIELDS}
    if not row["num_measured"]:
        row["steady"], row["steady_reason"] = False, "no measured requests"
    return row


def no_data_reason(records: Sequence[RequestRecord], summary: dict[str, Any], stop_s: float) -> str:
    """Why a run measured nothing (its ``error`` as status ``no_data``)."""
    if not records:
        return "no request was submitted: lengthen the run (run.duration_s or run.num_requests)"
    failed = [r for r in records if r.status == "failed"]
    if len(failed) == len(records):
        return f"no request completed: all {len(records)} failed (first: {failed[0].error})"
    return (f"no request arrived in the measured window: warm-up ends at {summary['warmup_end_s']:.4g} s"
            f" but arrivals stopped at {stop_s:.4g} s"
            " (lengthen the run or lower run.warmup_s)")


def empty_summary() -> dict[str, Any]:
    """A row of typed nulls, for runs that are infeasible or failed."""
    return dict.fromkeys(SUMMARY_FIELDS)
