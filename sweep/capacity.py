"""Capacity at an SLO: per cell, the boundary along one axis, read off probes or a grid.

Both a capacity search (its probes, :mod:`sweep.search`) and a plain grid (its values along the
load or memory axis) give, per cell, runs at several values of one axis. :func:`capacity_rows`
turns them into one row per cell, the same way for both, so the report treats them alike:

    <cell columns>    model.name, gpu.name, engine.tensor_parallel, engine.prefix_caching, ... and
                      every other axis (not the searched one)
    axis, goal        the axis read (workload.users) and max (the most meeting the SLO) or min
    slo               the SLO as text: ttft_p99_s<=1
    boundary          the best value meeting it: with goal max, the largest value such that it and
                      every smaller value probed meet the SLO (min: the smallest, every larger one
                      meeting); null when the first value already fails
    first_fail        the value next to the boundary that fails; null when every value meets
    bracketed         whether both exist: the true boundary lies between them
    low, high         the range probed
    probes, runs      distinct values probed, and runs (values x seeds)
    failed_runs       runs with status failed (they count as not meeting the SLO)
    transient_probes  probes with a run that never settled (not steady, not overloaded)
    why_fail          why first_fail fails: "ttft_p99_s 1.3 (limit <= 1)", "overloaded", ...
    <metrics>         each SLO metric (and its within-run 95% CI, ``<metric>_ci95_run``, where
                      the runs measure one), throughput_rps and goodput_rps at the boundary,
                      mean over its seeds

A value meets the SLO when every seed's run does (:mod:`sweep.slo`). Written by a search to
``DIR/capacity/part-0.parquet``; computed from ``runs/`` for a grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from sweep.analysis import CONTEXT_COLUMNS
from sweep.slo import Slo

RESULT_COLUMNS: tuple[str, ...] = (
    "axis",
    "goal",
    "slo",
    "boundary",
    "first_fail",
    "bracketed",
    "low",
    "high",
    "probes",
    "runs",
    "failed_runs",
    "transient_probes",
    "why_fail",
)
AT_BOUNDARY: tuple[str, ...] = ("throughput_rps", "goodput_rps")


def probe_verdicts(runs: pd.DataFrame, axis: str, slo: Slo, keys: Sequence[str]) -> pd.DataFrame:
    """One row per (cell ``keys``, axis value): ``meets`` (every seed), ``n_runs``, ``n_failed``,
    ``transient``, ``why`` (the first seed's reason when it fails) and metric means over seeds."""
    work = runs.assign(
        _meets=slo.meets(runs).to_numpy(),
        _why=slo.why_not(runs).to_numpy(),
        _failed=runs["status"].eq("failed").to_numpy(),
        _transient=_transient(runs).to_numpy(),
    )
    metrics = [m for m in _at_boundary(slo) if m in runs]
    for m in metrics:
        work[m] = pd.to_numeric(work[m], errors="coerce")
    grouped = work.groupby([*keys, axis], dropna=False, sort=True)
    out = grouped.agg(
        meets=("_meets", "all"),
        n_runs=("_meets", "size"),
        n_failed=("_failed", "sum"),
        transient=("_transient", "any"),
        **{m: (m, "mean") for m in metrics},
    )
    out["why"] = grouped["_why"].agg(lambda reasons: next((r for r in reasons if r), ""))
    return out.reset_index()


def capacity_rows(
    runs: pd.DataFrame,
    axis: str,
    slo: Slo,
    goal: str,
    cell_keys: Sequence[str],
    ends: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """One row per cell of ``runs`` along ``axis`` (see the module docstring). Cells are the
    distinct values of ``cell_keys`` and of the context columns, all but ``axis``. ``ends`` is
    the range searched (default: the smallest and largest value probed)."""
    keys = [c for c in dict.fromkeys([*CONTEXT_COLUMNS, *cell_keys]) if c != axis and c in runs]
    if runs.empty:
        return pd.DataFrame(columns=[*keys, *RESULT_COLUMNS])
    verdicts = probe_verdicts(runs, axis, slo, keys)
    metrics = [m for m in _at_boundary(slo) if m in verdicts]
    rows = []
    groups = verdicts.groupby(keys, dropna=False, sort=True) if keys else [((), verdicts)]
    for key, probes in groups:
        cell = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        rows.append({**cell, **_boundary(probes, axis, goal, ends, metrics), "slo": slo.text()})
    return pd.DataFrame(rows)[[*keys, *RESULT_COLUMNS, *metrics]]


def _boundary(
    probes: pd.DataFrame, axis: str, goal: str, ends: tuple[float, float] | None, metrics: list[str]
) -> dict[str, Any]:
    ordered = probes.sort_values(axis, ascending=goal == "max", kind="stable")
    meets = ordered["meets"].to_numpy(dtype=bool)
    passing = len(ordered) if meets.all() else int(np.argmin(meets))  # values before the first failure
    best = ordered.iloc[passing - 1] if passing else None
    first_fail = ordered.iloc[passing] if passing < len(ordered) else None
    values = ordered[axis]
    row: dict[str, Any] = {
        "axis": axis,
        "goal": goal,
        "boundary": _scalar(best[axis]) if best is not None else None,
        "first_fail": _scalar(first_fail[axis]) if first_fail is not None else None,
        "bracketed": best is not None and first_fail is not None,
        "low": float(ends[0]) if ends else float(values.min()),
        "high": float(ends[1]) if ends else float(values.max()),
        "probes": len(probes),
        "runs": int(probes["n_runs"].sum()),
        "failed_runs": int(probes["n_failed"].sum()),
        "transient_probes": int(probes["transient"].sum()),
        "why_fail": str(first_fail["why"]) if first_fail is not None else "",
    }
    for m in metrics:
        row[m] = float(best[m]) if best is not None and pd.notna(best[m]) else None
    return row


def _at_boundary(slo: Slo) -> list[str]:
    """The figures a capacity row reports at its boundary: each SLO metric with its within-run
    95% CI (``<metric>_ci95_run``, where runs measure one), throughput and goodput."""
    with_ci = [name for m in slo.metrics for name in (m, f"{m}_ci95_run")]
    return list(dict.fromkeys([*with_ci, *AT_BOUNDARY]))


def _transient(runs: pd.DataFrame) -> pd.Series:
    """Per run: ok but flagged not steady for a reason other than overload."""
    if "steady" not in runs or "steady_reason" not in runs:
        return pd.Series(False, index=runs.index)
    steady = runs["steady"].astype("boolean").fillna(True)
    reason = runs["steady_reason"].fillna("").astype(str)
    return (runs["status"].eq("ok") & ~steady & ~reason.str.startswith("overloaded")).astype(bool)


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def summary_lines(table: pd.DataFrame) -> list[str]:
    """The answers as a few lines of text, one per cell, naming only what differs between cells."""
    if table.empty:
        return ["no cell finished its search"]
    first = table.iloc[0]
    cells = table.columns[: list(table.columns).index("axis")]
    varying = [c for c in cells if table[c].nunique(dropna=False) > 1]
    head = f"capacity at {first['slo']}: the {'most' if first['goal'] == 'max' else 'least'} {first['axis']}"
    lines = [head + " meeting it, per cell:"]
    for _, row in table.iterrows():
        cell = " ".join(f"{c}={row[c]}" for c in varying) or "(one cell)"
        lines.append(f"  {cell}: {describe_boundary(row)}")
    return lines


def describe_boundary(row: pd.Series | dict[str, Any]) -> str:
    """``48 (49 fails: ttft_p99_s 1.2 (limit <= 1); 8 probes)``, ``>= 1024 (every value meets)``..."""
    fmt = _value_text
    probes = f"{row['probes']} probe{'s' if row['probes'] != 1 else ''}"
    if row["boundary"] is None or pd.isna(row["boundary"]):
        end = fmt(row["first_fail"])
        return f"none: already {end} fails ({row['why_fail']}; {probes})"
    if not row["bracketed"]:
        sign = ">=" if row["goal"] == "max" else "<="
        return f"{sign} {fmt(row['boundary'])} (every value up to the searched end meets; {probes})"
    return f"{fmt(row['boundary'])} ({fmt(row['first_fail'])} fails: {row['why_fail']}; {probes})"


def _value_text(value: Any) -> str:
    number = float(value)
    return f"{number:g}" if not number.is_integer() else f"{int(number)}"
