"""Capacity at an SLO in the report: per model and caching mode, the most users (or the least
memory) that meets the SLO, per GPU, and what caching buys there.

The boundaries come from ``capacity/`` when the dataset is a capacity search for the same SLO,
and are otherwise read off the grid (:func:`sweep.capacity.capacity_rows`): along the load axis
(the most load meeting it) and along the memory axis (the least memory), each stated between
the two grid values that bracket it. Users per GPU = users / GPUs (tensor parallel x replicas). Where a
boundary is not bracketed (every value meets, or none), comparisons say "at least" / "at most".
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sweep import analysis
from sweep.analysis import CACHING_AXIS
from sweep.capacity import capacity_rows
from sweep.report.findings import Finding
from sweep.report.fmt import label, num, seconds, with_unit
from sweep.report.roles import BASELINE, Roles, sort_modes
from sweep.report.tables import html_table
from sweep.search import LOAD_AXES, RESOURCE_AXES
from sweep.slo import Limit, Slo

TP = "engine.tensor_parallel"
REPLICAS = "cluster.replicas"
GPU_AXES = (TP, REPLICAS)  # a cell's GPUs: tensor parallel x replicas
_SOURCES = {
    "search": "found by the capacity search (capacity/)",
    "grid": "read off the grid: the true boundary lies between the grid value named and the next one",
    "probes": "read off the search's probe runs (the search itself used another SLO)",
}


@dataclass
class Capacity:
    """One table of boundaries: along ``axis`` (``goal`` max or min), from a search or a grid."""

    table: pd.DataFrame
    axis: str
    goal: str
    source: str  # "search", "grid" or "probes"
    slo: Slo
    fixed: dict[str, Any] = field(default_factory=dict)  # GPU axes the whole dataset holds at one value

    @property
    def cells(self) -> list[str]:
        """The columns that name a cell (everything before ``axis``)."""
        return list(self.table.columns[: list(self.table.columns).index("axis")])

    def varying(self) -> list[str]:
        """Cell columns whose value differs between rows (the rest is the same everywhere)."""
        return [c for c in self.cells if self.table[c].nunique(dropna=False) > 1]


def capacities(
    df: pd.DataFrame, roles: Roles, slo: Slo | None, stored: pd.DataFrame | None
) -> list[Capacity]:
    """The capacity tables the report shows (none without an SLO and without capacity/)."""
    if stored is not None and not stored.empty:
        searched = Slo.parse(str(stored["slo"].iloc[0]))
        axis, goal = str(stored["axis"].iloc[0]), str(stored["goal"].iloc[0])
        if slo is None or slo.same_as(searched):
            return [Capacity(stored, axis, goal, "search", searched, fixed_gpu_axes(df))]
        return [_from_grid(df, axis, goal, slo, "probes")]
    if slo is None:
        return []
    out = []
    if roles.x in LOAD_AXES:
        out.append(_from_grid(df, roles.x, "max", slo, "grid"))
    if roles.y in RESOURCE_AXES:
        out.append(_from_grid(df, roles.y, "min", slo, "grid"))
    return out


def _from_grid(df: pd.DataFrame, axis: str, goal: str, slo: Slo, source: str) -> Capacity:
    keys = [c for c in analysis.axes(df) if c != axis]
    return Capacity(capacity_rows(df, axis, slo, goal, keys), axis, goal, source, slo, fixed_gpu_axes(df))


def fixed_gpu_axes(df: pd.DataFrame) -> dict[str, Any]:
    """The GPU-count columns (:data:`GPU_AXES`) that hold one value over the whole dataset: a
    capacity table names only the axes that vary, yet users per GPU needs them all."""
    return {c: df[c].dropna().iloc[0] for c in GPU_AXES if c in df and df[c].dropna().nunique() == 1}


def gpus(row: pd.Series, fixed: dict[str, Any]) -> float:
    """GPUs one cell's server uses: tensor parallel x replicas (``fixed`` where the row lacks a
    column; 1 where neither has it)."""
    n = 1.0
    for col in GPU_AXES:
        value = row.get(col)
        if value is None or pd.isna(value):
            value = fixed.get(col)
        if value is not None and not pd.isna(value):
            n *= float(value)
    return n


# ---- one boundary, and two compared ----------------------------------------------------------


def amount(row: pd.Series, cap: Capacity) -> float:
    """The boundary in the unit a planner budgets with: per GPU on load axes, as is on others."""
    if pd.isna(row["boundary"]):
        return np.nan
    if cap.axis not in LOAD_AXES:
        return float(row["boundary"])
    return float(row["boundary"]) / gpus(row, cap.fixed)


def bound_of(row: pd.Series, cap: Capacity) -> str:
    """How the boundary holds: ``=`` when bracketed, ``>=`` (``<=``) at the searched end, ``none``."""
    if pd.isna(row["boundary"]):
        return "none"
    if not row["bracketed"]:
        return ">=" if cap.goal == "max" else "<="
    return "="


def boundary_text(row: pd.Series, cap: Capacity) -> str:
    """``48 users (the next grid value, 64 users, fails: ...)``, ``at least 256 users (...)``."""
    axis = cap.axis
    bound = bound_of(row, cap)
    if bound == "none":
        return f"none: {with_unit(axis, row['first_fail'])} already fails ({row['why_fail']})"
    value = with_unit(axis, row["boundary"])
    if bound != "=":
        words, way = ("at least", "up to") if cap.goal == "max" else ("at most", "down to")
        return f"{words} {value} (every value {way} the end of the range meets)"
    nxt = "the next step" if cap.source == "search" else "the next grid value"
    return f"{value} ({nxt}, {with_unit(axis, row['first_fail'])}, fails: {row['why_fail']})"


def compare_text(on: pd.Series, off: pd.Series | None, cap: Capacity) -> str:
    """What a caching mode buys against off: ``2.00x``, ``at least 4.00x``, ``12 GiB less``."""
    if off is None:
        return "-"
    b_on, b_off = bound_of(on, cap), bound_of(off, cap)
    if b_on == "none" or b_off == "none":
        if b_on == b_off:
            return "-"
        return "only without caching" if b_on == "none" else "only with caching"
    if b_on != "=" and b_off != "=":
        return "-"  # both at the end of the range: nothing to compare
    a_on, a_off = amount(on, cap), amount(off, cap)
    qualifier = ""
    if b_on != "=":
        qualifier = "at least " if cap.goal == "max" else ""
    elif b_off != "=":
        qualifier = "at most " if cap.goal == "max" else ""
    if cap.goal == "max":
        return f"{qualifier}{a_on / a_off:.2f}x" if a_off > 0 else "-"
    saved = a_off - a_on
    unit = " GiB" if "gib" in cap.axis else ""
    if b_on != "=" or b_off != "=":
        qualifier = "at least " if b_on != "=" else "at most "
    if abs(saved) < 1e-9:
        return "no less"
    return f"{qualifier}{num(abs(saved))}{unit} {'less' if saved > 0 else 'more'}"


def _cell_key(row: pd.Series, cap: Capacity) -> tuple[Any, ...]:
    """The row's cell without its caching mode (nulls made equal: NaN != NaN)."""
    return tuple(None if pd.isna(row[k]) else row[k] for k in cap.cells if k != CACHING_AXIS)


