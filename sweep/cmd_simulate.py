"""``kvsweep simulate RUN.yaml [--set path=value ...] [--json out.json]``: one simulation."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
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


def load_config(path: str, overrides: list[str]) -> SimConfig:
    """Read, override and validate a run config; bad input raises :class:`ConfigError`."""
    raw = read_yaml(Path(path), "run config")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected PATH=VALUE, e.g. engine.prefix_caching=off")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        set_path(raw, key.strip(), value, f"--set {key.strip()}")
    try:
        return SimConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=path)) from None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


_SECTIONS: list[tuple[str, list[tuple[str, str, float]]]] = [
    ("requests", [("submitted", "num_requests", 1), ("completed", "num_completed", 1),
                  ("failed", "num_failed", 1), ("measured (after warm-up)", "num_measured", 1),
                  ("simulated time (s)", "sim_duration_s", 1)]),
    ("steady state", [("arrivals stopped by", "stop_reason", 1), ("warm-up rule", "warmup_rule", 1),
                      ("warm-up ends (s)", "warmup_end_s", 1), ("measured window (s)", "measured_s", 1),
                      ("steady", "steady", 1), ("capacity (requests/s)", "capacity_rps", 1)]),
    ("throughput", [("requests/s", "throughput_rps", 1),
                    ("  95% CI in the run (+-)", "throughput_rps_ci95_run", 1),
                    ("output tokens/s", "output_tokens_per_s", 1)]),
    ("latency (ms)", [
        (f"{name} {stat}", f"{key}_{stat}_s", 1e3)
        for name, key in [("TTFT", "ttft"), ("TPOT", "tpot"), ("end-to-end", "e2e"), ("queueing", "queue")]
        for stat in ("mean", "p50", "p90", "p99")
    ] + [(f"{name} 95% CI in the run (+-)", f"{key}_ci95_run", 1e3) for name, key in [
        ("TTFT mean", "ttft_mean_s"), ("TTFT p99", "ttft_p99_s"), ("TPOT mean", "tpot_mean_s")]]),
    ("SLO", [("attainment", "slo_attainment", 1), ("goodput (requests/s)", "goodput_rps", 1)]),
    ("prefix cache", [("hit rate (tokens)", "prefix_hit_rate", 1),
                      ("requests with a hit", "hit_request_share", 1),
                      ("prefill tokens total", "prefill_tokens_total", 1),
                      ("prefill tokens computed", "prefill_tokens_computed", 1),
                      ("prefill reduction", "prefill_reduction", 1),
                      ("recomputed (preemption)", "recomputed_tokens", 1),
                      ("evictions (blocks)", "evictions", 1)]),
    ("engine", [("KV capacity (tokens)", "kv_capacity_tokens", 1), ("KV peak use", "kv_peak_util", 1),
                ("KV mean use", "kv_mean_util", 1), ("preemptions", "preemptions", 1),
                ("mean batch size", "mean_batch_size", 1), ("busy fraction", "engine_busy_fraction", 1),
                ("engine steps", "num_steps", 1)]),
    ("simulator", [("wall time (s)", "sim_wall_s", 1), ("events", "sim_events", 1)]),
]


def render(cfg: SimConfig, result: RunResult) -> str:
    e = cfg.engine
    head = (f"{cfg.model.name} on {cfg.gpu.name} x{e.tensor_parallel}, {cfg.workload.kind} workload, "
            f"prefix caching {e.prefix_caching}, seed {cfg.run.seed}, mode {cfg.run.mode}")
    if result.status == "infeasible":
        return f"{head}\nstatus: {result.status}: {result.error}"
    lines = [head] + ([f"status: {result.status}: {result.error}"] if result.status != "ok" else [])
    s = result.summary
    for title, rows in _SECTIONS:
        if title == "SLO" and cfg.run.slo is None:
            continue
        lines.append(f"\n{title}")
        for label, key, scale in rows:
            v = s[key]
            lines.append(f"  {label:<32} {_fmt(v * scale if v is not None and scale != 1 else v):>14}")
            if key == "steady" and s["steady_reason"]:
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
