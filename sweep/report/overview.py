"""The overview: the question answered first, in one sortable table per model x GPU x tensor
parallel, one column per caching mode, and what caching buys.

The **headline** of a cell (every axis but the load axis) is

    with an SLO     the capacity at the SLO per GPU, from :mod:`sweep.report.capacity` (users or
                    requests/s per GPU on a load axis; GiB on a memory axis), as the grid or the
                    capacity search gives it
    without one     the throughput per GPU (requests/s) at the highest load whose runs are all
                    steady, with the TTFT p99 there and that load

The table holds the axes that are neither model, GPU, tensor parallel, caching nor load at a
**reference** value, named in the caption: the most memory on memory axes (what a planner gives
the server), the middle value on the others. Under each figure, in grey, the range over every
value of those axes. ``overview.csv`` holds the same numbers.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sweep import analysis
from sweep.analysis import CACHING_AXIS
from sweep.report.capacity import TP, Capacity, amount, bound_of, compare_text, fixed_gpu_axes, gpus
from sweep.report.cells import cell_states
from sweep.report.fmt import label, listing, num, seconds, setting, sort_values, with_unit
from sweep.report.roles import BASELINE, Roles, determined, sort_modes
from sweep.search import LOAD_AXES, RESOURCE_AXES

HEADS: tuple[str, ...] = ("model.name", "gpu.name", TP)
#: Run states that count as steady for "the highest steady load" (unknown: an older dataset).
STEADY = ("steady", "unknown")


@dataclass
class Headline:
    """The headline figure of every cell: ``cells`` has the cell's axes, ``caching``-mode column
    and ``value`` (per GPU), ``bound`` ("=", ">=", "<=", "none", "" when measured as is) and,
    without an SLO, ``load``, ``ttft_p99_s`` and ``throughput_rps`` (not per GPU)."""

    cells: pd.DataFrame
    heads: list[str]
    others: list[str]  # held at the reference in the table
    reference: dict[str, Any]
    what: str  # "most concurrent users per GPU at TTFT p99 < 1 s"
    unit: str  # "users", "requests/s", "GiB"
    load: str | None
    capacity: Capacity | None = None
    steady_known: bool = True

    def at_reference(self) -> pd.DataFrame:
        cells = self.cells
        for axis, value in self.reference.items():
            if axis in cells:
                cells = cells[_equal(cells[axis], value)]
        return cells


def _equal(series: pd.Series, value: Any) -> pd.Series:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return series.isna()
    return series == value


def other_axes(df: pd.DataFrame, roles: Roles, load: str | None) -> list[str]:
    """Varied axes that are not the table's rows, columns or load, nor follow from the rows."""
    heads = [h for h in HEADS if h in df]
    rest = [c for c in analysis.axes(df) if c not in (*heads, CACHING_AXIS, load)]
    return [c for c in rest if not determined(df, c, heads)]


