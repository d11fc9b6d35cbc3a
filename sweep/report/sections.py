"""The section of one model (and facet value) in a sweep that compares caching with ``off``: its
heatmaps (or lines), the callout, the findings and the table of every cell."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from sweep.analysis import CACHING_AXIS
from sweep.report import heatmaps, lines
from sweep.report.cells import HELP_THRESHOLD, caching_cells, cell_status
from sweep.report.context import Context, Tick, blank, img, y_tick_fn
from sweep.report.findings import Finding, caching_finding, cells_text
from sweep.report.fmt import gain, label, slug, sort_values
from sweep.report.heatmaps import Marks, Panel
from sweep.report.roles import BASELINE
from sweep.report.tables import cells_table, folded
from sweep.report.trends import metric_lines

# ---- a sweep that compares caching with off ----------------------------------------------------


def by_cell(frame: pd.DataFrame, x: str | None, y: str | None, col: str) -> pd.Series:
    """``col`` indexed by (y, x), by the one axis, or by position."""
    if x and y:
        return frame.set_index([y, x])[col]
    if x or y:
        return frame.set_index(x or y)[col]
    return frame[col].reset_index(drop=True)


def speedup_panel(sub: pd.DataFrame, x: str | None, y: str | None) -> Panel:
    return Panel(
        "TTFT p99 speed-up from caching (off / on)",
        by_cell(sub, x, y, "ttft_p99_speedup"),
        lambda v: f"{v:.2f}x",
        "RdYlGn",
        center=1.0,
        log=True,
        hide_overloaded=True,
    )


def compare_panels(sub: pd.DataFrame, x: str | None, y: str | None) -> list[Panel]:
    return [
        Panel(
            "Prefix-cache hit rate (tokens hit / prompt tokens)",
            by_cell(sub, x, y, "prefix_hit_rate"),
            lambda v: f"{v * 100:.0f}%",
            "viridis",
            vmin=0.0,
            vmax=1.0,
        ),
        speedup_panel(sub, x, y),
        Panel(
            "Throughput gain from caching (requests/s)",
            by_cell(sub, x, y, "throughput_gain"),
            gain,
            "RdYlGn",
            bar_fmt=lambda v: f"{v * 100:+.0f}%",
            center=0.0,
            floor=-1.0,
        ),
    ]


def compare_marks(
    sub: pd.DataFrame,
    x: str,
    y: str,
    status: dict[tuple[Any, ...], str],
    mode: str,
    xs: list[Any],
    ys: list[Any],
) -> Marks:
    marks = Marks(blank={(yv, xv): blank(status, (xv, yv), mode) for yv in ys for xv in xs})
    for _, r in sub.iterrows():
        cell = (r[y], r[x])
        if r["verdict"] in ("overloaded in both", "ends the overload", "overloaded with caching"):
            marks.state[cell] = "overloaded"
            marks.overload_text[cell] = {
                "overloaded in both": "overloaded",
                "ends the overload": "off overloaded",
                "overloaded with caching": "on overloaded",
            }[r["verdict"]]
        elif r["transient"]:
            marks.state[cell] = "transient"
        if r["verdict"] == "stops helping":
            marks.boxed.add(cell)
    return marks


@dataclass
class Cells:
    """What one section measured, for a figure drawn over several sections (facets): per caching
    mode its :func:`caching_cells` rows, the cells' status, and the axes' values and ticks."""

    subs: dict[str, pd.DataFrame]
    status: dict[tuple[Any, ...], str]
    xs: list[Any]
    ys: list[Any]
    tick: Tick


def section_compare(
    ctx: Context, df: pd.DataFrame, title: str, draw: bool = True, cmp: pd.DataFrame | None = None
) -> tuple[str, list[Finding], Cells]:
    """HTML for one model (and facet value) of a sweep that varies caching against ``off``; with
    ``draw`` False, without figures (the caller draws :class:`Cells` of several sections at once).
    ``cmp``: the :func:`caching_cells` rows of ``df``'s cells when the caller has them already."""
    x, y = ctx.roles.x, ctx.roles.y
    keys = [c for c in (x, y) if c is not None]
    cmp = caching_cells(df, keys) if cmp is None else cmp
    status = cell_status(df, [*keys, CACHING_AXIS]) if keys else {}
    tick, capacity = y_tick_fn(df, y)
    xs = sort_values(df[x].tolist()) if x else []
    ys = sort_values(df[y].tolist(), capacity) if y else []
    parts: list[str] = []
    findings: list[Finding] = []
    cells = Cells({}, status, xs, ys, tick)
    for mode in ctx.roles.modes:
        sub = cmp[cmp[CACHING_AXIS] == mode]
        if sub.empty:
            continue
        cells.subs[mode] = sub
        mode_title = f"{title}: caching '{mode}' vs 'off'"
        parts.append(f"<h3>Caching <code>{html.escape(mode)}</code> against <code>off</code></h3>")
        panels = compare_panels(sub, x, y) if draw else []
        if draw and x and y:
            marks = compare_marks(sub, x, y, status, mode, xs, ys)
            fig = heatmaps.new_figure(16, 1.6 + 0.55 * max(len(ys), 3))
            for i, (ax, panel) in enumerate(zip(fig.subplots(1, 3), panels, strict=True)):
                heatmaps.heatmap(ax, panel, xs, ys, (label(x), label(y) if i == 0 else ""), tick, marks)
            legend = heatmaps.legend_text(marks, f"caching helps < {HELP_THRESHOLD:.0%}")
            fig.suptitle(mode_title + legend, fontsize=12)
            name = ctx.save(fig, f"{slug(title)}-{mode}-heatmaps")
            parts.append(
                img(
                    name,
                    f"Heatmaps over {label(x)} and {label(y)}: hit rate, TTFT p99 speed-up and"
                    f" throughput gain of caching '{mode}'",
                )
            )
        elif draw and (x or y):
            axis = x or y
            assert axis is not None
            parts.append(_compare_lines(ctx, sub, axis, xs if x else ys, panels, mode_title, title, mode))
        findings.append(_finding(df, sub, title, mode, status, (x, y, tick)))
        parts.append(_callout(sub, mode, x, y, tick))
        parts.append(folded(f"Every cell ({len(sub)})", cells_table(sub, x, y)))
    if draw:
        parts.append(metric_lines(ctx, df, title, tick, capacity))
    return "\n".join(parts), findings, cells


