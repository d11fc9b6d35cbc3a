"""``kvsweep report DIR`` and ``kvsweep query DIR "SQL"``: look at a sweep's dataset.

``report`` writes ``DIR/report/index.html`` (+ PNGs and ``summary.csv``) and prints its path.
``query`` runs DuckDB SQL over the dataset with two views: ``runs`` (one row per run) and
``requests`` (one row per request, with ``run_id``; only when the sweep recorded requests).
Column names hold dots, so quote them: ``SELECT "model.name", avg(ttft_p99_s) FROM runs GROUP BY 1``.
Bad SQL or a missing dataset raise :class:`ConfigError` (one line, exit code 2).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from simcore.errors import ConfigError

if TYPE_CHECKING:  # duckdb is imported only when a query runs: every kvsweep command imports this module
    import duckdb


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="the sweep's output directory (the --out of kvsweep run)")
    parser.add_argument("--out", default=None, help="where to write the report (default: DIR/report)")
    parser.add_argument("--slo", metavar="LIMITS", default=None,
                        help='a service-level objective, e.g. "ttft_p99_s<1" or'
                             ' "ttft_p99_s<1,tpot_p99_s<0.05": drawn on the plots, and the report states'
                             " the capacity at it (default: a capacity search's own SLO)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="worker processes drawing a big dataset's models (default: one per CPU)")


def main_report(args: argparse.Namespace) -> int:
    from sweep.report import write_report
    from sweep.report.workers import cpus

    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: give 1 or more worker processes")
    index = write_report(args.dir, args.out, slo=args.slo, jobs=args.jobs or cpus())
    print(index.resolve())
    return 0


def add_query_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="the sweep's output directory")
    parser.add_argument(
        "sql",
        help='DuckDB SQL over the views runs and requests; quote dotted names: "model.name"',
    )
    parser.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="how to print the result (default: an aligned table)",
    )
    parser.add_argument(
        "--max-rows",
        type=int,
        default=200,
        help="table format: print at most this many rows (0: all; default 200)",
    )


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(path: str | Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the views ``runs`` and (when recorded) ``requests`` over ``path``.

    Raises :class:`ConfigError` when ``path`` holds no dataset.
    """
    import duckdb

    from sweep.analysis import runs_dataset

    runs_dataset(path)  # raises ConfigError with a fix when there is no dataset
    root = Path(path) if "://" not in str(path) else None
    base = str(root.resolve()) if root is not None else str(path).rstrip("/")
    con = duckdb.connect(database=":memory:")
    runs_glob = _sql_string(f"{base}/runs/*.parquet")
    options = "hive_partitioning=true, union_by_name=true"
    con.execute(f"CREATE VIEW runs AS SELECT * FROM read_parquet({runs_glob}, {options})")
    if root is None or (root / "requests").is_dir() and any((root / "requests").glob("run_id=*/*.parquet")):
        requests_glob = _sql_string(f"{base}/requests/*/*.parquet")
        try:
            con.execute(f"CREATE VIEW requests AS SELECT * FROM read_parquet({requests_glob}, {options})")
        except duckdb.Error:
            pass  # remote dataset without requests/
    return con


def query(path: str | Path, sql: str) -> pd.DataFrame:
    """Run ``sql`` over the dataset at ``path``; the result as a DataFrame. Bad SQL -> ConfigError."""
    import duckdb

    from sweep.analysis import NO_REQUESTS_HINT

    con = connect(path)
    try:
        return con.execute(sql).fetchdf()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        dotted = re.search(r'(?<!")\b(?:model|gpu|engine|workload|run)\.\w+', sql)
        if "not found" in first and dotted:
            hint = f' (quote dotted column names: "{dotted.group(0)}")'
        if "requests" in first and "does not exist" in first:
            hint = f" ({NO_REQUESTS_HINT})"
        raise ConfigError(f"bad SQL: {first}{hint}") from None
    finally:
        con.close()


def main_query(args: argparse.Namespace) -> int:
    result = query(args.dir, args.sql)
    if args.format == "csv":
        result.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(result.to_json(orient="records", date_format="iso"))
    else:
        shown = result if args.max_rows <= 0 else result.head(args.max_rows)
        with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_colwidth", 60):
            if shown.empty:
                print("  ".join(map(str, shown.columns)) or "(no columns)")
            else:
                print(shown.to_string(index=False))
        if len(shown) < len(result):
            print(f"... {len(result) - len(shown)} more rows (use --max-rows 0 or --format csv)")
        print(f"({len(result)} row{'s' if len(result) != 1 else ''})")
    return 0
