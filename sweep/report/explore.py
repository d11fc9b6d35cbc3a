"""``explore.html``: every ok run on parallel coordinates, to filter by any axis.

One vertical axis per varied setting (model, GPU, caching, load, memory, ...) and per outcome
(TTFT p99 on a log scale, throughput per GPU, hit rate, steady state); drag along any axis to
keep only the runs in that range, drag an axis sideways to reorder, and pick what colours the
lines. It is Plotly's offline HTML with the library inlined (``include_plotlyjs=True``): the
page opens from disk with no network and no server.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep import analysis
from sweep.report.capacity import TP
from sweep.report.cells import run_states
from sweep.report.fmt import label, num, sort_values
from sweep.report.roles import determined, sort_modes

FILE = "explore.html"
STATE_ORDER = ("steady", "transient", "overloaded", "unknown")


def _axis(name: str, values: pd.Series, first: list[Any] | None = None) -> dict[str, Any]:
    """A categorical dimension: grid values in display order (``first`` leads) at positions 0..n-1."""
    present = values.dropna().unique().tolist()
    known = [v for v in first or [] if v in present]
    rest = [v for v in present if v not in known]
    order = known + (sort_modes(rest) if name.endswith("prefix_caching") else sort_values(rest))
    pos = {v: i for i, v in enumerate(order)}
    return {
        "label": label(name),
        "values": values.map(pos).astype(float).tolist(),
        "tickvals": list(range(len(order))),
        "ticktext": [num(v) for v in order],
        "range": [-0.2, len(order) - 0.8] if len(order) > 1 else [-1, 1],
    }


def _log_axis(title: str, values: pd.Series) -> dict[str, Any]:
    """A positive metric on a log10 scale, ticked in its own units."""
    finite = values[np.isfinite(values) & (values > 0)]
    logs = np.log10(values.where(values > 0))
    lo = math.floor(math.log10(finite.min())) if len(finite) else -2
    hi = math.ceil(math.log10(finite.max())) if len(finite) else 2
    ticks = list(range(lo, hi + 1))
    text = [f"{10.0**t:g}" for t in ticks]
    return {"label": title, "values": logs.tolist(), "tickvals": ticks, "ticktext": text, "range": [lo, hi]}


def frame(df: pd.DataFrame) -> pd.DataFrame:
    """The ok runs with the outcome columns the page draws."""
    ok = df[df["status"] == "ok"].copy()
    gpus = ok[TP].astype(float).fillna(1.0) if TP in ok else 1.0
    ok["_thr_gpu"] = ok["throughput_rps"].astype(float) / gpus
    ok["_state"] = run_states(ok).to_numpy()
    return ok


def dimensions(ok: pd.DataFrame, axes: list[str], orders: dict[str, list[Any]]) -> list[dict[str, Any]]:
    dims = [_axis(a, ok[a], orders.get(a)) for a in axes]
    if "ttft_p99_s" in ok:
        dims.append(_log_axis("TTFT p99 (s, log)", ok["ttft_p99_s"].astype(float)))
    dims.append({"label": "throughput per GPU (req/s)", "values": ok["_thr_gpu"].tolist()})
    if "prefix_hit_rate" in ok and ok["prefix_hit_rate"].notna().any():
        dims.append(
            {
                "label": "hit rate (%)",
                "values": (ok["prefix_hit_rate"].astype(float) * 100).tolist(),
                "range": [0, 100],
            }
        )
    states = [s for s in STATE_ORDER if s in set(ok["_state"])]
    if len(states) > 1:
        pos = {s: i for i, s in enumerate(states)}
        dims.append(
            {
                "label": "state",
                "values": ok["_state"].map(pos).astype(float).tolist(),
                "tickvals": list(range(len(states))),
                "ticktext": states,
            }
        )
    return dims


def write_explore(out: Path, df: pd.DataFrame, title: str, models: list[Any] | None = None) -> str:
    """Write ``out/explore.html``; return its file name ("" when no run is ok). ``models``: their
    order on the model axis (the report's)."""
    import plotly.graph_objects as go  # imported here: only the report needs it

    ok = frame(df)
    if ok.empty:
        return ""
    axes: list[str] = []  # the varied axes, less those that follow from one before (GPU memory: GPU)
    for axis in analysis.axes(df):
        if not (axes and determined(ok, axis, axes)):
            axes.append(axis)
    dims = dimensions(ok, axes, {"model.name": list(models or [])})
    colours = {
        "TTFT p99 (log10 s)": np.log10(ok["ttft_p99_s"].astype(float).where(lambda s: s > 0)).tolist()
        if "ttft_p99_s" in ok
        else None,
        "throughput per GPU (req/s)": ok["_thr_gpu"].tolist(),
        "hit rate (%)": (ok["prefix_hit_rate"].astype(float) * 100).tolist()
        if "prefix_hit_rate" in ok
        else None,
    }
    colours = {k: v for k, v in colours.items() if v is not None}
    first = next(iter(colours))
    fig = go.Figure(
        go.Parcoords(
            dimensions=dims,
            line={
                "color": colours[first],
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": {"text": first}},
            },
            labelangle=-20,
            labelside="bottom",
        )
    )
    fig.update_layout(
        height=640,
        margin={"l": 90, "r": 60, "t": 90, "b": 90},
        updatemenus=[
            {
                "buttons": [
                    {
                        "label": f"colour: {name}",
                        "method": "restyle",
                        "args": [{"line.color": [values], "line.colorbar.title.text": name}],
                    }
                    for name, values in colours.items()
                ],
                "x": 0.0,
                "y": 1.16,
                "xanchor": "left",
                "direction": "down",
            }
        ],
    )
    plot = fig.to_html(
        full_html=False, include_plotlyjs=True, config={"displaylogo": False, "responsive": True}
    )
    n_bad = int((df["status"] != "ok").sum())
    left_out = (
        f" {n_bad} runs that are not ok are left out (see the report's failures table)." if n_bad else ""
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>kvsweep: every run of {html.escape(title)}</title>
<style>body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1500px;
padding:12px 24px;color:#1d1d1f}} p{{color:#444;margin:4px 0}}</style></head><body>
<h1 style="font-size:22px">Every run of {html.escape(title)}: {len(ok)} ok runs</h1>
<p>One line per run. Drag along an axis to keep only the runs in that range (drag again elsewhere on
the axis to add a range; click outside it to clear), drag an axis title sideways to reorder, and pick
what colours the lines with the menu. TTFT p99 is on a log scale; throughput is per GPU (requests/s
/ tensor-parallel GPUs).{html.escape(left_out)} <a href="index.html">Back to the report</a>.</p>
{plot}
</body></html>
"""
    (out / FILE).write_text(page, encoding="utf-8")
    return FILE
