"""The only place metrics are computed: per-request records + engine counters -> one summary row.

Units: seconds and tokens. TTFT counts from arrival (queueing included); TPOT is (finish - first
token) / (output tokens - 1); queueing is arrival to first admission. Hit rate = tokens hit /
tokens queried, both recorded once, at a request's first admission (re-admissions after
preemption are not counted again, as in vLLM); ``prefill_reduction`` = prompt tokens served from
cache / prompt tokens, the same figure by that definition; tokens computed again after a
preemption are ``recomputed_tokens``, never prefill. ``hit_rate_gpu``, ``hit_rate_cpu`` and
``hit_rate_shared`` split the hit rate by the tier that held the tokens (GPU memory, the CPU tier
of ``engine.cpu_offload_gib``, or the cluster's shared pool of ``cluster.shared_pool_gib``).

Clusters (``replicas`` > 1): request figures are cluster-wide. Engine figures combine the
replicas (:func:`merge_counters`): steps, preemptions and evictions are summed; KV capacity is
one replica's (all replicas are alike), the KV peak the largest replica's, mean KV use and busy
fraction the mean over replicas, mean batch size weighted by busy time. Load imbalance is max
over mean across replicas of requests served (``request_imbalance``, all requests) and of busy
time (``busy_imbalance``); ``replica_hit_rates`` lists each replica's hit rate over the measured
requests (a JSON list, by replica), with its min and max. With one replica all of these reduce
to the single engine's.

Which requests count: a run's warm-up, its measured window, the ``steady`` verdict and the
within-run confidence intervals (``*_ci95_run``) are defined in ``steady.py``. In short, the
window runs from the end of the warm-up (``warmup_end_s``, by ``warmup_rule``) to when arrivals
stopped (``stop_reason``), ``measured_s`` long.

- Whole run: num_requests, num_completed, num_failed, sim_duration_s, stop_reason, preemptions,
  evictions, kv_capacity_*, kv_peak_*, kv_mean_util, mean_batch_size, engine_busy_fraction,
  num_steps, sim_events, sim_wall_s, sim_mode (the scheduler mode that ran: ``run.mode``).
- Measured window (requests that arrived in it): num_measured, latency statistics and their
  CIs, prefix_hit_rate, hit_request_share, prefill_tokens_*, prefill_reduction,
  recomputed_tokens, slo_attainment; (completions inside it, per second of it): throughput_rps,
  output_tokens_per_s, goodput_rps, capacity_rps.
"""

from __future__ import annotations

import json
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
    "replica": "int",
    "cpu_cached_tokens": "int",
    "shared_cached_tokens": "int",
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
    "sim_mode": "str",
    "hit_rate_gpu": "float",
    "hit_rate_cpu": "float",
    "cpu_capacity_blocks": "int",
    "cpu_loaded_blocks": "int",
    "hit_rate_shared": "float",
    "shared_capacity_blocks": "int",
    "shared_loaded_blocks": "int",
    "replicas": "int",
    "request_imbalance": "float",
    "busy_imbalance": "float",
    "replica_hit_rate_min": "float",
    "replica_hit_rate_max": "float",
    "replica_hit_rates": "str",
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
    cpu_loaded_blocks: int = 0  # blocks copied back from the CPU tier
    shared_loaded_blocks: int = 0  # blocks copied from the cluster's shared pool


