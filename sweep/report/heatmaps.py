"""Heatmaps over load x memory: one panel per quantity, each cell coloured and labelled with its
value, and marked where the value is not what it seems:

    hatched ////   transient: a run did not settle (its figures describe a transient)
    hatched xxxx   overloaded: arrivals outrun the server; a latency (or its ratio) has no
                   steady value there, so the panel says "overloaded" instead of a number
    dashed box     caching helps by less than the threshold (only drawn, and only named in the
                   title, when some cell has it)
    grey, italic   no number: infeasible, failed, not run
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

from sweep.report.fmt import num

Cell = tuple[Any, Any]  # (y value, x value)
HATCHES = {"transient": "////", "overloaded": "xxxx"}


def new_figure(
    width: float, height: float, layout: Literal["constrained", "compressed"] | None = "constrained"
) -> Figure:
    """A figure on the Agg canvas; ``layout=None`` for big grids of panels placed by hand
    (constrained layout measures every label of every panel: a third of a 12-panel figure's time)."""
    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
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
    hide_overloaded: bool = False  # a latency: say "overloaded" instead of the number
    text: dict[Cell, str] = field(default_factory=dict)  # cells labelled with words, not values


@dataclass
class Marks:
    """What the cells of one heatmap figure are marked with (see the module docstring)."""

    blank: dict[Cell, str] = field(default_factory=dict)  # why a cell has no number
    state: dict[Cell, str] = field(default_factory=dict)  # "transient" / "overloaded" (others: none)
    overload_text: dict[Cell, str] = field(default_factory=dict)  # what a hidden latency cell says
    boxed: set[Cell] = field(default_factory=set)  # dashed box


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


def _grid(panel: Panel, xs: list[Any], ys: list[Any], marks: Marks) -> np.ndarray:
    grid = np.full((len(ys), len(xs)), np.nan)
    for (yv, xv), value in panel.values.items():
        hidden = panel.hide_overloaded and marks.state.get((yv, xv)) == "overloaded"
        if yv in ys and xv in xs and value is not None and np.isfinite(value) and not hidden:
            grid[ys.index(yv), xs.index(xv)] = value
    return grid


def heatmap(
    ax: Axes,
    panel: Panel,
    xs: list[Any],
    ys: list[Any],
    labels: tuple[str, str],
    ytick: Callable[[Any], str],
    marks: Marks,
    norm: Normalize | None = None,
    bar: bool = True,
) -> Any:
    """Draw ``panel`` over ``xs`` x ``ys``; ``labels`` are the x and y axis titles. ``norm``: a
    colour scale shared with other panels (default: this panel's own); ``bar``: draw its colour
    bar. Returns the image (for a colour bar drawn elsewhere)."""
    grid = _grid(panel, xs, ys, marks)
    cmap = colormaps[panel.cmap].with_extremes(bad="#e6e6e6")
    with np.errstate(divide="ignore", invalid="ignore"):
        shown = np.log(grid) if panel.log else grid
    norm = norm or _norm(shown, panel)
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, origin="lower", aspect="auto")
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            _cell(
                ax,
                (i, j),
                (yv, xv),
                grid[i, j],
                panel,
                marks,
                _text_colour(cmap, norm, shown[i, j]) if np.isfinite(grid[i, j]) else "#555555",
            )
    ax.set_xticks(range(len(xs)), [num(v) for v in xs])
    ax.set_yticks(range(len(ys)), [ytick(v) for v in ys])
    ax.set_xlabel(labels[0])
    if labels[1]:
        ax.set_ylabel(labels[1])
    ax.set_title(panel.title, fontsize=11)
    if bar:
        colour_bar(ax, image, panel, norm)
    return image


def shared_norm(panels: list[Panel]) -> Normalize:
    """One colour scale for several panels of the same quantity."""
    first = panels[0]
    values = np.concatenate([p.values.to_numpy(dtype=float) for p in panels]) if panels else np.array([])
    with np.errstate(divide="ignore", invalid="ignore"):
        shown = np.log(values) if first.log else values
    return _norm(shown, first)


def _cell(
    ax: Axes, at: tuple[int, int], cell: Cell, value: float, panel: Panel, marks: Marks, colour: str
) -> None:
    i, j = at
    state = marks.state.get(cell)
    if state in HATCHES:
        ax.add_patch(
            Rectangle(
                (j - 0.5, i - 0.5), 1, 1, fill=False, hatch=HATCHES[state], edgecolor="#777777", linewidth=0
            )
        )
    if cell in panel.text:
        ax.text(j, i, panel.text[cell], ha="center", va="center", fontsize=8, color="#333333", style="italic")
    elif np.isfinite(value):
        ax.text(
            j,
            i,
            panel.fmt(value),
            ha="center",
            va="center",
            fontsize=9,
            color="black" if state in HATCHES else colour,  # on its white box
            bbox={"facecolor": "white", "alpha": 0.6, "pad": 1, "linewidth": 0} if state in HATCHES else None,
        )
    else:
        why = (
            marks.overload_text.get(cell, "overloaded")
            if state == "overloaded"
            else marks.blank.get(cell, "n/a")
        )
        ax.text(
            j,
            i,
            why,
            ha="center",
            va="center",
            fontsize=8,
            color="#333333",
            style="italic",
            bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "linewidth": 0},
        )
    if cell in marks.boxed:
        ax.add_patch(
            Rectangle(
                (j - 0.46, i - 0.46), 0.92, 0.92, fill=False, edgecolor="black", linewidth=1.6, linestyle="--"
            )
        )


def colour_bar(ax: Axes | list[Axes], image: Any, panel: Panel, norm: Normalize) -> None:
    figure = ax[0].figure if isinstance(ax, list) else ax.figure
    bar = figure.colorbar(image, ax=ax, shrink=0.9)
    if panel.log:
        nice = [0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64]
        lo, hi = float(norm.vmin or 0.0), float(norm.vmax or 0.0)
        bar.set_ticks([math.log(v) for v in nice if lo <= math.log(v) <= hi])
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{math.exp(v):.3g}x"))
    else:
        bar_fmt = panel.bar_fmt or panel.fmt
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: bar_fmt(v)))


def legend_text(marks: Marks, boxed_means: str = "") -> str:
    """What the marks of this figure mean, for its title: only the marks it uses."""
    used = set(marks.state.values())
    bits = []
    if marks.boxed and boxed_means:
        bits.append(f"dashed box: {boxed_means}")
    if "transient" in used:
        bits.append("hatched //: did not settle (transient)")
    if "overloaded" in used:
        bits.append("hatched xx: overloaded (no steady latency)")
    return ("   (" + "; ".join(bits) + ")") if bits else ""