def _finding(
    df: pd.DataFrame,
    sub: pd.DataFrame,
    title: str,
    mode: str,
    status: dict[tuple[Any, ...], str],
    where: tuple[str | None, str | None, Tick],
) -> Finding:
    x, y, tick = where
    gpus = df["gpu.name"].dropna().unique()
    on_gpu = f" on {gpus[0]}" if len(gpus) == 1 and "gpu.name" not in (x, y) else ""
    finding = caching_finding(f"{title}{on_gpu}: caching '{mode}' vs 'off'", sub, x, y, tick)
    blocked = {k[:-1] for k, v in status.items() if v != "ok" and k[-1] in (mode, BASELINE)}
    if blocked:
        kinds = sorted({v for k, v in status.items() if v != "ok" and k[-1] in (mode, BASELINE)})
        finding.lines.append(
            f"{len(blocked)} of {len(sub)} cells lack an ok run with or without caching"
            f" ({' / '.join(k.replace('_', ' ') for k in kinds)}): see the failures table."
        )
    return finding


def _callout(sub: pd.DataFrame, mode: str, x: str | None, y: str | None, tick: Tick) -> str:
    measured = sub[sub["verdict"] != "not measured"]
    stops = measured[measured["verdict"] == "stops helping"]
    if measured.empty:
        return ""
    if len(stops):
        cells = cells_text(stops, x, y, tick, measured[y].unique().tolist() if y else (), limit=50)
        return (
            f'<p class="callout"><b>Caching stops helping</b> (throughput and TTFT p99 both improve by less'
            f" than {HELP_THRESHOLD:.0%}) in {len(stops)} of {len(measured)} measured cells:"
            f" {html.escape(cells)}.</p>"
        )
    helped = measured[measured["helps"]]
    return (
        f'<p class="good">Caching <code>{html.escape(mode)}</code> helps (TTFT p99 or throughput'
        f" {HELP_THRESHOLD:.0%} better, or an overload ended) in {len(helped)} of {len(measured)} measured"
        " cells.</p>"
    )


def _compare_lines(
    ctx: Context,
    sub: pd.DataFrame,
    axis: str,
    values: list[Any],
    panels: list[Panel],
    mode_title: str,
    title: str,
    mode: str,
) -> str:
    """One axis varied: hit rate, speed-up and gain as lines; overloaded points named, not drawn."""
    fig = heatmaps.new_figure(16, 4.2)
    no_help = sub[sub["verdict"] == "stops helping"]
    over = sub[sub["verdict"].isin(["overloaded in both", "ends the overload", "overloaded with caching"])]
    for ax, panel in zip(fig.subplots(1, 3), panels, strict=True):
        positions = lines.x_axis(ax, values, label(axis))
        pos_of = dict(zip(values, positions, strict=True))
        pts = [(pos_of[v], panel.values.get(v, np.nan)) for v in values]
        ax.plot([p for p, _ in pts], [float(s) for _, s in pts], marker="o", color="#1f77b4")
        for v in no_help[axis]:
            ax.axvline(pos_of[v], color="grey", linestyle=":", linewidth=1)
        if panel.hide_overloaded:
            for v in over[axis]:
                ax.annotate(
                    "overloaded",
                    (pos_of[v], 0.5),
                    xycoords=("data", "axes fraction"),
                    rotation=90,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="#555555",
                    style="italic",
                )
        if panel.center is not None:
            ax.axhline(panel.center, color="black", linewidth=0.8)
        ax.set_title(panel.title, fontsize=11)
        ax.grid(alpha=0.3)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos, fmt=panel.fmt: fmt(v)))
    fig.axes[0].set_ylim(0, 1.02)
    dotted = f"   (dotted: caching helps < {HELP_THRESHOLD:.0%})" if len(no_help) else ""
    fig.suptitle(mode_title + dotted, fontsize=12)
    name = ctx.save(fig, f"{slug(title)}-{mode}-lines")
    return img(
        name, f"Hit rate, TTFT p99 speed-up and throughput gain of caching '{mode}' against {label(axis)}"
    )
