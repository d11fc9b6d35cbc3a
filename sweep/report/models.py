"""One section per model. Without facets (axes other than load, memory and caching), the
section's figures and tables as :mod:`sweep.report.sections` draws them. With facets, the figures
are drawn once per model over every facet value (small multiples: one row per facet value, one
column per caching mode) and each facet value's callout, findings and cell table fold away:
a 6,804-run grid gives six figures, not a hundred.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from sweep import analysis
from sweep.analysis import CACHING_AXIS
from sweep.report import heatmaps
from sweep.report.absolute import section_absolute
from sweep.report.cells import HELP_THRESHOLD, cell_states, cell_status
from sweep.report.context import Context, blank, img, y_tick_fn
from sweep.report.digest import caching_sentences, model_cells
from sweep.report.findings import Finding
from sweep.report.fmt import label, num, slug, sort_values
from sweep.report.heatmaps import Marks, Panel
from sweep.report.page import Section
from sweep.report.roles import sort_modes
from sweep.report.sections import Cells, compare_marks, section_compare, speedup_panel
from sweep.report.tables import folded

#: Facet values drawn in one model's figure; the rest are in the tables and explore.html.
MAX_FACET_ROWS = 12


def facet_groups(df: pd.DataFrame, facets: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """(``GPU A100-80GB, system prompts 16``, runs) per facet value, in display order."""
    if not facets:
        return [("", df)]
    orders = {f: sort_values(df[f].dropna().unique().tolist()) for f in facets}

    def rank(facet: str, value: Any) -> int:
        return orders[facet].index(value) if value in orders[facet] else len(orders[facet])

    groups = [
        (key if isinstance(key, tuple) else (key,), group)
        for key, group in df.groupby(facets, dropna=False, sort=False)
    ]
    groups.sort(key=lambda kv: tuple(rank(f, v) for f, v in zip(facets, kv[0], strict=True)))
    return [(facet_title(facets, values), group) for values, group in groups]


def facet_title(facets: list[str], values: tuple[Any, ...]) -> str:
    return ", ".join(
        (str(v) if c == "gpu.name" else f"{label(c)} {num(v)}") for c, v in zip(facets, values, strict=True)
    )


@dataclass
class ModelJob:
    """One model's part of the page: what a worker process needs to draw it."""

    ctx: Context
    mdf: pd.DataFrame
    model: Any
    index: int  # 1-based, names the model's figure files
    varied: list[str]


@dataclass
class ModelResult:
    model: str
    sentences: list[str]  # what caching buys, for the findings per model
    section: Section
    findings: list[Finding]  # the rest, folded


def model_job(job: ModelJob) -> ModelResult:
    """One model's sentences, section and findings (in a worker process or here)."""
    ctx = replace(job.ctx, figures=0, prefix=f"{job.index:02d}-")
    mdf, name = job.mdf, str(job.model)
    cmp = model_cells(mdf, job.varied) if ctx.roles.compare else None
    sentences = caching_sentences(mdf, job.varied, cmp)
    runs = mdf["status"].value_counts().to_dict()
    gpu = ", ".join(sorted(map(str, mdf["gpu.name"].dropna().unique())))
    sub = f"{len(mdf)} runs ({', '.join(f'{n} {k}' for k, n in sorted(runs.items()))}) on {gpu}"
    body, found = _model_body(ctx, mdf, name, cmp)
    return ModelResult(name, sentences, Section(slug(name), name, body, sub), found)


def _model_body(
    ctx: Context, mdf: pd.DataFrame, model: str, cmp: pd.DataFrame | None
) -> tuple[str, list[Finding]]:
    facets = [f for f in ctx.roles.facets if mdf[f].nunique(dropna=False) > 1]
    groups = facet_groups(mdf, facets)
    if len(groups) == 1:
        if ctx.roles.compare:
            body, found, _ = section_compare(ctx, mdf, model, cmp=cmp)
            return body, found
        return section_absolute(ctx, mdf, model), []
    parts, found, drawn = [], [], []
    for title, gdf in groups:
        full = f"{model} ({title})"
        if ctx.roles.compare:
            mine = None if cmp is None else _facet_rows(cmp, facets, gdf)
            body, more, cells = section_compare(ctx, gdf, full, draw=False, cmp=mine)
            found.extend(more)
            drawn.append((title, cells))
            head = _facet_summary(cells)
        else:
            body = section_absolute(ctx, gdf, full, draw=False)
            drawn.append((title, gdf))
            head = ""
        parts.append(folded(f"{html.escape(title)}{head}", f'<div class="facet">{body}</div>'))
    figure = _facet_figure(ctx, model, facets, drawn)
    lead = (
        f"<p>One row per {html.escape(', '.join(label(f) for f in facets))} value; each value's cells,"
        " callouts and findings fold away below.</p>"
    )
    return figure + lead + "\n".join(parts), found


