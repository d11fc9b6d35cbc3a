"""``kvsweep replay TRACE``: cache-only replay of a request trace, hit rate per cache capacity.

Example::

    kvsweep replay ../shared/data/traces/synthetic_trace.jsonl --capacity-tokens 1e5,1e6,1e7,inf

Prints one row per capacity (tokens); ``--json FILE`` also writes the rows (an infinite capacity
is ``null``). See :mod:`simcore.replay` for the semantics.
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
from simcore.replay import ReplayResult, capacity_blocks, replay
from simcore.traces import detect_format, load_trace

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


_RUN_KEYS = {"model", "gpu", "engine", "workload", "run"}
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
    for cap in capacities:
        capacity_blocks(cap, block_size)  # fail before reading the trace
    path = Path(args.trace)
    check_not_config(path)
    requests = load_trace(path, fmt=args.format, limit=args.limit)
    fmt = args.format if args.format != "auto" else detect_format(path)
    start = time.perf_counter()
    results = replay(requests, capacities, block_size=block_size, trace_block_tokens=args.trace_block_tokens)
    elapsed = time.perf_counter() - start
    first = results[0]
    print(f"trace {path} ({fmt}): {first.num_requests:,} requests, {first.input_tokens:,} input tokens, "
          f"block size {block_size}")
    print(f"full blocks {first.total_blocks:,}, unique {first.unique_blocks:,} "
          f"(infinite-capacity block hit ratio {1 - first.unique_blocks / max(first.total_blocks, 1):.4f})")
    if fmt == "azure":
        print("note: Azure traces carry no prefix information; every prompt is unique, so nothing hits")
    print()
    print(format_table(results))
    print(f"\nreplayed {len(results)} capacities in {elapsed:.2f} s", file=sys.stderr)
    if args.json is not None:
        doc: dict[str, Any] = {
            "trace": str(path), "format": fmt, "block_size": block_size,
            "trace_block_tokens": args.trace_block_tokens, "limit": args.limit,
            "results": [r.as_dict() for r in results],
        }
        try:
            args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--json = {str(args.json)!r}: cannot write ({exc.strerror}); give a writable "
                              "path") from None
    return 0
