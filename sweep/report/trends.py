"""A metric against load, one line per memory size and caching mode (see :mod:`sweep.report.lines`
for how lines are drawn), with the SLO's limit on it."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from sweep import analysis
from sweep.analysis import CACHING_AXIS
from sweep.report import heatmaps, lines
from sweep.report.cells import cell_states
from sweep.report.context import Context, Tick, img
from sweep.report.fmt import label, num, seconds, slug, sort_values
from sweep.report.roles import sort_modes
from sweep.slo import Slo


def metric_lines(
    ctx: Context,
    df: pd.DataFrame,
    title: str,
    tick: Tick,
    capacity: dict[Any, float],
    metric: str = "ttft_p99_s",
) -> str:
    """``metric`` against load, one colour per memory size, one line style per caching mode; the
    SLO's limit on it drawn as a line."""
    x, y = ctx.roles.x, ctx.roles.y
    if x is None or metric not in df:
        return ""
    keys = [c for c in (x, y, CACHING_AXIS) if c is not None and c in df]
    s = analysis.summarize(df, keys, [metric])
    within = s["n_ok"].max() <= 1 and f"{metric}_ci95_run" in df  # one run per point: the run's own CI
    if within:
        s[f"{metric}_ci95"] = analysis.cell_means(df, keys, [f"{metric}_ci95_run"])[f"{metric}_ci95_run"]
    bars = "95% CI within the run" if within else "95% CI over seeds"
    states = {tuple(r[k] for k in keys): r["state"] for _, r in cell_states(df, keys).iterrows()}
    xs, ys = sort_values(df[x].tolist()), sort_values(df[y].tolist(), capacity) if y else [None]
    modes = sort_modes(df[CACHING_AXIS].dropna().unique().tolist()) if CACHING_AXIS in df else [None]
    fig = heatmaps.new_figure(13, 5.2)
    ax = fig.subplots()
    positions = lines.x_axis(ax, xs, label(x))
    pos_of = dict(zip(xs, positions, strict=True))
    drawn: list[lines.Series] = []
    for i, yv in enumerate(ys):
        where = tick(yv).replace("\n", ", ") + ", " if y is not None else ""
        for mode in modes:
            pick = s if mode is None else s[s[CACHING_AXIS] == mode]
            pick = pick[pick[y] == yv] if y is not None else pick
            named = {x: None, y: yv, CACHING_AXIS: mode}
            at = {v: states.get(tuple(v if k == x else named[k] for k in keys), "unknown") for v in pick[x]}
            one = lines.series_of(pick, x, metric, pos_of, [f"{where}caching {mode}"], mode, i, at)
            if one is not None:
                drawn.append(one)
    merged = lines.merge_same(drawn)
    limit = _slo_limit(ctx.slo, metric)
    lines.draw(ax, merged, ax.get_xscale() == "log", seconds if metric.endswith("_s") else num, limit)
    ax.set_ylabel(label(metric).replace(" (s)", "") if metric != "ttft_p99_s" else "TTFT p99")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), title=label(y) if y else None)
    head = "TTFT p99" if metric == "ttft_p99_s" else metric
    ax.set_title(
        f"{title}: {head} against {label(x)}\n(solid: caching on, dashed: off; bars: {bars};"
        " x: overloaded, hollow: did not settle)",
        fontsize=10,
    )
    name = ctx.save(fig, f"{slug(title)}-{metric.removesuffix('_s').replace('_', '-')}-lines")
    same = [lines.same_label(s.names).removesuffix(" (same)") for s in merged if len(s.names) > 1]
    where = "within each run (one run per point)" if within else "over seeds"
    notes = [f"Bars: 95% confidence interval {where}; a bar that stops at the bottom edge reaches 0."]
    if same:
        notes.append(
            f"Drawn once, as they agree within {lines.SAME_RTOL:.0%} at every point (same): "
            + "; ".join(same)
            + "."
        )
    if limit is not None:
        notes.append(f"Red line: the SLO, {limit[1]}.")
    caption = f'<p class="sub">{html.escape(" ".join(notes))}</p>'
    return (
        f"<h3>{html.escape(head)} with caching on and off</h3>"
        + img(name, f"{head} against {label(x)}")
        + caption
    )


def _slo_limit(slo: Slo | None, metric: str) -> tuple[float, str] | None:
    for limit in slo.limits if slo else ():
        if limit.metric == metric:
            return limit.value, limit.describe()
    return None
