"""An HTML report of a sweep: what prefix caching buys, per model, in pictures and tables.

``write_report(DIR)`` writes ``DIR/report/``::

    index.html        opens from the file system: no server, no internet, images beside it
    fig01-*.png ...   matplotlib (Agg) figures
    summary.csv       one row per cell (every varied axis), mean and 95% CI over seeds
    caching.csv       each caching mode against ``off``, cell by cell (when the sweep varies caching)

Roles of the axes (inferred from the data and ``spec.yaml``):

    x ("concurrency")  workload.users, else workload.session_rate / workload.request_rate,
                       else the first other varied numeric axis
    y ("memory")       engine.kv_budget_gib / gpu.memory_gib / engine.gpu_memory_utilization /
                       gpu.name, whichever the sweep varies (labelled with the KV capacity in tokens)
    caching            engine.prefix_caching; compared against ``off`` when both are present
    facets             every other varied axis: one section per model and facet value

With x and y both varied the page shows heatmaps over x by y; with one of them it shows lines;
with neither, tables only. Caching "stops helping" in a cell where it improves neither throughput
nor TTFT p99 by :data:`HELP_THRESHOLD` (5%) or more.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

from simcore.errors import ConfigError
from sweep import analysis
from sweep.analysis import CACHING_AXIS, SweepInfo

HELP_THRESHOLD = 0.05
BASELINE = "off"
#: Metrics in summary.csv (mean and CI of each).
SUMMARY_METRICS: tuple[str, ...] = (
    "throughput_rps",
    "output_tokens_per_s",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "e2e_p99_s",
    "prefix_hit_rate",
    "prefill_reduction",
    "prefill_tokens_computed",
    "preemptions",
    "kv_capacity_tokens",
    "kv_peak_util",
)
COMPARE_METRICS: tuple[str, ...] = (*analysis.COMPARE_METRICS, "prefix_hit_rate")
X_CANDIDATES: tuple[str, ...] = ("workload.users", "workload.session_rate", "workload.request_rate")
# Memory axes in order of preference when the spec names several; gpu.name last because a GPU
# changes speed as well as memory (and gpu.memory_gib follows it).
Y_CANDIDATES: tuple[str, ...] = (
    "engine.kv_budget_gib",
    "gpu.memory_gib",
    "engine.gpu_memory_utilization",
    "gpu.name",
)
LABELS: dict[str, str] = {
    "workload.users": "concurrent users",
    "workload.session_rate": "new sessions per second",
    "workload.request_rate": "requests per second",
    "engine.kv_budget_gib": "KV cache budget (GiB)",
    "gpu.memory_gib": "GPU memory (GiB)",
    "engine.gpu_memory_utilization": "GPU memory utilisation",
    "gpu.name": "GPU",
}
_MODE_STYLE = {"off": "--", "session": ":", "prefix": "-"}


# ------------------------------------------------------------------------------------ formatting


def _num(value: Any) -> str:
    """A compact number: 64, 0.5, 1.25, 12.3k."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
        number = int(value)
        return f"{number:,}" if abs(number) < 10_000 else _tokens(number)
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return str(value)


def _tokens(value: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def _seconds(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    if value < 0.01:
        return f"{value * 1000:.2g} ms"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.3g} s"


def _pct(value: float, signed: bool = True) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value * 100:+.0f}%" if signed else f"{value * 100:.0f}%"


def _gain(value: float) -> str:
    """A relative change; one decimal below 10% so that 4.6% does not read as the 5% threshold."""
    return f"{value * 100:+.1f}%" if abs(value) < 0.1 else f"{value * 100:+.0f}%"


def _times(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.2f}x"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "all"


def _sort_values(values: Sequence[Any], key: dict[Any, float] | None = None) -> list[Any]:
    """Axis values in display order: numbers ascending; strings by ``key`` (e.g. KV tokens) then name."""
    vals = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in vals):
        return sorted(vals, key=lambda v: (math.isnan(v), v) if isinstance(v, float) else (False, v))
    k = key or {}
    return sorted(vals, key=lambda v: (k.get(v, math.inf), _natural(str(v))))


