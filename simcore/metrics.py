"""The only place metrics are computed: per-request records + engine counters -> one summary row.

Units: seconds and tokens. Latency figures exclude warm-up requests (arrival < ``warmup_s``) and
failed requests. TTFT counts from arrival (queueing included). Hit rate = tokens hit / tokens
queried, both recorded once, at a request's first admission (re-admissions after preemption are
not counted again, as in vLLM).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

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
    "throughput_rps": "float",
    "output_tokens_per_s": "float",
    **{f"{lat}_{stat}_s": "float" for lat in _LATENCIES for stat in _STATS},
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


def _stats(prefix: str, values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {f"{prefix}_{s}_s": None for s in _STATS}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        f"{prefix}_mean_s": float(values.mean()),
        f"{prefix}_p50_s": float(p50),
        f"{prefix}_p90_s": float(p90),
        f"{prefix}_p99_s": float(p99),
    }


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def summarize(
    records: list[RequestRecord],
    counters: Counters,
    *,
    capacity_blocks: int,
    block_size: int,
    warmup_s: float,
    wall_s: float,
) -> dict[str, Any]:
    """One flat row with every key of :data:`SUMMARY_FIELDS`."""
    done = [r for r in records if r.status == "completed"]
    measured = [r for r in done if not r.warmup]
    end = max((r.finish_s for r in records if r.finish_s >= 0), default=0.0)
    arrival = np.array([r.arrival_s for r in measured])
    first = np.array([r.first_token_s for r in measured])
    finish = np.array([r.finish_s for r in measured])
    out_tok = np.array([r.output_tokens for r in measured], dtype=np.int64)
    decode_n = np.maximum(out_tok - 1, 0)
    has_decode = decode_n > 0
    tpot = (finish[has_decode] - first[has_decode]) / decode_n[has_decode]
    window = end - warmup_s
    in_window = [r for r in done if r.finish_s >= warmup_s]
    prompt_total = sum(r.prompt_tokens for r in measured)
    computed = sum(r.prefill_computed_tokens for r in measured)
    hits = sum(r.cached_tokens for r in measured)
    row: dict[str, Any] = {
        "num_requests": len(records),
        "num_completed": len(done),
        "num_failed": sum(1 for r in records if r.status == "failed"),
        "num_measured": len(measured),
        "sim_duration_s": end,
        "throughput_rps": _ratio(len(in_window), window),
        "output_tokens_per_s": _ratio(sum(r.output_tokens for r in in_window), window),
        **_stats("ttft", first - arrival),
        **_stats("tpot", tpot),
        **_stats("e2e", finish - arrival),
        **_stats("queue", np.array([r.admitted_s - r.arrival_s for r in measured])),
        "prefix_hit_rate": _ratio(hits, prompt_total),
        "hit_request_share": _ratio(sum(1 for r in measured if r.cached_tokens > 0), len(measured)),
        "prefill_tokens_total": prompt_total,
        "prefill_tokens_computed": computed,
        "prefill_reduction": _ratio(hits, prompt_total),
        "recomputed_tokens": sum(r.recomputed_tokens for r in measured),
        "preemptions": counters.preemptions,
        "evictions": counters.evictions,
        "kv_capacity_blocks": capacity_blocks,
        "kv_capacity_tokens": capacity_blocks * block_size,
        "kv_peak_blocks": counters.peak_used_blocks,
        "kv_peak_util": _ratio(counters.peak_used_blocks, capacity_blocks),
        "kv_mean_util": _ratio(counters.used_block_s / capacity_blocks, end) if capacity_blocks else None,
        "mean_batch_size": _ratio(counters.batch_seq_s, counters.busy_s),
        "engine_busy_fraction": _ratio(counters.busy_s, end),
        "num_steps": counters.steps,
        "sim_events": counters.events,
        "sim_wall_s": wall_s,
    }
    assert list(row) == list(SUMMARY_FIELDS)
    return row


def empty_summary() -> dict[str, Any]:
    """A row of typed nulls, for runs that are infeasible or failed."""
    return dict.fromkeys(SUMMARY_FIELDS)