def reference_values(df: pd.DataFrame, axes: Sequence[str]) -> dict[str, Any]:
    """The value each axis is held at: the most on memory axes, the middle value on others."""
    ref: dict[str, Any] = {}
    for axis in axes:
        values = sort_values(df[axis].dropna().tolist())
        if not values:
            continue
        ref[axis] = values[-1] if axis in RESOURCE_AXES else values[(len(values) - 1) // 2]
    return ref


def headline(df: pd.DataFrame, roles: Roles, caps: list[Capacity]) -> Headline:
    """The headline of every cell: capacity at the SLO when there is one, else throughput at the
    highest steady load."""
    heads = [h for h in HEADS if h in df]
    if caps:
        return _from_capacity(caps[0], heads)
    load = roles.x if roles.x in df and roles.x is not None else None
    others = other_axes(df, roles, load)
    return _from_runs(df, heads, others, load)


def _from_capacity(cap: Capacity, heads: list[str]) -> Headline:
    table = cap.table
    load = cap.axis if cap.axis in LOAD_AXES else None
    keys = [c for c in cap.cells if c not in (*heads, CACHING_AXIS)]
    others = [c for c in keys if table[c].nunique(dropna=False) > 1 and not determined(table, c, heads)]
    cells = table[[c for c in (*heads, *keys, CACHING_AXIS) if c in table]].copy()
    cells["value"] = [amount(r, cap) for _, r in table.iterrows()]
    cells["bound"] = [bound_of(r, cap) for _, r in table.iterrows()]
    want = "most" if cap.goal == "max" else "least"
    per = " per GPU" if load else ""
    unit = {"workload.users": "users", "workload.session_rate": "sessions/s"}.get(
        cap.axis, "requests/s" if load else ("GiB" if "gib" in cap.axis else label(cap.axis))
    )
    what = f"{want} {label(cap.axis).split(' (')[0]}{per} meeting {cap.slo.describe()}"
    return Headline(cells, heads, others, reference_values(table, others), what, unit, load, cap)


def _from_runs(df: pd.DataFrame, heads: list[str], others: list[str], load: str | None) -> Headline:
    cell_keys = list(
        dict.fromkeys([*heads, *others, CACHING_AXIS] if CACHING_AXIS in df else [*heads, *others])
    )
    keys = [*cell_keys, load] if load else cell_keys
    summary = analysis.summarize(df, keys, ["throughput_rps", "ttft_p99_s"])
    states = cell_states(df, keys)
    merged = summary.merge(states[[*keys, "state"]], on=keys, how="left")
    merged["state"] = merged["state"].fillna("no ok run")
    steady_known = bool((merged["state"] != "unknown").any())
    usable = merged[merged["state"].isin(STEADY) & merged["throughput_rps_mean"].notna()]
    if load:
        usable = usable.sort_values(load).groupby(cell_keys, dropna=False, sort=False).tail(1)
    cells = merged[cell_keys].drop_duplicates().merge(usable, on=cell_keys, how="left")
    fixed = fixed_gpu_axes(df)
    cells["gpus"] = [gpus(r, fixed) for _, r in cells.iterrows()]
    cells["value"] = cells["throughput_rps_mean"] / cells["gpus"]
    cells["bound"] = ""
    cells = cells.rename(
        columns={
            "throughput_rps_mean": "throughput_rps",
            "ttft_p99_s_mean": "ttft_p99_s",
            **({load: "load"} if load else {}),
        }
    )
    what = (
        "throughput per GPU at the highest steady load"
        if steady_known
        else "throughput per GPU at the highest load"
    )
    cols = [*cell_keys, "value", "bound", *(["load"] if load else []), "throughput_rps", "ttft_p99_s", "n_ok"]
    return Headline(
        cells[[c for c in cols if c in cells]],
        heads,
        others,
        reference_values(df, others),
        what,
        "requests/s",
        load,
        steady_known=steady_known,
    )


# ---- the table -------------------------------------------------------------------------------


def overview_rows(hl: Headline) -> pd.DataFrame:
    """One row per model x GPU x TP x caching mode at the reference: ``value``, ``bound``, ``low`` and
    ``high`` (the range over the other axes) and, without an SLO, ``load`` and ``ttft_p99_s``."""
    ref = hl.at_reference()
    modes = [CACHING_AXIS] if CACHING_AXIS in hl.cells else []
    by = [*hl.heads, *modes]
    spread = hl.cells.assign(_v=hl.cells["value"].where(hl.cells["bound"] != "none", 0.0))
    ranges = spread.groupby(by, dropna=False)["_v"].agg(low="min", high="max").reset_index()
    keep = [c for c in (*by, "value", "bound", "load", "gpus", "throughput_rps", "ttft_p99_s") if c in ref]
    rows = ref[keep].merge(ranges, on=by, how="outer")
    return rows.reset_index(drop=True)


def _value_text(value: float, bound: str) -> str:
    if bound == "none":
        return "none"
    if value is None or not np.isfinite(value):
        return "-"
    text = num(round(value, 1) if value >= 10 else value)
    return {"=": text, "": text, ">=": f"≥ {text}", "<=": f"≤ {text}"}[bound]


def _range_text(low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)) or num(low) == num(high):
        return ""
    return f"{num(low)}–{num(high)}"