def _off_rows(cap: Capacity) -> dict[tuple[Any, ...], pd.Series]:
    return {_cell_key(r, cap): r for _, r in cap.table.iterrows() if r.get(CACHING_AXIS) == BASELINE}


def _off_of(row: pd.Series, cap: Capacity, offs: dict[tuple[Any, ...], pd.Series]) -> pd.Series | None:
    return offs.get(_cell_key(row, cap))


# ---- the page section and the key findings ---------------------------------------------------


def capacity_section(caps: list[Capacity]) -> str:
    """The page section: one table per capacity, with the SLO and where the boundaries come from."""
    parts = []
    for cap in caps:
        table = cap.table
        offs = _off_rows(cap)
        cells = [c for c in cap.cells if c in cap.varying() or c in ("model.name", CACHING_AXIS, TP)]
        shown = pd.DataFrame(
            {label(c): table[c].map(lambda v: v if isinstance(v, str) else num(v)) for c in cells}
        )
        want = "most" if cap.goal == "max" else "least"
        shown[f"{want} {label(cap.axis)} meeting the SLO"] = [
            boundary_text(r, cap) for _, r in table.iterrows()
        ]
        if cap.axis in LOAD_AXES:
            shown[f"{label(cap.axis)} per GPU"] = [num(amount(r, cap)) for _, r in table.iterrows()]
        for limit in cap.slo.limits:  # the SLO's figure at the boundary, with its precision
            if limit.metric in table:
                shown[f"{_name(limit)} there"] = [_with_ci(r, limit.metric) for _, r in table.iterrows()]
        for metric, name in (
            ("throughput_rps", "throughput there (req/s)"),
            ("goodput_rps", "goodput there (req/s)"),
        ):
            if metric in table:
                shown[name] = table[metric].map(num)
        if CACHING_AXIS in table:
            shown["caching buys"] = [
                "(baseline)" if r[CACHING_AXIS] == BASELINE else compare_text(r, _off_of(r, cap, offs), cap)
                for _, r in table.iterrows()
            ]
        parts.append(
            f"<p>SLO: <b>{html.escape(cap.slo.describe())}</b>, for every seed, on runs that are not"
            f" overloaded; boundaries {_SOURCES[cap.source]}.</p>" + html_table(shown, "capacity")
        )
    return "\n".join(parts)


