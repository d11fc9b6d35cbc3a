"""How the report writes numbers and names: compact figures with units, and plain words for
columns (``GPU memory (GiB)``, never ``gpu.memory_gib``)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Plain names of the columns a reader meets in the report.
LABELS: dict[str, str] = {
    "model.name": "model",
    "gpu.name": "GPU",
    "gpu.memory_gib": "GPU memory (GiB)",
    "engine.kv_budget_gib": "KV cache budget (GiB)",
    "engine.gpu_memory_utilization": "GPU memory utilisation",
    "engine.tensor_parallel": "tensor parallel (GPUs)",
    "engine.prefix_caching": "caching",
    "engine.max_num_seqs": "max sequences per batch",
    "engine.max_num_batched_tokens": "max batched tokens",
    "engine.block_size": "block size (tokens)",
    "engine.activation_reserve_gib": "activation reserve (GiB)",
    "engine.cpu_offload_gib": "CPU tier (GiB)",
    "cluster.shared_pool_gib": "shared pool (GiB)",
    "cluster.shared_pool_policy": "shared pool writes",
    "cluster.network_bandwidth": "network (bytes/s)",
    "cluster.replicas": "replicas",
    "cluster.router": "router",
    "cluster.load_metric": "router load metric",
    "cluster.snapshot_interval_s": "router cache snapshot (s)",
    "cluster.prefix_weight": "router prefix weight",
    "cluster.load_weight": "router load weight",
    "cluster.cpu_hit_weight": "router weight of CPU hits",
    "workload.kind": "workload",
    "workload.users": "concurrent users",
    "workload.session_rate": "new sessions per second",
    "workload.request_rate": "requests per second",
    "workload.system_prompts": "system prompts",
    "workload.system_prompt_tokens": "system prompt tokens",
    "workload.turns": "turns per session",
    "workload.user_tokens": "user message tokens",
    "workload.output_tokens": "output tokens",
    "workload.think_time_s": "think time (s)",
    "run.num_requests": "requests per run",
    "run.duration_s": "run length (s)",
    "run.warmup_s": "warm-up (s)",
    "seed": "seed",
}
_UNITS = {"_gib": " (GiB)", "_s": " (s)"}


def label(col: str | None) -> str:
    """The plain name of a column: from :data:`LABELS`, else its last part in words with its unit
    (``engine.cost.step_overhead_s`` -> ``step overhead (s)``)."""
    if not col:
        return ""
    if col in LABELS:
        return LABELS[col]
    leaf = col.rsplit(".", 1)[-1]
    for suffix, unit in _UNITS.items():
        if leaf.endswith(suffix):
            return leaf.removesuffix(suffix).replace("_", " ") + unit
    return leaf.replace("_", " ")


def num(value: Any) -> str:
    """A compact number: 64, 0.5, 1.25, 12.3k."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
        number = int(value)
        return f"{number:,}" if abs(number) < 10_000 else tokens(number)
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return str(value)


def tokens(value: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def seconds(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    if value < 0.01:
        return f"{value * 1000:.2g} ms"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:,.3g} s"


def pct(value: float | None, signed: bool = True) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value * 100:+.0f}%" if signed else f"{value * 100:.0f}%"


def gain(value: float | None) -> str:
    """A relative change; one decimal below 10% so that 4.6% does not read as the 5% threshold."""
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value * 100:+.1f}%" if abs(value) < 0.1 else f"{value * 100:+.0f}%"


def times(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.2f}x"


#: Units of axes whose values read best with them (``40 GiB``); users keep their plain label.
UNITS: dict[str, str] = {
    "gpu.memory_gib": " GiB",
    "engine.kv_budget_gib": " GiB",
    "workload.request_rate": " requests/s",
    "workload.session_rate": " sessions/s",
}


def with_unit(col: str, value: Any) -> str:
    """``48 users``, ``40 GiB``, ``2.5 requests/s``: a value of an axis with its unit."""
    return num(value) + {**UNITS, "workload.users": " users"}.get(col, "")


def setting(col: str, value: Any) -> str:
    """``GPU memory 80 GiB``, ``system prompts 16``: an axis held at a value, in words."""
    if col in UNITS:
        return f"{label(col).split(' (')[0]} {num(value)}{UNITS[col]}"
    return f"{label(col)} {num(value)}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "all"


def sort_values(values: Sequence[Any], key: dict[Any, float] | None = None) -> list[Any]:
    """Axis values in display order: numbers ascending; strings by ``key`` (e.g. KV tokens) then name."""
    vals = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in vals):
        return sorted(vals, key=lambda v: (math.isnan(v), v) if isinstance(v, float) else (False, v))
    k = key or {}
    return sorted(vals, key=lambda v: (k.get(v, math.inf), natural(str(v))))


def natural(text: str) -> list[tuple[int, Any]]:
    """Sort key that puts "8B" before "70B": digit runs compare as numbers."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p]


def listing(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""