def _facet_rows(cmp: pd.DataFrame, facets: list[str], gdf: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``cmp`` in the facet value of ``gdf``."""
    pick = pd.Series(True, index=cmp.index)
    for f in facets:
        value = gdf[f].iloc[0]
        pick &= cmp[f].isna() if pd.isna(value) else cmp[f] == value
    return cmp[pick]


def _facet_summary(cells: Cells) -> str:
    bits = []
    for mode, sub in cells.subs.items():
        measured = sub[sub["verdict"] != "not measured"]
        if len(measured):
            bits.append(f"'{mode}' helps in {int(measured['helps'].sum())} of {len(measured)} cells")
    return f": {'; '.join(bits)}" if bits else ""


def _facet_figure(ctx: Context, model: str, facets: list[str], drawn: list[tuple[str, Any]]) -> str:
    """Small multiples: one row per facet value, one column per caching mode (TTFT p99 speed-up
    against off, or TTFT p99 itself in a sweep without off), one colour scale."""
    x, y = ctx.roles.x, ctx.roles.y
    if not (x and y):
        return ""
    shown = drawn[:MAX_FACET_ROWS]
    cells: list[tuple[int, int, Panel, Marks, list[Any], list[Any], Any]] = []
    modes: list[Any] = []
    for row, (_, data) in enumerate(shown):
        if ctx.roles.compare:
            assert isinstance(data, Cells)
            for mode, sub in data.subs.items():
                if mode not in modes:
                    modes.append(mode)
                panel = speedup_panel(sub, x, y)
                marks = compare_marks(sub, x, y, data.status, mode, data.xs, data.ys)
                cells.append((row, modes.index(mode), panel, marks, data.xs, data.ys, data.tick))
        else:
            for mode, panel, marks, xs, ys, tick in _absolute_panels(data, x, y):
                if mode not in modes:
                    modes.append(mode)
                cells.append((row, modes.index(mode), panel, marks, xs, ys, tick))
    if not cells:
        return ""
    n_rows, n_cols = len(shown), len(modes)
    n_y = max(len(c[5]) for c in cells)
    height = 0.9 + n_rows * (0.45 + 0.32 * max(n_y, 2))
    fig = heatmaps.new_figure(4.6 * n_cols + 2.2, height, layout=None)
    fig.set_dpi(80)  # a big grid of small panels: 80 dpi reads as well and renders in two thirds the time
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    fig.subplots_adjust(
        left=0.16, right=0.9, bottom=0.55 / height, top=1 - 0.95 / height, hspace=0.75, wspace=0.25
    )
    norm = heatmaps.shared_norm([c[2] for c in cells])
    image = None
    for row, col, panel, marks, xs, ys, tick in cells:
        ax = axes[row][col]
        panel.title = f"{shown[row][0]}: {'caching ' + str(modes[col])}"
        image = heatmaps.heatmap(
            ax,
            panel,
            xs,
            ys,
            (label(x) if row == n_rows - 1 else "", label(y) if col == 0 and row == n_rows // 2 else ""),
            tick,
            marks,
            norm=norm,
            bar=False,
        )
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=8, labelbottom=row == n_rows - 1, labelleft=col == 0)
        for text in ax.texts:
            text.set_fontsize(7)
    for ax in axes.flat:
        if not ax.has_data():
            ax.set_visible(False)
    if image is not None:
        heatmaps.colour_bar(list(axes.flat), image, cells[0][2], norm)
    what = "TTFT p99 speed-up from caching (off / on)" if ctx.roles.compare else "TTFT p99"
    legend = heatmaps.legend_text(
        _union_marks([c[3] for c in cells]), f"caching helps < {HELP_THRESHOLD:.0%}"
    )
    rows_are = f"one row per {', '.join(label(f) for f in facets)}"
    named = f"; {legend.strip()[1:-1]}" if legend else ""  # legend_text's "   (a; b)" without its brackets
    fig.suptitle(f"{model}: {what}\n{rows_are}{named}", fontsize=10)
    name = ctx.save(fig, f"{slug(model)}-facets")
    more = (
        f'<p class="sub">{len(drawn) - len(shown)} more {html.escape(", ".join(label(f) for f in facets))}'
        ' values are in the tables below and in <a href="explore.html">explore.html</a>.</p>'
        if len(drawn) > len(shown)
        else ""
    )
    return img(name, f"{model}: {what} over {label(x)} and {label(y)}, per facet value") + more


def _union_marks(all_marks: list[Marks]) -> Marks:
    """The marks of several panels as one (for a legend that names every mark drawn)."""
    out = Marks()
    for i, m in enumerate(all_marks):
        out.state.update({(i, k): v for k, v in m.state.items()})
        out.boxed |= {(i, k) for k in m.boxed}
    return out


def _absolute_panels(
    gdf: pd.DataFrame, x: str, y: str
) -> list[tuple[Any, Panel, Marks, list[Any], list[Any], Any]]:
    """TTFT p99 per caching mode over load x memory (overloaded cells say so)."""
    tick, capacity = y_tick_fn(gdf, y)
    xs, ys = sort_values(gdf[x].tolist()), sort_values(gdf[y].tolist(), capacity)
    modes = sort_modes(gdf[CACHING_AXIS].dropna().unique().tolist()) if CACHING_AXIS in gdf else [None]
    out = []
    for mode in modes:
        sub = gdf[gdf[CACHING_AXIS] == mode] if mode is not None else gdf
        means = analysis.cell_means(sub, [x, y], ["ttft_p99_s"])
        status = cell_status(sub, [x, y])
        marks = Marks(blank={(yv, xv): blank(status, (xv, yv)) for yv in ys for xv in xs})
        for _, r in cell_states(sub, [x, y]).iterrows():
            if r["state"] in heatmaps.HATCHES:
                marks.state[(r[y], r[x])] = r["state"]
        panel = Panel(
            "TTFT p99 (s)",
            means.set_index([y, x])["ttft_p99_s"],
            lambda v: f"{v:.3g}",
            "magma_r",
            hide_overloaded=True,
        )
        out.append((mode, panel, marks, xs, ys, tick))
    return out
