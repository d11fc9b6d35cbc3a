"""The section of one model (and facet value) in a sweep without a caching baseline: hit rate,
TTFT p99 and throughput as they are, marked where runs did not settle or were overloaded."""

from __future__ import annotations

from typing import Any

import pandas as pd

from sweep import analysis
from sweep.analysis import CACHING_AXIS
from sweep.report import heatmaps
from sweep.report.cells import cell_states, cell_status
from sweep.report.context import Context, Tick, blank, img, y_tick_fn
from sweep.report.fmt import label, slug, sort_values
from sweep.report.heatmaps import Marks, Panel
from sweep.report.roles import sort_modes
from sweep.report.tables import absolute_table, folded
from sweep.report.trends import metric_lines


def section_absolute(ctx: Context, df: pd.DataFrame, title: str, draw: bool = True) -> str:
    """A sweep without a caching baseline: hit rate, TTFT p99 and throughput as they are (without
    figures when ``draw`` is False)."""
    x, y = ctx.roles.x, ctx.roles.y
    keys = [c for c in (x, y) if c is not None]
    parts: list[str] = []
    tick, capacity = y_tick_fn(df, y)
    modes = sort_modes(df[CACHING_AXIS].dropna().unique().tolist()) if CACHING_AXIS in df else [None]
    for mode in modes:
        sub_df = df[df[CACHING_AXIS] == mode] if mode is not None else df
        if not (x and y and draw):
            continue
        parts.append(_absolute_heatmaps(ctx, sub_df, df, title, mode, tick, capacity))
    if draw:
        parts.append(metric_lines(ctx, df, title, tick, capacity))
    by = [c for c in (*keys, CACHING_AXIS) if c in df] or ["model.name"]
    table = analysis.summarize(df, by, ["prefix_hit_rate", "ttft_p99_s", "throughput_rps"])
    parts.append(folded(f"Every cell ({len(table)})", absolute_table(table, by, cell_states(df, by))))
    return "\n".join(parts)


def _absolute_heatmaps(
    ctx: Context,
    sub_df: pd.DataFrame,
    df: pd.DataFrame,
    title: str,
    mode: Any,
    tick: Tick,
    capacity: dict[Any, float],
) -> str:
    x, y = ctx.roles.x, ctx.roles.y
    assert x is not None and y is not None
    means = analysis.cell_means(sub_df, [x, y], ["prefix_hit_rate", "ttft_p99_s", "throughput_rps"])
    xs, ys = sort_values(df[x].tolist()), sort_values(df[y].tolist(), capacity)
    status = cell_status(sub_df, [x, y])
    states = cell_states(sub_df, [x, y])
    marks = Marks(blank={(yv, xv): blank(status, (xv, yv)) for yv in ys for xv in xs})
    for _, r in states.iterrows():
        if r["state"] in heatmaps.HATCHES:
            marks.state[(r[y], r[x])] = r["state"]
    panels = [
        Panel(
            "Prefix-cache hit rate",
            means.set_index([y, x])["prefix_hit_rate"],
            lambda v: f"{v * 100:.0f}%",
            "viridis",
            vmin=0.0,
            vmax=1.0,
        ),
        Panel(
            "TTFT p99 (s)",
            means.set_index([y, x])["ttft_p99_s"],
            lambda v: f"{v:.3g}",
            "magma_r",
            hide_overloaded=True,
        ),
        Panel(
            "Throughput (requests/s; overloaded: capacity)",
            means.set_index([y, x])["throughput_rps"],
            lambda v: f"{v:.3g}",
            "viridis",
        ),
    ]
    fig = heatmaps.new_figure(16, 1.6 + 0.55 * max(len(ys), 3))
    for i, (ax, panel) in enumerate(zip(fig.subplots(1, 3), panels, strict=True)):
        heatmaps.heatmap(ax, panel, xs, ys, (label(x), label(y) if i == 0 else ""), tick, marks)
    fig.suptitle(f"{title} - caching '{mode}'" + heatmaps.legend_text(marks), fontsize=12)
    return img(ctx.save(fig, f"{slug(title)}-{mode}-heatmaps"), f"{title}: caching {mode}")
