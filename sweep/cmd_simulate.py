"""``kvsweep simulate RUN.yaml [--set path=value ...] [--json out.json]``: one simulation."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from simcore.api import RunResult, simulate
from simcore.config import SimConfig
from simcore.errors import ConfigError, format_validation_error
from sweep.spec import read_yaml, set_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config YAML (see configs/runs/)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
        help="override a field, e.g. --set engine.prefix_caching=off (value parsed as YAML)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    parser.add_argument("--requests", metavar="FILE.csv", help="write one row per request as CSV")


_EXPONENT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def parse_value(text: str) -> Any:
    """A ``--set`` value, read as YAML with two exceptions that match what a person typing it means:
    ``1e4`` is the number 10000 (YAML 1.1 wants ``1.0e4``; an integral one is an int, so that it fits
    integer fields), and ``on``/``off``/``yes``/``no`` stay words (YAML 1.1 makes them booleans; boolean
    fields still take the words, and ``engine.prefix_caching=off`` means ``off``)."""
    stripped = text.strip()
    if _EXPONENT_RE.match(stripped):
        number = float(stripped)
        return int(number) if number.is_integer() and abs(number) < 2**63 else number
    value = yaml.safe_load(text)
    if isinstance(value, bool) and stripped.lower() not in ("true", "false"):
        return stripped
    return value


def load_config(path: str, overrides: list[str]) -> SimConfig:
    """Read, override and validate a run config; bad input raises :class:`ConfigError`."""
    raw = read_yaml(Path(path), "run config")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected PATH=VALUE, e.g. engine.prefix_caching=off")
        try:
            value = parse_value(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        set_path(raw, key.strip(), value, f"--set {key.strip()}")
    try:
        return SimConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=path, model=SimConfig)) from None


# How each kind of figure is printed, so that a column of them reads alike: counts with thousands
# separators, latencies in ms and other figures with fixed decimals, shares as percentages.
_FORMATS: dict[str, Any] = {
    "count": lambda v: f"{int(v):,}",
    "ms": lambda v: f"{v * 1e3:,.1f}",
    "s": lambda v: f"{v:,.1f}",
    "wall": lambda v: f"{v:,.3f}",
    "rate": lambda v: f"{v:,.2f}",
    "share": lambda v: f"{v * 100:.1f}%",
    "number": lambda v: f"{v:,.2f}",
    "text": str,
}


def format_value(value: Any, kind: str) -> str:
    """One figure of the summary as :data:`_FORMATS` prints its kind; ``-`` when there is none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-" if value is None or math.isnan(value) else str(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(_FORMATS[kind](value))


_LATENCY_ROWS = [
    (f"{name} {stat}", f"{key}_{stat}_s", "ms")
    for name, key in [("TTFT", "ttft"), ("TPOT", "tpot"), ("end-to-end", "e2e"), ("queueing", "queue")]
    for stat in ("mean", "p50", "p90", "p99")
]
# (section, [(label, summary key, kind)]); a figure with a within-run 95% CI (``<key>_ci95_run``)
# prints it after the value as ``+- half-width``.
_SECTIONS: list[tuple[str, list[tuple[str, str, str]]]] = [
    ("requests", [("submitted", "num_requests", "count"), ("completed", "num_completed", "count"),
                  ("failed", "num_failed", "count"), ("measured (after warm-up)", "num_measured", "count"),
                  ("simulated time (s)", "sim_duration_s", "s")]),
    ("steady state", [("arrivals stopped by", "stop_reason", "text"), ("warm-up rule", "warmup_rule", "text"),
                      ("warm-up ends (s)", "warmup_end_s", "s"), ("measured window (s)", "measured_s", "s"),
                      ("steady", "steady", "text"), ("capacity (requests/s)", "capacity_rps", "rate")]),
    ("throughput", [("requests/s", "throughput_rps", "rate"),
                    ("output tokens/s", "output_tokens_per_s", "rate")]),
    ("latency (ms)", _LATENCY_ROWS),
    ("SLO", [("attainment", "slo_attainment", "share"), ("goodput (requests/s)", "goodput_rps", "rate")]),
    ("prefix cache", [("hit rate (tokens)", "prefix_hit_rate", "share"),
                      ("requests with a hit", "hit_request_share", "share"),
                      ("prefill tokens total", "prefill_tokens_total", "count"),
                      ("prefill tokens computed", "prefill_tokens_computed", "count"),
                      ("prefill reduction", "prefill_reduction", "share"),
                      ("recomputed (preemption)", "recomputed_tokens", "count"),
                      ("evictions (blocks)", "evictions", "count")]),
    ("CPU tier", [("from GPU memory (tokens)", "hit_rate_gpu", "share"),
                  ("from the CPU tier (tokens)", "hit_rate_cpu", "share"),
                  ("CPU tier (blocks)", "cpu_capacity_blocks", "count"),
                  ("blocks copied back", "cpu_loaded_blocks", "count")]),
    ("shared pool", [("from the shared pool (tokens)", "hit_rate_shared", "share"),
                     ("shared pool (blocks)", "shared_capacity_blocks", "count"),
                     ("blocks copied over the network", "shared_loaded_blocks", "count")]),
    ("cluster", [("replicas", "replicas", "count"), ("requests max/mean", "request_imbalance", "number"),
                 ("busy time max/mean", "busy_imbalance", "number"),
                 ("hit rate, lowest replica", "replica_hit_rate_min", "share"),
                 ("hit rate, highest replica", "replica_hit_rate_max", "share")]),
    ("engine", [("KV capacity (tokens)", "kv_capacity_tokens", "count"),
                ("KV peak use", "kv_peak_util", "share"),
                ("KV mean use", "kv_mean_util", "share"), ("preemptions", "preemptions", "count"),
                ("mean batch size", "mean_batch_size", "number"),
                ("busy fraction", "engine_busy_fraction", "share"), ("engine steps", "num_steps", "count")]),
    ("simulator", [("wall time (s)", "sim_wall_s", "wall"), ("events", "sim_events", "count")]),
]