def _natural(text: str) -> list[tuple[int, Any]]:
    """Sort key that puts "8B" before "70B": digit runs compare as numbers."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p]


# ------------------------------------------------------------------------------------------ roles


@dataclass(frozen=True)
class Roles:
    """Which column plays which part in the pictures (see the module docstring)."""

    x: str | None
    y: str | None
    compare: bool
    modes: tuple[str, ...]
    facets: tuple[str, ...]


def _determined(df: pd.DataFrame, col: str, by: list[str]) -> bool:
    """True when ``col`` has one value within every group of ``by`` (it follows from them)."""
    if not by:
        return df[col].nunique(dropna=False) <= 1
    return bool((df.groupby(by, dropna=False)[col].nunique(dropna=False) <= 1).all())


def infer_roles(df: pd.DataFrame, info: SweepInfo) -> Roles:
    varied = analysis.axes(df)
    grid = {{"model": "model.name", "gpu": "gpu.name"}.get(k, k) for k in info.grid_keys}
    x = next((c for c in X_CANDIDATES if c in varied), None)
    preferred = [c for c in Y_CANDIDATES if c in varied and c in grid]
    fallback = [
        c
        for c in ("engine.kv_budget_gib", "engine.gpu_memory_utilization", "gpu.name", "gpu.memory_gib")
        if c in varied
    ]
    y = (preferred or fallback or [None])[0]
    taken = {"model.name", CACHING_AXIS, x, y}
    rest = [c for c in varied if c not in taken]
    numeric = [c for c in rest if pd.api.types.is_numeric_dtype(df[c])]
    if x is None and numeric:
        x = numeric[0]
    elif x is None and y is not None and pd.api.types.is_numeric_dtype(df[y]):
        x, y = y, None
    if y is None:
        y = next((c for c in rest if c != x), None)
    core = [c for c in ("model.name", CACHING_AXIS, x, y) if c is not None and c in df.columns]
    facets = tuple(c for c in rest if c not in (x, y) and not _determined(df, c, core))
    caching_values = [str(v) for v in df[CACHING_AXIS].dropna().unique()] if CACHING_AXIS in df else []
    compare = CACHING_AXIS in varied and BASELINE in caching_values
    order = ["off", "session", "prefix"]
    modes = tuple(sorted(caching_values, key=lambda v: (order.index(v) if v in order else 9, v)))
    if compare:
        modes = tuple(m for m in modes if m != BASELINE)
    return Roles(x=x, y=y, compare=compare, modes=modes, facets=facets)


# ---------------------------------------------------------------------------------------- figures


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # Agg explicitly: no pyplot, no display, no global state
    return fig


@dataclass
class Panel:
    """One quantity over the cells of a section, ready to draw as a heatmap or a line."""

    title: str
    values: pd.Series  # indexed by (y, x) or by x alone
    fmt: Callable[[float], str]
    cmap: str
    center: float | None = None  # diverging colours around this value
    floor: float | None = None  # the lowest value the quantity can take (keeps the colour bar honest)
    log: bool = False  # colour by log(value): for ratios, so 0.5x and 2x are equally far from 1x
    bar_fmt: Callable[[float], str] | None = None  # colour bar ticks, when not ``fmt``
    vmin: float | None = None
    vmax: float | None = None


def _norm(values: np.ndarray, panel: Panel) -> Normalize:
    """Colour scale of a panel; ``values`` are already log-transformed when ``panel.log``."""
    finite = values[np.isfinite(values)]
    lo = panel.vmin if panel.vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = panel.vmax if panel.vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if panel.center is not None:
        center = math.log(panel.center) if panel.log else panel.center
        span = max(hi - center, center - lo, 0.05)
        low = center - span if panel.floor is None else max(center - span, panel.floor)
        return TwoSlopeNorm(vcenter=center, vmin=min(low, lo), vmax=center + span)
    if hi <= lo:
        hi = lo + 1e-9
    return Normalize(vmin=lo, vmax=hi)


def _text_colour(cmap: Colormap, norm: Normalize, value: float) -> str:
    r, g, b, _ = cmap(norm(value))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _heatmap(
    ax: Axes,
    panel: Panel,
    xs: list[Any],
    ys: list[Any],
    xlabel: str,
    ylabel: str,
    ytick: Callable[[Any], str],
    blank: dict[tuple[Any, Any], str],
    outline: set[tuple[Any, Any]],
) -> None:
    grid = np.full((len(ys), len(xs)), np.nan)
    for (yv, xv), value in panel.values.items():
        if yv in ys and xv in xs and value is not None and np.isfinite(value):
            grid[ys.index(yv), xs.index(xv)] = value
    cmap = colormaps[panel.cmap].with_extremes(bad="#e6e6e6")
    with np.errstate(divide="ignore", invalid="ignore"):
        shown = np.log(grid) if panel.log else grid
    norm = _norm(shown, panel)
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, origin="lower", aspect="auto")
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            value = grid[i, j]
            if np.isfinite(value):
                ax.text(
                    j,
                    i,
                    panel.fmt(value),
                    ha="center",
                    va="center",
                    fontsize=9,
                    color=_text_colour(cmap, norm, shown[i, j]),
                )
            else:
                ax.text(
                    j,
                    i,
                    blank.get((yv, xv), "n/a"),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="#555555",
                    style="italic",
                )
            if (yv, xv) in outline:
                ax.add_patch(
                    Rectangle(
                        (j - 0.46, i - 0.46),
                        0.92,
                        0.92,
                        fill=False,
                        edgecolor="black",
                        linewidth=1.6,
                        linestyle="--",
                    )
                )
    ax.set_xticks(range(len(xs)), [_num(v) for v in xs])
    ax.set_yticks(range(len(ys)), [ytick(v) for v in ys])
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(panel.title, fontsize=11)
    bar = ax.figure.colorbar(image, ax=ax, shrink=0.9)
    if panel.log:
        nice = [0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64]
        lo, hi = float(norm.vmin or 0.0), float(norm.vmax or 0.0)
        bar.set_ticks([math.log(v) for v in nice if lo <= math.log(v) <= hi])
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{math.exp(v):.3g}x"))
    else:
        bar_fmt = panel.bar_fmt or panel.fmt
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: bar_fmt(v)))


def _log_scale(values: Sequence[float]) -> bool:
    finite = [float(v) for v in values if v is not None and np.isfinite(v) and v > 0]
    return len(finite) >= 3 and max(finite) / min(finite) >= 16


def _x_axis(ax: Axes, xs: list[Any], label: str) -> list[Any]:
    """Numbers go on a numeric (log when they span >= 16x) axis; anything else on category positions."""
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) for v in xs)
    if numeric:
        if _log_scale(xs):
            ax.set_xscale("log", base=2)
        ax.set_xticks(list(xs), [_num(v) for v in xs])
        ax.minorticks_off()
        positions = list(xs)
    else:
        positions = list(range(len(xs)))
        ax.set_xticks(positions, [str(v) for v in xs])
    ax.set_xlabel(label)
    return positions


# ----------------------------------------------------------------------------------------- report


@dataclass
class _Context:
    out: Path
    roles: Roles
    figures: int = 0

    def save(self, fig: Figure, name: str) -> str:
        self.figures += 1
        filename = f"fig{self.figures:02d}-{_slug(name)}.png"
        fig.savefig(self.out / filename)
        return filename


def _label(col: str | None) -> str:
    return LABELS.get(col or "", col or "")


def _cell_status(df: pd.DataFrame, keys: list[str]) -> dict[tuple[Any, ...], str]:
    """Per cell of ``keys``: "ok" if any run is ok, else "infeasible" if any is, else "failed"."""
    out: dict[tuple[Any, ...], str] = {}
    for key, group in df.groupby(keys, dropna=False):
        statuses = set(group["status"])
        key_t = key if isinstance(key, tuple) else (key,)
        out[key_t] = "ok" if "ok" in statuses else ("infeasible" if "infeasible" in statuses else "failed")
    return out


def _y_tick_fn(df: pd.DataFrame, y: str | None) -> tuple[Callable[[Any], str], dict[Any, float]]:
    """Tick label for a memory value: the value, its unit and the KV capacity it gave, in tokens."""
    capacity: dict[Any, float] = {}
    if y is not None and "kv_capacity_tokens" in df:
        capacity = df.groupby(y)["kv_capacity_tokens"].mean().dropna().to_dict()

    def tick(value: Any) -> str:
        text = _num(value)
        if y in ("gpu.memory_gib", "engine.kv_budget_gib"):
            text += " GiB"
        if y in Y_CANDIDATES and value in capacity:
            text += f"\n{_tokens(capacity[value])} KV tok"
        return text

    return tick, capacity


def _blank(status: dict[tuple[Any, ...], str], cell: tuple[Any, ...], mode: str | None = None) -> str:
    """What an empty heatmap cell says: why the run, or its baseline, has no number."""
    own = status.get((*cell, mode) if mode is not None else cell, "")
    if own in ("infeasible", "failed"):
        return own
    base = status.get((*cell, BASELINE), "") if mode is not None else ""
    if base in ("infeasible", "failed"):
        return f"off {base}"
    return "n/a" if own != "" else "not run"


def _table(frame: pd.DataFrame, cls: str = "") -> str:
    return frame.to_html(index=False, escape=True, na_rep="-", border=0, classes=cls or None)


@dataclass
class _Finding:
    title: str
    lines: list[str]


def _section_compare(ctx: _Context, df: pd.DataFrame, title: str, slug: str) -> tuple[str, list[_Finding]]:
    """HTML for one model (and facet value) of a sweep that varies caching against ``off``."""
    roles = ctx.roles
    x, y = roles.x, roles.y
    keys = [c for c in (x, y) if c is not None]
    cmp = analysis.compare(df, CACHING_AXIS, BASELINE, metrics=COMPARE_METRICS, by=keys)
    cmp["ttft_p99_speedup"] = 1 / cmp["ttft_p99_s_ratio"]
    cmp["throughput_gain"] = cmp["throughput_rps_ratio"] - 1
    measurable = cmp["ttft_p99_speedup"].notna() & cmp["throughput_gain"].notna()
    cmp["helps"] = (cmp["ttft_p99_speedup"] >= 1 + HELP_THRESHOLD) | (
        cmp["throughput_gain"] >= HELP_THRESHOLD
    )
    cmp["stops_helping"] = measurable & ~cmp["helps"]
    status = _cell_status(df, [*keys, CACHING_AXIS]) if keys else {}
    tick, capacity = _y_tick_fn(df, y)
    xs = _sort_values(df[x].tolist()) if x else []
    ys = _sort_values(df[y].tolist(), capacity) if y else []
    parts: list[str] = []
    findings: list[_Finding] = []

    for mode in roles.modes:
        sub = cmp[cmp[CACHING_AXIS] == mode]
        if sub.empty:
            continue
        mode_title = f"{title}: caching '{mode}' vs 'off'"
        parts.append(f"<h3>Caching <code>{html.escape(mode)}</code> against <code>off</code></h3>")
        panels = [
            Panel(
                "Prefix-cache hit rate (tokens hit / prompt tokens)",
                _index(sub, x, y, "prefix_hit_rate"),
                lambda v: f"{v * 100:.0f}%",
                "viridis",
                vmin=0.0,
                vmax=1.0,
            ),
            Panel(
                "TTFT p99 speed-up from caching (off / on)",
                _index(sub, x, y, "ttft_p99_speedup"),
                lambda v: f"{v:.2f}x",
                "RdYlGn",
                center=1.0,
                log=True,
            ),
            Panel(
                "Throughput gain from caching (requests/s)",
                _index(sub, x, y, "throughput_gain"),
                _gain,
                "RdYlGn",
                bar_fmt=lambda v: f"{v * 100:+.0f}%",
                center=0.0,
                floor=-1.0,
            ),
        ]
        no_help = sub[sub["stops_helping"]]
        if x and y:
            fig = _new_figure(16, 1.6 + 0.55 * max(len(ys), 3))
            axs = fig.subplots(1, 3)
            blank = {(yv, xv): _blank(status, (xv, yv), mode) for yv in ys for xv in xs}
            outline = {(r[y], r[x]) for _, r in no_help.iterrows()}
            for i, (ax, panel) in enumerate(zip(axs, panels, strict=True)):
                _heatmap(ax, panel, xs, ys, _label(x), _label(y) if i == 0 else "", tick, blank, outline)
            fig.suptitle(f"{mode_title}   (dashed box: caching helps < {HELP_THRESHOLD:.0%})", fontsize=12)
            name = ctx.save(fig, f"{slug}-{mode}-heatmaps")
            parts.append(
                _img(
                    name,
                    f"Heatmaps over {_label(x)} and {_label(y)}: hit rate, TTFT p99 "
                    f"speed-up and throughput gain of caching '{mode}'",
                )
            )
        elif x or y:
            axis = x or y
            assert axis is not None
            values = xs if x else ys
            fig = _new_figure(16, 4.2)
            axs = fig.subplots(1, 3)
            for ax, panel in zip(axs, panels, strict=True):
                series = panel.values
                positions = _x_axis(ax, values, _label(axis))
                pos_of = dict(zip(values, positions, strict=True))
                pts = [(pos_of[v], series.get(v, np.nan)) for v in values]
                ax.plot([p for p, _ in pts], [float(s) for _, s in pts], marker="o", color="#1f77b4")
                for v in no_help[axis]:
                    ax.axvline(pos_of[v], color="grey", linestyle=":", linewidth=1)
                if panel.center is not None:
                    ax.axhline(panel.center, color="black", linewidth=0.8)
                ax.set_title(panel.title, fontsize=11)
                ax.grid(alpha=0.3)
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos, fmt=panel.fmt: fmt(v)))
            axs[0].set_ylim(0, 1.02)
            fig.suptitle(f"{mode_title}   (dotted: caching helps < {HELP_THRESHOLD:.0%})", fontsize=12)
            name = ctx.save(fig, f"{slug}-{mode}-lines")
            parts.append(
                _img(
                    name,
                    f"Hit rate, TTFT p99 speed-up and throughput gain of caching "
                    f"'{mode}' against {_label(axis)}",
                )
            )
        gpus = df["gpu.name"].dropna().unique()
        on_gpu = f" on {gpus[0]}" if len(gpus) == 1 and "gpu.name" not in (x, y) else ""
        finding = _finding(f"{title}{on_gpu}: caching '{mode}' vs 'off'", sub, x, y, tick)
        blocked = [k for k, v in status.items() if v != "ok" and k[-1] in (mode, BASELINE)]
        if blocked:
            lost = {k[:-1] for k in blocked}
            kinds = sorted({status[k] for k in blocked})
            finding.lines.append(
                f"{len(lost)} of {len(sub)} cells have no ok run with or without caching "
                f"({' / '.join(kinds)}): see the failures table."
            )
        findings.append(finding)
        if not no_help.empty:
            measured = sub[sub["helps"] | sub["stops_helping"]]
            cells = _cells_text(no_help, x, y, tick, measured[y].unique().tolist() if y else (), limit=50)
            parts.append(
                f'<p class="callout"><b>Caching stops helping</b> (throughput and TTFT p99 both '
                f"improve by less than {HELP_THRESHOLD:.0%}) in {len(no_help)} of "
                f"{int(sub['stops_helping'].sum() + sub['helps'].sum())} measured cells: "
                f"{html.escape(cells)}.</p>"
            )
        else:
            parts.append(
                f'<p class="good">Caching <code>{html.escape(mode)}</code> helps by '
                f"{HELP_THRESHOLD:.0%} or more in every measured cell.</p>"
            )
        parts.append(_compare_table(sub, x, y))

    parts.append(_ttft_lines(ctx, df, title, slug, tick, capacity))
    return "\n".join(parts), findings


def _index(frame: pd.DataFrame, x: str | None, y: str | None, col: str) -> pd.Series:
    if x and y:
        return frame.set_index([y, x])[col]
    if x or y:
        return frame.set_index(x or y)[col]
    return frame[col].reset_index(drop=True)


def _img(name: str, alt: str) -> str:
    return f'<figure><img src="{html.escape(name)}" alt="{html.escape(alt)}"></figure>'


def _cell_name(row: pd.Series, x: str | None, y: str | None, tick: Callable[[Any], str]) -> str:
    bits = []
    if x:
        bits.append(f"{_num(row[x])} {_label(x)}" if x in LABELS else f"{x}={_num(row[x])}")
    if y:
        bits.append(tick(row[y]).split("\n")[0] if y in Y_CANDIDATES else f"{y}={_num(row[y])}")
    return " at ".join(bits) or "the only cell"


def _cells_text(
    frame: pd.DataFrame,
    x: str | None,
    y: str | None,
    tick: Callable[[Any], str],
    every: Sequence[Any] = (),
    limit: int = 6,
) -> str:
    """Cells named compactly: x values that share the same y values are merged, and a y list equal
    to ``every`` is said so: "4, 16 and 64 concurrent users at every GPU memory; 128 ... at 24 GiB"."""
    if not (x and y):
        names = [_cell_name(r, x, y, tick) for _, r in frame.iterrows()]
        return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    by_ys: dict[tuple[Any, ...], list[Any]] = {}
    for xv in _sort_values(frame[x].tolist()):
        ys = tuple(_sort_values(frame.loc[frame[x] == xv, y].tolist()))
        by_ys.setdefault(ys, []).append(xv)
    groups = []
    for ys, xvs in by_ys.items():
        names = [_num(v) for v in xvs]
        xs_text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        who = f"{xs_text} {_label(x)}" if x in LABELS else f"{x}={xs_text}"
        if len(every) > 1 and set(ys) == set(every):
            where = f"every {_label(y).split(' (')[0]}" if y in LABELS else f"every {y}"
        else:
            where = ", ".join(tick(v).split("\n")[0] if y in Y_CANDIDATES else f"{y}={_num(v)}" for v in ys)
        groups.append(f"{who} at {where}")
    more = f"; and {len(groups) - limit} more" if len(groups) > limit else ""
    return "; ".join(groups[:limit]) + more


def _span(values: pd.Series, fmt: Callable[[float], str]) -> str:
    lo, hi = fmt(values.min()), fmt(values.max())
    return lo if lo == hi else f"{lo} to {hi}"


def _finding(
    title: str, sub: pd.DataFrame, x: str | None, y: str | None, tick: Callable[[Any], str]
) -> _Finding:
    lines: list[str] = []
    ok = sub.dropna(subset=["ttft_p99_speedup", "throughput_gain"])
    if ok.empty:
        return _Finding(title, ["no cell has ok runs both with and without caching: see the failures below"])
    every = ok[y].unique().tolist() if y else []
    best_t = ok.loc[ok["ttft_p99_speedup"].idxmax()]
    best_g = ok.loc[ok["throughput_gain"].idxmax()]
    if len(ok) > 1:
        lines.append(
            f"TTFT p99: up to {_times(best_t['ttft_p99_speedup'])} faster "
            f"({_cell_name(best_t, x, y, tick)}); median {_times(ok['ttft_p99_speedup'].median())}."
        )
        lines.append(
            f"Throughput: up to {_pct(best_g['throughput_gain'])} "
            f"({_cell_name(best_g, x, y, tick)}); median {_pct(ok['throughput_gain'].median())}."
        )
        hit = ok["prefix_hit_rate"].dropna()
        if not hit.empty:
            lines.append(f"Hit rate {_pct(hit.min(), False)} to {_pct(hit.max(), False)} of prompt tokens.")
    else:
        lines.append(
            f"TTFT p99 {_times(best_t['ttft_p99_speedup'])} faster, throughput "
            f"{_pct(best_g['throughput_gain'])}, hit rate {_pct(best_t['prefix_hit_rate'], False)}."
        )
    stops = ok[~ok["helps"]]
    if len(stops):
        lines.append(
            f"Stops helping (< {HELP_THRESHOLD:.0%}) in {len(stops)} of {len(ok)} cells: "
            f"{_cells_text(stops, x, y, tick, every)}."
        )
    else:
        lines.append(f"Helps by {HELP_THRESHOLD:.0%} or more in all {len(ok)} measured cells.")
    latency_only = ok[ok["helps"] & (ok["throughput_gain"] < HELP_THRESHOLD)]
    if len(latency_only):
        lines.append(
            f"Throughput gains < {HELP_THRESHOLD:.0%} in {len(latency_only)} of {len(ok)} cells "
            f"({_cells_text(latency_only, x, y, tick, every)}), but TTFT p99 still improves "
            f"{_span(latency_only['ttft_p99_speedup'], _times)} there: caching buys latency, not capacity."
        )
    return _Finding(title, lines)


def _compare_table(sub: pd.DataFrame, x: str | None, y: str | None) -> str:
    keys = [c for c in (y, x) if c]
    table = pd.DataFrame({k: sub[k] for k in keys})
    table["hit rate"] = sub["prefix_hit_rate"].map(lambda v: _pct(v, False))
    table["TTFT p99 off"] = sub["ttft_p99_s_base"].map(_seconds)
    table["TTFT p99 on"] = sub["ttft_p99_s"].map(_seconds)
    table["TTFT p99 speed-up"] = sub["ttft_p99_speedup"].map(_times)
    table["throughput off (req/s)"] = sub["throughput_rps_base"].map(_num)
    table["throughput on (req/s)"] = sub["throughput_rps"].map(_num)
    table["throughput gain"] = sub["throughput_gain"].map(_pct)
    table["prefill computed"] = sub["prefill_tokens_computed_ratio"].map(
        lambda v: "-" if not np.isfinite(v) else f"{v * 100:.0f}% of off"
    )
    table["caching helps?"] = [
        "-" if not m else ("yes" if h else "NO")
        for m, h in zip(sub["stops_helping"] | sub["helps"], sub["helps"], strict=True)
    ]
    table = table.sort_values(keys, kind="stable") if keys else table
    return f"<details><summary>Every cell ({len(table)})</summary>{_table(table, 'cells')}</details>"


def _ttft_lines(
    ctx: _Context,
    df: pd.DataFrame,
    title: str,
    slug: str,
    tick: Callable[[Any], str],
    capacity: dict[Any, float],
) -> str:
    """TTFT p99 against concurrency, one colour per memory size, one line style per caching mode."""
    x, y = ctx.roles.x, ctx.roles.y
    if x is None:
        return ""
    keys = [c for c in (x, y, CACHING_AXIS) if c is not None and c in df]
    s = analysis.summarize(df, keys, ["ttft_p99_s"])
    xs = _sort_values(df[x].tolist())
    ys = _sort_values(df[y].tolist(), capacity) if y else [None]
    modes = _sort_values(df[CACHING_AXIS].dropna().tolist(), {"off": 0, "session": 1, "prefix": 2})
    fig = _new_figure(13, 5.2)
    ax = fig.subplots()
    positions = _x_axis(ax, xs, _label(x))
    pos_of = dict(zip(xs, positions, strict=True))

    def series(yv: Any, mode: Any) -> pd.DataFrame:
        pick = s[s[CACHING_AXIS] == mode] if CACHING_AXIS in s else s
        if y is not None:
            pick = pick[pick[y] == yv]
        pick = pick.dropna(subset=["ttft_p99_s_mean"])
        return pick.assign(_pos=pick[x].map(pos_of)).sort_values("_pos")

    # memory sizes whose lines are identical (memory is not the limit there) share one colour and label
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for yv in ys:
        picks = [series(yv, m) for m in modes]
        key = tuple((tuple(p["_pos"]), tuple(p["ttft_p99_s_mean"].round(12))) for p in picks)
        groups.setdefault(key, []).append(yv)
    for i, members in enumerate(groups.values()):
        yv = members[0]
        if y is None:
            where = ""
        elif len(members) == 1:
            where = tick(yv).replace("\n", ", ") + ", "
        else:
            where = " / ".join(tick(v).split("\n")[0] for v in members) + " (same), "
        for mode in modes:
            pick = series(yv, mode)
            if pick.empty:
                continue
            err = pick["ttft_p99_s_ci95"].fillna(0).to_numpy()
            ax.errorbar(
                pick["_pos"],
                pick["ttft_p99_s_mean"],
                yerr=err if err.any() else None,
                color=f"C{i % 10}",
                linestyle=_MODE_STYLE.get(str(mode), "-."),
                marker="o",
                capsize=3,
                label=f"{where}caching {mode}",
            )
    if _log_scale(s["ttft_p99_s_mean"].dropna().tolist()):
        ax.set_yscale("log")
    ax.set_ylabel("TTFT p99")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _seconds(v)))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), title=_label(y) if y else None)
    ax.set_title(
        f"{title}: TTFT p99 against {_label(x)}\n(solid: caching on, dashed: off"
        + (f"; one colour per {_label(y)}" if y else "")
        + "; bars: 95% CI over seeds)",
        fontsize=11,
    )
    name = ctx.save(fig, f"{slug}-ttft-lines")
    return "<h3>TTFT p99 with caching on and off</h3>" + _img(name, f"TTFT p99 against {_label(x)}")


def _section_absolute(ctx: _Context, df: pd.DataFrame, title: str, slug: str) -> str:
    """A sweep without a caching baseline: hit rate, TTFT p99 and throughput as they are."""
    x, y = ctx.roles.x, ctx.roles.y
    keys = [c for c in (x, y) if c is not None]
    parts: list[str] = []
    tick, capacity = _y_tick_fn(df, y)
    modes = _sort_values(df[CACHING_AXIS].dropna().tolist()) if CACHING_AXIS in df else [None]
    for mode in modes:
        sub_df = df[df[CACHING_AXIS] == mode] if mode is not None else df
        means = (
            analysis.cell_means(sub_df, keys, ["prefix_hit_rate", "ttft_p99_s", "throughput_rps"])
            if keys
            else None
        )
        if means is None or not (x and y):
            continue
        xs, ys = _sort_values(df[x].tolist()), _sort_values(df[y].tolist(), capacity)
        status = _cell_status(sub_df, [x, y])
        blank = {(yv, xv): _blank(status, (xv, yv)) for yv in ys for xv in xs}
        panels = [
            Panel(
                "Prefix-cache hit rate",
                means.set_index([y, x])["prefix_hit_rate"],
                lambda v: f"{v * 100:.0f}%",
                "viridis",
                vmin=0.0,
                vmax=1.0,
            ),
            Panel("TTFT p99 (s)", means.set_index([y, x])["ttft_p99_s"], lambda v: f"{v:.3g}", "magma_r"),
            Panel(
                "Throughput (requests/s)",
                means.set_index([y, x])["throughput_rps"],
                lambda v: f"{v:.3g}",
                "viridis",
            ),
        ]
        fig = _new_figure(16, 1.6 + 0.55 * max(len(ys), 3))
        for i, (ax, panel) in enumerate(zip(fig.subplots(1, 3), panels, strict=True)):
            _heatmap(ax, panel, xs, ys, _label(x), _label(y) if i == 0 else "", tick, blank, set())
        fig.suptitle(f"{title} - caching '{mode}'", fontsize=12)
        parts.append(_img(ctx.save(fig, f"{slug}-{mode}-heatmaps"), f"{title}: caching {mode}"))
    parts.append(_ttft_lines(ctx, df, title, slug, tick, capacity))
    table = analysis.summarize(
        df,
        [c for c in (*keys, CACHING_AXIS) if c in df] or ["model.name"],
        ["prefix_hit_rate", "ttft_p99_s", "throughput_rps"],
    )
    parts.append(f"<details><summary>Every cell ({len(table)})</summary>{_table(table.round(4))}</details>")
    return "\n".join(parts)


def _values(series: pd.Series) -> str:
    return ", ".join(_num(v) if not isinstance(v, str) else v for v in _sort_values(series.tolist()))


def _failures(df: pd.DataFrame, cell_axes: list[str], limit: int = 200) -> str:
    """Infeasible and failed runs, one row per reason; the cells of a reason are collapsed into value
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
            row: dict[str, Any] = {"status": status, "model.name": model}
            row.update({c: _values(block[c].drop_duplicates()) for c in axes_})
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
    return f"<p>{head} run(s):</p>{_table(table, 'failures')}{more}"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;
 background:#fafafa}