def overview_table(hl: Headline, rows: pd.DataFrame, model_rank: dict[Any, float]) -> str:
    """The sortable HTML table (the script in :mod:`sweep.report.page` sorts it by ``data-v``)."""
    modes = sort_modes(rows[CACHING_AXIS].dropna().unique().tolist()) if CACHING_AXIS in rows else [None]
    others = [m for m in modes if m != BASELINE]
    gains = others if BASELINE in modes else []
    keyed = {(tuple(_key(r, hl.heads)), r.get(CACHING_AXIS)): r for _, r in rows.iterrows()}
    heads = sorted(
        {tuple(_key(r, hl.heads)) for _, r in rows.iterrows()},
        key=lambda k: (model_rank.get(k[0], math.inf), *[_sortable(v) for v in k]),
    )
    unit_head = {
        "users": "users per GPU",
        "requests/s": "requests/s per GPU",
        "sessions/s": "sessions/s per GPU",
    }
    top = [f'<th rowspan="2" data-col="{i}">{html.escape(label(h))}</th>' for i, h in enumerate(hl.heads)]
    n = len(hl.heads)
    head_unit = unit_head.get(hl.unit, hl.unit) if hl.capacity is not None else "requests/s per GPU"
    top.append(f'<th colspan="{len(modes)}">{html.escape(head_unit)}, by caching</th>')
    if gains:
        top.append(f'<th colspan="{len(gains)}">what caching buys</th>')
    second = [f'<th data-col="{n + i}">{html.escape(_mode_name(m))}</th>' for i, m in enumerate(modes)] + [
        f'<th data-col="{n + len(modes) + i}">{html.escape(str(m))} vs off</th>' for i, m in enumerate(gains)
    ]
    body = []
    for key in heads:
        tds = [
            f'<td class="head" data-v="{html.escape(str(_sortable(v)))}">{html.escape(_head_text(h, v))}</td>'
            for h, v in zip(hl.heads, key, strict=True)
        ]
        for mode in modes:
            tds.append(_value_td(hl, keyed.get((key, mode))))
        for mode in gains:
            tds.append(_gain_td(hl, keyed.get((key, mode)), keyed.get((key, BASELINE))))
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (
        '<table class="overview sortable"><thead><tr>'
        + "".join(top)
        + "</tr><tr>"
        + "".join(second)
        + "</tr></thead><tbody>"
        + "\n".join(body)
        + "</tbody></table>"
    )


def _key(row: pd.Series, heads: list[str]) -> list[Any]:
    return [None if pd.isna(row[h]) else row[h] for h in heads]