def _name(limit: Limit) -> str:
    """``TTFT p99``: the metric of a limit in words, without the bound."""
    return limit.describe().rsplit(" ", 3 if limit.metric.endswith("_s") else 2)[0]


def _with_ci(row: pd.Series, metric: str) -> str:
    """``610 ms ± 240 ms`` (the runs' 95% CI, where they measure one) or ``610 ms``."""
    value = row[metric]
    fmt = seconds if metric.endswith("_s") else num
    if value is None or pd.isna(value):
        return "-"
    ci = row.get(f"{metric}_ci95_run")
    return fmt(value) + (f" ± {fmt(ci)}" if ci is not None and pd.notna(ci) else "")


def capacity_findings(caps: list[Capacity]) -> list[Finding]:
    """Per model (GPU and TP when they vary): off against each caching mode, one clause per other
    cell value (e.g. per GPU memory size), for the first capacity (the load axis on a grid)."""
    if not caps or CACHING_AXIS not in caps[0].table:
        return []
    cap = caps[0]
    heads = [
        c
        for c in ("model.name", "gpu.name", TP)
        if c in cap.cells and (c == "model.name" or c in cap.varying())
    ]
    rest = [c for c in cap.varying() if c not in (*heads, CACHING_AXIS)]
    offs = _off_rows(cap)
    want = ("most " if cap.goal == "max" else "least ") + label(cap.axis).split(" (")[0]
    per = " per GPU" if cap.axis in LOAD_AXES else ""
    findings = []
    for key, group in cap.table.groupby(heads, dropna=False, sort=False) if heads else [((), cap.table)]:
        values = key if isinstance(key, tuple) else (key,)
        title = ", ".join(
            str(v) if c == "model.name" else f"{label(c)} {num(v)}"
            for c, v in zip(heads, values, strict=True)
        )
        clauses = []
        for sub_key, cell in group.groupby(rest, dropna=False, sort=True) if rest else [((), group)]:
            where = ", ".join(
                with_unit(c, v) if c in LOAD_AXES + RESOURCE_AXES else f"{label(c)} {num(v)}"
                for c, v in zip(rest, sub_key if isinstance(sub_key, tuple) else (sub_key,), strict=True)
            )
            clauses.append((f"at {where}: " if where else "") + _modes_clause(cell, cap, offs))
        findings.append(Finding(f"{title}: {want}{per} at {cap.slo.describe()}", clauses))
    return findings


def _modes_clause(cell: pd.DataFrame, cap: Capacity, offs: dict[tuple[Any, ...], pd.Series]) -> str:
    bits = []
    for mode in sort_modes(cell[CACHING_AXIS].tolist()):
        row = cell[cell[CACHING_AXIS] == mode].iloc[0]
        bound = bound_of(row, cap)
        figure = with_unit(cap.axis, amount(row, cap))
        what = {"none": "none meets it", "=": figure, ">=": f"at least {figure}", "<=": f"at most {figure}"}[
            bound
        ]
        who = "without caching" if mode == BASELINE else f"with '{mode}'"
        gain = "" if mode == BASELINE else f" ({compare_text(row, _off_of(row, cap, offs), cap)})"
        bits.append(f"{what} {who}{gain}")
    return "; ".join(bits) + "."
