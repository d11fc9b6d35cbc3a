"""The only place metrics are computed: per-request records + engine counters -> one summary row.

Units: seconds and tokens. Latency figures exclude warm-up requests (arrival < ``warmup_s``) and
failed requests. TTFT counts from arrival (queueing included). Hit rate = tokens hit / tokens
queried, both recorded once, at a request's first admission (re-admissions after preemption are
not counted again, as in vLLM); ``hit_rate_gpu`` and ``hit_rate_cpu`` split it by the tier that
held the tokens.

Clusters (``replicas`` > 1): request figures are cluster-wide. Engine figures combine the
replicas (:func:`merge_counters`): steps, preemptions and evictions are summed; KV capacity is
one replica's (all replicas are alike), the KV peak the largest replica's, mean KV use and busy
fraction the mean over replicas, mean batch size weighted by busy time. Load imbalance is max
over mean across replicas of requests served (``request_imbalance``) and of busy time
(``busy_imbalance``); ``replica_hit_rates`` lists each replica's hit rate (a JSON list, by
replica), with its min and max. With one replica all of these reduce to the single engine's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
    "preemptions": "int",
    "warmup": "bool",
    "status": "str",
    "error": "str",
    "replica": "int",
    "cpu_cached_tokens": "int",
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
    "hit_rate_gpu": "float",
    "hit_rate_cpu": "float",
    "cpu_capacity_blocks": "int",
    "cpu_loaded_blocks": "int",
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
    prefill_computed_tokens: int = 0
    preemptions: int = 0
    warmup: bool = False
    status: str = "pending"
    error: str = ""
    replica: int = 0  # which replica served it
    cpu_cached_tokens: int = 0  # of cached_tokens, those found in the CPU tier

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
    cpu_capacity_blocks: int = 0,
    replica_counters: Sequence[Counters] | None = None,
) -> dict[str, Any]:
    """One flat row with every key of :data:`SUMMARY_FIELDS`.

    ``counters``: the engine's, or the replicas' merged (:func:`merge_counters`), in which case
    ``replica_counters`` gives them one by one; ``capacity_blocks`` and ``cpu_capacity_blocks``
    are one replica's."""
    parts = list(replica_counters) if replica_counters is not None else [counters]
    n = len(parts)
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
    cpu_hits = sum(r.cpu_cached_tokens for r in measured)
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
        "prefill_reduction": _ratio(prompt_total - computed, prompt_total),
        "preemptions": counters.preemptions,
        "evictions": counters.evictions,
        "kv_capacity_blocks": capacity_blocks,
        "kv_capacity_tokens": capacity_blocks * block_size,
        "kv_peak_blocks": counters.peak_used_blocks,
        "kv_peak_util": _ratio(counters.peak_used_blocks, capacity_blocks),
        "kv_mean_util": _ratio(counters.used_block_s / capacity_blocks / n, end) if capacity_blocks else None,
        "mean_batch_size": _ratio(counters.batch_seq_s, counters.busy_s),
        "engine_busy_fraction": _ratio(counters.busy_s / n, end),
        "num_steps": counters.steps,
        "sim_events": counters.events,
        "sim_wall_s": wall_s,
        "hit_rate_gpu": _ratio(hits - cpu_hits, prompt_total),
        "hit_rate_cpu": _ratio(cpu_hits, prompt_total),
        "cpu_capacity_blocks": cpu_capacity_blocks,
        "cpu_loaded_blocks": counters.cpu_loaded_blocks,
        **_replica_fields(records, measured, parts),
    }
    assert list(row) == list(SUMMARY_FIELDS)
    return row


def _replica_fields(
    records: Sequence[RequestRecord], measured: Sequence[RequestRecord], parts: Sequence[Counters]
) -> dict[str, Any]:
    """Load imbalance and hit rate per replica (see the module notes)."""
    n = len(parts)
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
        "request_imbalance": _ratio(max(served) * n, sum(served)),
        "busy_imbalance": _ratio(max(busy) * n, sum(busy)),
        "replica_hit_rate_min": min(known) if known else None,
        "replica_hit_rate_max": max(known) if known else None,
        "replica_hit_rates": json.dumps([None if x is None else round(x, 6) for x in rates]),
    }


def empty_summary() -> dict[str, Any]:
    """A row of typed nulls, for runs that are infeasible or failed."""
    return dict.fromkeys(SUMMARY_FIELDS)