def _sortable(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return value.item() if hasattr(value, "item") else value


def _head_text(axis: str, value: Any) -> str:
    return num(value) if axis == TP else ("-" if value is None else str(value))


def _mode_name(mode: Any) -> str:
    return "off" if mode == BASELINE else str(mode) if mode is not None else "all"


def _value_td(hl: Headline, row: pd.Series | None) -> str:
    if row is None or (pd.isna(row.get("value")) and row.get("bound") != "none"):
        return (
            '<td data-v="" class="na">no steady run</td>' if hl.capacity is None else '<td data-v="">-</td>'
        )
    bound = str(row.get("bound") or "")
    value = float(row["value"]) if pd.notna(row.get("value")) else 0.0
    main = _value_text(value, bound)
    extra = []  # one short line each, under the figure
    if hl.capacity is None and hl.load and pd.notna(row.get("load")):
        n = float(row.get("gpus", 1.0)) if pd.notna(row.get("gpus", 1.0)) else 1.0
        per = f" ({num(row['load'] / n)}/GPU)" if n > 1 else ""
        extra.append(f"at {with_unit(hl.load, row['load'])}{per}, p99 {seconds(row['ttft_p99_s'])}")
    spread = _range_text(float(row.get("low", np.nan)), float(row.get("high", np.nan)))
    if spread:
        extra.append(f"range {spread}")
    small = "".join(f'<span class="range">{html.escape(e)}</span>' for e in extra)
    return f'<td data-v="{value:.6g}"><b>{html.escape(main)}</b>{small}</td>'


def gain_of(hl: Headline, on: pd.Series | None, off: pd.Series | None) -> tuple[str, float]:
    """What a caching mode buys against off at the reference, as text and as a ratio (for sorting)."""
    if on is None or off is None:
        return "-", math.nan
    if hl.capacity is not None:
        cap = hl.capacity
        full_on = _capacity_row(cap, on, hl)
        full_off = _capacity_row(cap, off, hl)
        if full_on is None or full_off is None:
            return "-", math.nan
        text = compare_text(full_on, full_off, cap)
        a, b = amount(full_on, cap), amount(full_off, cap)
        ratio = a / b if np.isfinite(a) and np.isfinite(b) and b > 0 else math.nan
        return text, ratio
    a, b = on.get("value"), off.get("value")
    if pd.isna(a) or pd.isna(b) or not b:
        return "-", math.nan
    text = f"{(a / b - 1) * 100:+.0f}% throughput"
    if hl.load and pd.notna(on.get("load")) and pd.notna(off.get("load")) and on["load"] != off["load"]:
        text += f" (steady to {with_unit(hl.load, on['load'])}; off: {with_unit(hl.load, off['load'])})"
    return text, float(a / b)


def _capacity_row(cap: Capacity, row: pd.Series, hl: Headline) -> pd.Series | None:
    table = cap.table
    pick = table
    for axis in [*hl.heads, CACHING_AXIS]:
        if axis in table:
            pick = pick[_equal(pick[axis], None if pd.isna(row[axis]) else row[axis])]
    for axis, value in hl.reference.items():
        if axis in pick:
            pick = pick[_equal(pick[axis], value)]
    return pick.iloc[0] if len(pick) else None


def _gain_td(hl: Headline, on: pd.Series | None, off: pd.Series | None) -> str:
    text, ratio = gain_of(hl, on, off)
    v = "" if not np.isfinite(ratio) else f"{ratio:.6g}"
    return f'<td data-v="{v}">{html.escape(text)}</td>'


def caption(hl: Headline, df: pd.DataFrame) -> str:
    """What the figures are, where the other axes are held, and what the grey range spans."""
    bits = []
    if hl.capacity is not None:
        cap = hl.capacity
        source = {
            "search": "found by the capacity search",
            "grid": "read off the grid (the true boundary lies between the figure and the next grid value)",
            "probes": "read off the search's probe runs",
        }[cap.source]
        bits.append(
            f"<b>{html.escape(hl.what[0].upper() + hl.what[1:])}</b> (for every seed, with no overload;"
            f" {html.escape(source)}); ≥: every value tried meets it."
        )
    else:
        steady = (
            "whose runs are all steady" if hl.steady_known else "(this dataset does not record steady state)"
        )
        bits.append(
            f"<b>Throughput per GPU (requests/s)</b> at the highest {html.escape(label(hl.load) or 'load')}"
            f" {steady}, with that load and the TTFT p99 there; gain: throughput with caching over"
            " without, each at its own highest steady load. Steady is not fast: give an SLO"
            ' (<code>kvsweep report DIR --slo "ttft_p99_s&lt;1"</code>) and the table states the most'
            " load per GPU within it."
        )
    if hl.reference:
        held = listing([setting(a, v) for a, v in hl.reference.items()])
        spans = listing(
            [
                f"{label(a)} ({', '.join(num(v) for v in sort_values(df[a].dropna().tolist()))})"
                for a in hl.reference
                if a in df
            ]
        )
        bits.append(f"At {html.escape(held)}; range: over every {html.escape(spans)}.")
    bits.append('Click a header to sort. The numbers: <a href="overview.csv">overview.csv</a>.')
    return '<p class="sub">' + " ".join(bits) + "</p>"