def _ci(summary: dict[str, Any], key: str, kind: str) -> str:
    """`` +- 1.2`` when the run measured a 95% CI for this figure (``<key>_ci95_run``), else ``""``."""
    half = summary.get(f"{key}_ci95_run")
    return f" +- {format_value(half, kind)}" if half is not None else ""


def render(cfg: SimConfig, result: RunResult) -> str:
    e = cfg.engine
    mode = result.summary.get("sim_mode") or cfg.run.mode  # (the mode that ran)
    head = (f"{cfg.model.name} on {cfg.gpu.name} x{e.tensor_parallel}, {cfg.workload.kind} workload, "
            f"prefix caching {e.prefix_caching}, seed {cfg.run.seed}, mode {mode}, "
            f"cost profile {e.cost.profile}")
    if cfg.cluster.replicas > 1:
        head += f", {cfg.cluster.replicas} replicas behind {cfg.cluster.router}"
    if result.summary.get("shared_capacity_blocks"):
        head += f", shared pool {cfg.cluster.shared_pool_gib:g} GiB ({cfg.cluster.shared_pool_policy})"
    if result.status == "infeasible":
        return f"{head}\nstatus: {result.status}: {result.error}"
    lines = [head] + ([f"status: {result.status}: {result.error}"] if result.status != "ok" else [])
    s = result.summary
    for title, rows in _SECTIONS:
        skip = {"SLO": cfg.run.slo is None, "CPU tier": not s.get("cpu_capacity_blocks"),
                "shared pool": not s.get("shared_capacity_blocks"), "cluster": cfg.cluster.replicas == 1}
        if skip.get(title):
            continue
        lines.append(f"\n{title}")
        for label, key, kind in rows:
            lines.append(f"  {label:<28} {format_value(s.get(key), kind):>14}{_ci(s, key, kind)}")
            if key == "steady" and s.get("steady_reason"):
                lines.append(f"    ({s['steady_reason']})")
    return "\n".join(lines)


def _write_atomic(path: str, write: Any) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            write(fh)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write: {exc.strerror}") from None


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.requests:
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"record_requests": True})})
    result = simulate(cfg)
    print(render(cfg, result))
    if args.json:
        doc = {"status": result.status, "error": result.error, "summary": result.summary,
               "config": cfg.model_dump(mode="json")}
        _write_atomic(args.json, lambda fh: json.dump(doc, fh, indent=2))
        print(f"\nwrote {args.json}", file=sys.stderr)
    if args.requests and result.requests is not None:
        rows = result.requests

        def write_csv(fh: Any) -> None:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else [])
            w.writeheader()
            w.writerows(rows)

        _write_atomic(args.requests, write_csv)
        print(f"wrote {args.requests} ({len(rows)} requests)", file=sys.stderr)
    return 0 if result.status == "ok" else 1