main{max-width:1320px;margin:0 auto;padding:20px 28px 60px}
h1{font-size:26px;margin:8px 0 4px} h2{margin-top:36px;border-bottom:2px solid #ddd;padding-bottom:4px}
h3{margin-top:22px} .sub{color:#555;margin:0 0 14px}
.findings{background:#fff;border:1px solid #cfd8e3;border-left:6px solid #2b6cb0;border-radius:6px;
 padding:10px 20px;margin:12px 0 18px} .findings h2{border:0;margin:6px 0;font-size:20px}
.findings h3{margin:12px 0 2px;font-size:15px} .findings ul{margin:2px 0 6px}
figure{margin:10px 0} img{max-width:100%;background:#fff;border:1px solid #e2e2e2}
table{border-collapse:collapse;font-size:13px;background:#fff;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f0f3f7}
td:last-child{text-align:left} .callout{background:#fff4e5;border-left:5px solid #e69500;padding:8px 12px}
.good{background:#eef8ee;border-left:5px solid #3c9a3c;padding:8px 12px}
.warn{background:#fdecec;border-left:5px solid #c53030;padding:8px 12px}
pre{background:#f4f4f4;padding:10px;overflow:auto;font-size:12px;border:1px solid #e2e2e2}
nav a{margin-right:14px} details{margin:6px 0} summary{cursor:pointer;color:#2b6cb0}
code{background:#f1f1f1;padding:0 3px;border-radius:3px}
"""


def _model_order(df: pd.DataFrame, info: SweepInfo) -> list[Any]:
    """Models in the order the spec's grid lists them (usually by size), else in natural order."""
    grid = info.spec.get("grid") or {}
    listed = grid.get("model") or grid.get("model.name") if isinstance(grid, dict) else None
    listed = listed if isinstance(listed, list) else []
    names = [v if isinstance(v, str) else v.get("name") for v in listed if isinstance(v, (str, dict))]
    rank = {name: i for i, name in enumerate(names) if name}
    return _sort_values(df["model.name"].dropna().tolist(), {k: float(v) for k, v in rank.items()})


def write_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the sweep at ``path`` into ``out`` (default ``path/report``); return index.html.

    Raises :class:`ConfigError` when there is no dataset, or when ``path`` is a remote URI and
    ``out`` is not given (the report is written to the local file system).
    """
    if out is None:
        if "://" in str(path):
            raise ConfigError(f"{path}: the report is written locally: give --out DIR")
        out = Path(path) / "report"
    out_dir = Path(out)
    info = analysis.read_info(path)
    columns = [c for c in analysis.runs_dataset(path).schema.names if c != "config_json"]
    df = analysis.load(path, columns=columns)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("fig*.png"):  # only what an earlier report wrote
        old.unlink()

    roles = infer_roles(df, info)
    ctx = _Context(out=out_dir, roles=roles)
    varied = analysis.axes(df)
    cell_axes = list(dict.fromkeys(["model.name", *varied]))
    summary = analysis.summarize(df, cell_axes, [m for m in SUMMARY_METRICS if m in df])
    summary.to_csv(out_dir / "summary.csv", index=False)
    if roles.compare:
        keys = [c for c in varied if c != CACHING_AXIS]
        analysis.compare(df, CACHING_AXIS, BASELINE, COMPARE_METRICS, by=keys).to_csv(
            out_dir / "caching.csv", index=False
        )

    sections: list[str] = []
    findings: list[_Finding] = []
    nav: list[str] = []
    models = _model_order(df, info)
    for model in models:
        mdf = df[df["model.name"] == model]
        groups = (
            [((), mdf)]
            if not roles.facets
            else [
                (k if isinstance(k, tuple) else (k,), g)
                for k, g in mdf.groupby(list(roles.facets), dropna=False)
            ]
        )
        for facet_values, gdf in groups:
            facet = ", ".join(f"{c}={_num(v)}" for c, v in zip(roles.facets, facet_values, strict=True))
            title = f"{model}" + (f" ({facet})" if facet else "")
            slug = _slug(title)
            nav.append(f'<a href="#{slug}">{html.escape(title)}</a>')
            runs = gdf["status"].value_counts().to_dict()
            gpu = ", ".join(sorted(map(str, gdf["gpu.name"].dropna().unique())))
            head = (
                f'<h2 id="{slug}">{html.escape(title)}</h2><p class="sub">{len(gdf)} runs '
                f"({', '.join(f'{n} {k}' for k, n in sorted(runs.items()))}) on {html.escape(gpu)}</p>"
            )
            if roles.compare:
                body, found = _section_compare(ctx, gdf, title, slug)
                findings.extend(found)
            else:
                body = _section_absolute(ctx, gdf, title, slug)
            sections.append(head + body)

    page = _page(df, info, roles, varied, cell_axes, findings, nav, sections, summary)
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _page(
    df: pd.DataFrame,
    info: SweepInfo,
    roles: Roles,
    varied: list[str],
    cell_axes: list[str],
    findings: list[_Finding],
    nav: list[str],
    sections: list[str],
    summary: pd.DataFrame,
) -> str:
    name = info.name or (str(df["sweep"].iloc[0]) if "sweep" in df and len(df) else "sweep")
    counts = df["status"].value_counts().to_dict()
    per_cell = df.groupby(cell_axes, dropna=False)["seed"].nunique() if len(df) else pd.Series([0])
    lo_seeds, hi_seeds = int(per_cell.min()), int(per_cell.max())
    seeds = f"{lo_seeds}" if lo_seeds == hi_seeds else f"{lo_seeds}-{hi_seeds}"
    versions = sorted(
        set(map(str, df.get("kvsweep_version", pd.Series(dtype=str)).dropna()))
        | ({info.version} if info.version else set())
    )
    status_text = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("ok", "infeasible", "failed"))
    axes_text = ", ".join(f"<code>{html.escape(a)}</code> ({df[a].nunique(dropna=False)})" for a in varied)
    if roles.compare:
        what = (
            "What prefix caching buys, cell by cell: each caching mode against <code>off</code> at the "
            "same model, memory and load. Speed-up = TTFT p99 without caching / with caching; gain = "
            "throughput with / without - 1."
        )
        find_html = "".join(
            f"<h3>{html.escape(f.title)}</h3><ul>"
            + "".join(f"<li>{html.escape(line)}</li>" for line in f.lines)
            + "</ul>"
            for f in findings
        )
    else:
        what = (
            "This sweep does not vary <code>engine.prefix_caching</code> against <code>off</code>, so the "
            "pictures show absolute numbers. Add <code>engine.prefix_caching: [off, prefix]</code> to the "
            "grid to see what caching buys."
        )
        find_html = ""
    failures = int(counts.get("infeasible", 0) + counts.get("failed", 0))
    warn = (
        (
            f'<p class="warn">{failures} run(s) did not finish ok: see <a href="#failures">infeasible and '
            "failed runs</a>.</p>"
        )
        if failures
        else ""
    )
    meta = f"kvsweep {html.escape(', '.join(versions) or '?')}" + (
        f" &middot; created {html.escape(info.created)}" if info.created else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>kvsweep report: {html.escape(name)}</title>
<style>{_CSS}</style></head><body><main>
<h1>kvsweep report: {html.escape(name)}</h1>
<p class="sub">{len(df)} runs ({status_text}) &middot; {seeds} seed(s) per cell &middot;
varied: {axes_text or "nothing"} &middot; {meta}</p>
<div class="findings"><h2>Key findings</h2><p>{what}</p>{find_html}{warn}</div>
<nav>Sections: {" ".join(nav)} <a href="#failures">failures</a> <a href="#spec">spec</a>
<a href="summary.csv">summary.csv</a></nav>
{"".join(sections)}
<h2 id="failures">Infeasible and failed runs</h2>
{_failures(df, [c for c in cell_axes if c != "model.name"])}
<h2 id="data">The numbers behind the pictures</h2>
<p><a href="summary.csv">summary.csv</a>: {len(summary)} cells (every varied axis), mean and 95% confidence
interval half-width (<code>_ci95</code>) over seeds.{
        " <a href='caching.csv'>caching.csv</a>: each caching mode against off, cell by cell."
        if roles.compare
        else ""
    } To dig further:</p>
<pre>from sweep.analysis import load, compare
df = load("DIR")
compare(df, axis="engine.prefix_caching", baseline="off")

kvsweep query DIR 'SELECT "model.name", status, count(*) FROM runs GROUP BY ALL'</pre>
<h2 id="spec">Sweep spec and version</h2>
<p>{meta}</p>
<pre>{html.escape(info.spec_text or "(no spec.yaml in the dataset)")}</pre>
</main></body></html>
"""
