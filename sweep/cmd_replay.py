"""``kvsweep replay TRACE``: cache-only replay of a request trace, hit rate per cache capacity.

Example::

    kvsweep replay ../shared/data/traces/synthetic_trace.jsonl --capacity-tokens 1e5,1e6,1e7,inf
    kvsweep replay ../shared/data/traces/conversation_trace.jsonl --replicas 10 --capacity-tokens 3e6

Prints one row per capacity (tokens); ``--json FILE`` also writes the rows (an infinite capacity
is ``null``). With ``--replicas N`` (N > 1) each capacity is per replica: one row per router
(``--router``, default all) with the hit rate of N separate caches behind that router, beside the
hit rate of one global pool of N x the capacity. See :mod:`simcore.replay` for the semantics.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from simcore.errors import ConfigError
from simcore.replay import (
    ClusterReplayResult,
    ReplayResult,
    capacity_blocks,
    replay,
    replay_cluster,
    replay_hashes,
    request_block_hashes,
)
from simcore.router import ROUTERS, make_router
from simcore.traces import TraceRequest, detect_format, infer_conversations, load_trace

DEFAULT_CAPACITIES = "1e5,1e6,1e7,inf"


def parse_capacities(text: str) -> list[float]:
    """``"1e5,1e6,inf"`` -> ``[100000.0, 1000000.0, inf]``; raises :class:`ConfigError`."""
    out: list[float] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ConfigError(f"--capacity-tokens = {text!r}: empty item (give numbers separated by "
                              "commas, e.g. 1e5,1e6,inf)")
        try:
            value = float(item.replace("_", ""))
        except ValueError:
            raise ConfigError(f"--capacity-tokens item {item!r}: not a number (use e.g. 1e6 or inf)"
                              ) from None
        if math.isnan(value) or value <= 0:
            raise ConfigError(f"--capacity-tokens item {item!r}: must be a positive number of tokens or inf")
        out.append(value)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trace", help="trace file: Mooncake .jsonl (with hash_ids) or Azure .csv")
    parser.add_argument("--capacity-tokens", default=DEFAULT_CAPACITIES, metavar="LIST",
                        help=f"cache capacities in tokens, comma separated, inf allowed "
                             f"(default {DEFAULT_CAPACITIES})")
    parser.add_argument("--block-size", type=int, default=None, metavar="N",
                        help="engine block size in tokens (default: the trace's block size, 512 for "
                             "Mooncake; smaller blocks let partial trace blocks hit)")
    parser.add_argument("--trace-block-tokens", type=int, default=512, metavar="N",
                        help="tokens per Mooncake hash id (default 512)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="replay only the first N requests")
    parser.add_argument("--format", choices=("auto", "mooncake", "azure"), default="auto",
                        help="trace format (default: from the file name)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the results as JSON to FILE")
    cluster = parser.add_argument_group("clusters (--replicas N > 1: each capacity is per replica)")
    cluster.add_argument("--replicas", type=int, default=1, metavar="N",
                         help="replicas, each with its own cache, behind a router (default 1)")
    cluster.add_argument("--router", default="all", metavar="LIST",
                         help=f"routers, comma separated: {', '.join(ROUTERS)}, or all (default all)")
    cluster.add_argument("--load-metric", choices=("requests", "tokens"), default="requests",
                         help="a replica's load for least_loaded, session_affinity and prefix_aware: "
                              "requests or prompt tokens sent to it so far (default requests)")
    cluster.add_argument("--snapshot-interval-s", type=float, default=None, metavar="S",
                         help="prefix_aware sees each cache as of the last multiple of S seconds of "
                              "trace time (default: exact state)")
    cluster.add_argument("--seed", type=int, default=0, help="seed of the random router (default 0)")


def _fmt_cap(value: float) -> str:
    return "inf" if value == math.inf else f"{value:,.0f}"


def format_table(results: list[ReplayResult]) -> str:
    """A fixed-width table, one row per capacity."""
    header = ("capacity_tokens", "blocks", "hit_rate", "hit_tokens", "block_hit_rate", "evictions",
              "truncated")
    rows = [header]
    for r in results:
        rows.append((
            _fmt_cap(r.capacity_tokens), _fmt_cap(r.capacity_blocks), f"{r.hit_rate:.4f}",
            f"{r.hit_tokens:,}", f"{r.block_hit_rate:.4f}", f"{r.evictions:,}", f"{r.truncated_requests:,}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


_RUN_KEYS = {"model", "gpu", "engine", "workload", "run", "cluster"}
_SPEC_KEYS = {"base", "grid", "zip", "seeds", "search"}


def _yaml_keys(path: Path) -> set[str] | None:
    """The top-level keys when the file's start reads as a YAML mapping, else None."""
    try:
        with path.open("r", encoding="utf-8") as fh:
            head = yaml.safe_load(fh.read(65536))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return set(map(str, head)) if isinstance(head, dict) else None


