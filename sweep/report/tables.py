"""The report's HTML tables, every header in plain words: each cell with caching on and off (with
its run length and steady flag), the infeasible and failed runs with their reasons."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from sweep.report.fmt import label, num, pct, seconds, sort_values, times


def html_table(frame: pd.DataFrame, cls: str = "") -> str:
    return frame.to_html(index=False, escape=True, na_rep="-", border=0, classes=cls or None)


def folded(title: str, body: str) -> str:
    return f"<details><summary>{title}</summary>{body}</details>"


def state_text(state: str, why: str = "") -> str:
    """``steady``, ``overloaded``, ``transient (too few measured requests)``, ``?``."""
    if state == "unknown":
        return "?"
    if state == "transient" and why:
        return f"transient ({why})"
    return state


def _length(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:,.0f}"


def cells_table(sub: pd.DataFrame, x: str | None, y: str | None) -> str:
    """Every cell of one caching mode against off: latency, throughput, prefill, run length, state."""
    keys = [c for c in (y, x) if c]
    table = pd.DataFrame({label(k): sub[k].map(num) for k in keys})
    table["hit rate"] = sub["prefix_hit_rate"].map(lambda v: pct(v, False))
    overloaded = sub["verdict"].isin(["overloaded in both", "ends the overload", "overloaded with caching"])
    for title, side in (("TTFT p99 off", "_base"), ("TTFT p99 on", "")):
        ci = sub.get(f"ttft_p99_s_ci95_run{side}", pd.Series(np.nan, index=sub.index))
        table[title] = [
            _latency(v, s, c)
            for v, s, c in zip(sub[f"ttft_p99_s{side}"], sub[f"state{side}"], ci, strict=True)
        ]
    table["TTFT p99 speed-up"] = [
        ("-" if o else times(v)) for v, o in zip(sub["ttft_p99_speedup"], overloaded, strict=True)
    ]
    table["throughput off (req/s)"] = sub["throughput_rps_base"].map(num)
    table["throughput on (req/s)"] = sub["throughput_rps"].map(num)
    table["throughput gain"] = sub["throughput_gain"].map(pct)
    if "goodput_rps" in sub:  # requests/s that met the runs' per-request SLO
        table["goodput off / on (req/s)"] = [
            f"{num(a)} / {num(b)}" for a, b in zip(sub["goodput_rps_base"], sub["goodput_rps"], strict=True)
        ]
    # the share of prompt tokens computed (not totals: runs measure windows of different lengths)
    table["prompt tokens computed off / on"] = [
        f"{_computed(a)} / {_computed(b)}"
        for a, b in zip(sub["prefill_reduction_base"], sub["prefill_reduction"], strict=True)
    ]
    table["measured off / on (s)"] = [
        f"{_length(a)} / {_length(b)}"
        for a, b in zip(sub["run_length_s_base"], sub["run_length_s"], strict=True)
    ]
    table["state off / on"] = [
        f"{state_text(a)} / {state_text(b)}" for a, b in zip(sub["state_base"], sub["state"], strict=True)
    ]
    table["verdict"] = sub["verdict"].to_numpy()
    order = sub.sort_values(keys, kind="stable").index if keys else sub.index
    return html_table(table.loc[order], "cells")


def _latency(value: float, state: str, ci: float = np.nan) -> str:
    """A latency with its within-run 95% interval (as ±%), or "overloaded" where it has no
    steady value."""
    if state == "overloaded":
        return "overloaded"
    if ci is None or not np.isfinite(ci) or not value:
        return seconds(value)
    return f"{seconds(value)} ±{ci / value:.0%}"


def _computed(reduction: float) -> str:
    """Prompt tokens computed, as a share: 1 - prompt tokens served from cache / prompt tokens."""
    return "-" if reduction is None or not np.isfinite(reduction) else f"{(1 - reduction) * 100:.0f}%"


def absolute_table(cells: pd.DataFrame, keys: list[str], states: pd.DataFrame) -> str:
    """Every cell of a sweep without a caching baseline: hit rate, TTFT p99, throughput, state."""
    merged = cells.merge(states, on=keys, how="left")
    table = pd.DataFrame({label(k): merged[k].map(num) for k in keys})
    table["runs ok"] = merged["n_ok"]
    table["hit rate"] = merged["prefix_hit_rate_mean"].map(lambda v: pct(v, False))
    table["TTFT p99"] = [
        _latency(v, s) for v, s in zip(merged["ttft_p99_s_mean"], merged["state"], strict=True)
    ]
    table["throughput (req/s)"] = merged["throughput_rps_mean"].map(num)
    table["measured (s)"] = merged["run_length_s"].map(_length)
    table["state"] = [state_text(s, w) for s, w in zip(merged["state"], merged["why"], strict=True)]
    return html_table(table)


def _values(series: pd.Series) -> str:
    return ", ".join(num(v) if not isinstance(v, str) else v for v in sort_values(series.tolist()))


def failures_table(df: pd.DataFrame, cell_axes: list[str], limit: int = 200) -> str:
    """Runs that are not ok, one row per reason; the cells of a reason are collapsed into value
    lists when they form a full cross product (so "24 GiB x every load" is one row), else listed."""
    bad = df[df["status"] != "ok"]
    if bad.empty:
        return '<p class="good">Every run finished with status <code>ok</code>.</p>'
    bad = bad.assign(error=bad["error"].fillna("(no message)"))
    cols = [c for c in dict.fromkeys(["model.name", *cell_axes]) if c in bad]
    rows: list[dict[str, Any]] = []
    for (status, model, reason), group in bad.groupby(["status", "model.name", "error"], dropna=False):
        axes_ = [c for c in cols if c != "model.name"]
        cells = group.groupby(axes_, dropna=False) if axes_ else [((), group)]
        n_cells = len(group.drop_duplicates(axes_)) if axes_ else 1
        crossed = math.prod(group[c].nunique(dropna=False) for c in axes_) == n_cells
        blocks = [group] if crossed else [g for _, g in cells]
        for block in blocks:
            row: dict[str, Any] = {"status": status, label("model.name"): model}
            row.update({label(c): _values(block[c].drop_duplicates()) for c in axes_})
            row.update(
                {"seeds": _values(block["seed"].drop_duplicates()), "runs": len(block), "reason": reason}
            )
            rows.append(row)
    table = pd.DataFrame(rows)
    counts = bad["status"].value_counts().to_dict()
    head = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    more = ""
    if len(table) > limit:
        more = (
            f"<p>Showing {limit} of {len(table)} rows; all of them: <code>kvsweep query DIR "
            "\"SELECT * FROM runs WHERE status &lt;&gt; 'ok'\"</code>.</p>"
        )
        table = table.head(limit)
    return f"<p>{head} run(s):</p>{html_table(table, 'failures')}{more}"