def merge_counters(parts: Sequence[Counters]) -> Counters:
    """The counters of several replicas as one: sums, except the peak (the largest replica's)."""
    out = Counters()
    for c in parts:
        out.steps += c.steps
        out.busy_s += c.busy_s
        out.batch_seq_s += c.batch_seq_s
        out.used_block_s += c.used_block_s
        out.peak_used_blocks = max(out.peak_used_blocks, c.peak_used_blocks)
        out.preemptions += c.preemptions
        out.evictions += c.evictions
        out.events += c.events
        out.cpu_loaded_blocks += c.cpu_loaded_blocks
        out.shared_loaded_blocks += c.shared_loaded_blocks
    return out


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
    replica: int = 0  # which replica served it
    cpu_cached_tokens: int = 0  # of cached_tokens, those found in the CPU tier
    shared_cached_tokens: int = 0  # of cached_tokens, those found in the cluster's shared pool

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
    cpu_capacity_blocks: int = 0,
    shared_capacity_blocks: int = 0,
    replica_counters: Sequence[Counters] | None = None,
    sim_mode: str = "fast",
) -> dict[str, Any]:
    """One flat row with every key of :data:`SUMMARY_FIELDS` (see the module docstring).
    ``stop_s``: when arrivals stopped; ``cache_full_s``: when the KV cache first filled;
    ``known_at``: measure only what was known then (``steady.py``: a run the steady check
    stopped reports what the check saw). ``counters``: the engine's, or the replicas' merged
    (:func:`merge_counters`), in which case ``replica_counters`` gives them one by one;
    ``capacity_blocks`` and ``cpu_capacity_blocks`` are one replica's, ``shared_capacity_blocks``
    the whole cluster's."""
    parts = list(replica_counters) if replica_counters is not None else [counters]
    n = len(parts)
    s = series(columns(records), known_at)
    w = window(s, stop_s, setting.warmup_s, cache_full_s)
    m = w.measured
    end = max((r.finish_s for r in records if r.finish_s >= 0), default=0.0)
    prompt_total = int(s.prompt[m].sum())
    hits = int(s.cached[m].sum())
    measured = [r for r, keep in zip(records, m.tolist(), strict=True) if keep]
    cpu_hits = sum(r.cpu_cached_tokens for r in measured) if cpu_capacity_blocks else 0
    shared_hits = sum(r.shared_cached_tokens for r in measured) if shared_capacity_blocks else 0
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
        "kv_mean_util": ratio(counters.used_block_s / capacity_blocks / n, end) if capacity_blocks else None,
        "mean_batch_size": ratio(counters.batch_seq_s, counters.busy_s),
        "engine_busy_fraction": ratio(counters.busy_s / n, end),
        "num_steps": counters.steps,
        "sim_events": counters.events,
        "sim_wall_s": wall_s,
        "sim_mode": sim_mode,
        "hit_rate_gpu": ratio(hits - cpu_hits - shared_hits, prompt_total),
        "hit_rate_cpu": ratio(cpu_hits, prompt_total),
        "cpu_capacity_blocks": cpu_capacity_blocks,
        "cpu_loaded_blocks": counters.cpu_loaded_blocks,
        "hit_rate_shared": ratio(shared_hits, prompt_total),
        "shared_capacity_blocks": shared_capacity_blocks,
        "shared_loaded_blocks": counters.shared_loaded_blocks,
        **_replica_fields(records, measured, parts, prompt_total, hits),
    }
    row = {key: row[key] for key in SUMMARY_FIELDS}
    if not row["num_measured"]:
        row["steady"], row["steady_reason"] = False, "no measured requests"
    return row


def _replica_fields(
    records: Sequence[RequestRecord], measured: Sequence[RequestRecord], parts: Sequence[Counters],
    prompt_total: int, hits: int,
) -> dict[str, Any]:
    """Load imbalance and hit rate per replica (see the module notes)."""
    n = len(parts)
    if n == 1:  # one engine: everything on replica 0 (no loop over the records)
        served, prompt, hit = [len(records)], [prompt_total], [hits]
    else:
        served = [0] * n
        for r in records:
            served[r.replica] += 1
        prompt = [0] * n
        hit = [0] * n
        for r in measured:
            prompt[r.replica] += r.prompt_tokens
            hit[r.replica] += r.cached_tokens
    rates = [h / p if p else None for h, p in zip(hit, prompt, strict=True)]
    known = [x for x in rates if x is not None]
    busy = [c.busy_s for c in parts]
    return {
        "replicas": n,
        "request_imbalance": ratio(max(served) * n, sum(served)),
        "busy_imbalance": ratio(max(busy) * n, sum(busy)),
        "replica_hit_rate_min": min(known) if known else None,
        "replica_hit_rate_max": max(known) if known else None,
        "replica_hit_rates": json.dumps([None if x is None else round(x, 6) for x in rates]),
    }


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