def check_not_config(path: Path) -> None:
    """Refuse a kvsweep YAML (a run config or a sweep spec) given where a trace belongs, saying
    which command takes it, instead of failing on its first line as a malformed CSV."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".csv"):
        return
    keys = _yaml_keys(path)
    is_yaml = suffix in (".yaml", ".yml") or bool(keys and keys & (_RUN_KEYS | _SPEC_KEYS))
    if not is_yaml:
        return
    if keys and keys & _SPEC_KEYS:
        use = f"it looks like a sweep spec: run it with `kvsweep run {path}`"
    elif keys and keys & _RUN_KEYS:
        use = f"it looks like a run config: simulate it with `kvsweep simulate {path}`"
    else:
        use = "give the trace file instead"
    raise ConfigError(f"{path} is a YAML file, not a request trace (replay takes a Mooncake .jsonl or"
                      f" Azure .csv trace): {use}")


def parse_routers(text: str) -> list[str]:
    """``"all"`` or ``"round_robin,prefix_aware"`` -> router names; raises :class:`ConfigError`."""
    if text.strip() == "all":
        return list(ROUTERS)
    names = [item.strip() for item in text.split(",")]
    for name in names:
        if name not in ROUTERS:
            raise ConfigError(f"--router item {name!r}: unknown router (use one of {', '.join(ROUTERS)}, "
                              "or all)")
    return names


def format_cluster_table(results: list[ClusterReplayResult]) -> str:
    """A fixed-width table, one row per router, then the global pool's row."""
    header = ("router", "replicas", "capacity/replica", "hit_rate", "global_pool", "lost_points",
              "req_imbalance", "tok_imbalance", "replica_hit_min", "replica_hit_max")
    rows = [header]
    for r in results:
        rates = r.replica_hit_rates
        rows.append((
            r.router, str(r.replicas), _fmt_cap(r.capacity_tokens), f"{r.hit_rate:.4f}",
            f"{r.global_hit_rate:.4f}", f"{100 * (r.global_hit_rate - r.hit_rate):.2f}",
            f"{r.request_imbalance:.3f}", f"{r.token_imbalance:.3f}", f"{min(rates):.4f}",
            f"{max(rates):.4f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def _run_cluster(args: argparse.Namespace, requests: list[TraceRequest], capacities: list[float],
                 block_size: int) -> tuple[str, list[dict[str, Any]]]:
    """Every router at every capacity: the printed tables and the JSON rows."""
    routers = parse_routers(args.router)
    hashes = request_block_hashes(requests, block_size, args.trace_block_tokens)
    sessions = infer_conversations(requests, args.trace_block_tokens)
    input_tokens = sum(r.prompt_tokens for r in requests)
    tables: list[str] = []
    rows: list[dict[str, Any]] = []
    for cap in capacities:
        pooled = replay_hashes(hashes, input_tokens, args.replicas * cap, block_size).hit_tokens
        results = [
            replay_cluster(requests, hashes, sessions, cap, args.replicas,
                           make_router(name, seed=args.seed, load_metric=args.load_metric), block_size,
                           args.snapshot_interval_s, global_hit_tokens=pooled)
            for name in routers
        ]
        tables.append(format_cluster_table(results))
        rows += [r.as_dict() for r in results]
    state = "exact" if args.snapshot_interval_s is None else f"as of every {args.snapshot_interval_s:g} s"
    head = (f"{args.replicas} replicas, one cache each, behind each router; global_pool: one cache of "
            f"{args.replicas} x the capacity; {len(set(sessions)):,} conversations inferred from the "
            f"hash ids; load = {args.load_metric} sent so far; cache state {state}")
    return head + "\n\n" + "\n\n".join(tables), rows


def main(args: argparse.Namespace) -> int:
    capacities = parse_capacities(args.capacity_tokens)
    if args.trace_block_tokens < 1:
        raise ConfigError(f"--trace-block-tokens = {args.trace_block_tokens}: must be a positive integer "
                          "(512 for the Mooncake traces)")
    block_size = args.trace_block_tokens if args.block_size is None else args.block_size
    if block_size < 1:
        raise ConfigError(f"--block-size = {block_size}: must be a positive integer (e.g. 16 or 512)")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit = {args.limit}: must be a positive integer (or leave it out for all)")
    if args.replicas < 1:
        raise ConfigError(f"--replicas = {args.replicas}: must be a positive integer (1: one cache)")
    if args.snapshot_interval_s is not None and not args.snapshot_interval_s > 0:
        raise ConfigError(f"--snapshot-interval-s = {args.snapshot_interval_s:g}: must be > 0 (leave it out "
                          "for exact cache state)")
    cluster = args.replicas > 1
    if cluster:
        parse_routers(args.router)
    for cap in capacities:
        capacity_blocks(cap, block_size)  # fail before reading the trace
    path = Path(args.trace)
    check_not_config(path)
    requests = load_trace(path, fmt=args.format, limit=args.limit)
    fmt = args.format if args.format != "auto" else detect_format(path)
    start = time.perf_counter()
    results = replay(requests, capacities, block_size=block_size, trace_block_tokens=args.trace_block_tokens)
    cluster_text, cluster_rows = _run_cluster(args, requests, capacities, block_size) if cluster else ("", [])
    elapsed = time.perf_counter() - start
    first = results[0]
    print(f"trace {path} ({fmt}): {first.num_requests:,} requests, {first.input_tokens:,} input tokens, "
          f"block size {block_size}")
    print(f"full blocks {first.total_blocks:,}, unique {first.unique_blocks:,} "
          f"(infinite-capacity block hit ratio {1 - first.unique_blocks / max(first.total_blocks, 1):.4f})")
    if fmt == "azure":
        print("note: Azure traces carry no prefix information; every prompt is unique, so nothing hits")
    print()
    if cluster:
        print("one cache of each capacity serving the whole trace:")
    print(format_table(results))
    if cluster:
        print()
        print(cluster_text)
    print(f"\nreplayed {len(results)} capacities in {elapsed:.2f} s", file=sys.stderr)
    if args.json is not None:
        doc: dict[str, Any] = {
            "trace": str(path), "format": fmt, "block_size": block_size,
            "trace_block_tokens": args.trace_block_tokens, "limit": args.limit,
            "results": [r.as_dict() for r in results],
        }
        if cluster:
            doc["cluster"] = {"replicas": args.replicas, "load_metric": args.load_metric,
                              "snapshot_interval_s": args.snapshot_interval_s, "seed": args.seed,
                              "results": cluster_rows}
        try:
            args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--json = {str(args.json)!r}: cannot write ({exc.strerror}); give a writable "
                              "path") from None
    return 0
