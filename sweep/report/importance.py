"""Which axes move the headline, and how: a variance decomposition over the grid.

Over every cell of the headline (:mod:`sweep.report.overview`; one value per cell, the load axis
already read out), with ``y = log2(value)`` so that doubling counts the same for a 1B and a 70B
model, each axis's **main-effect share** is

    Var(mean of y per value of the axis) / Var(y)          (first-order, eta squared)

over the cells measured; what the shares leave is **interactions** (effects that depend on
another axis's value). A cell whose headline is "none meets the SLO" counts as half the
smallest value tried, so that it stays on the log scale below every value that meets.

The **partial dependence** of an axis is the geometric mean of the headline per value (per
caching mode, to show where caching changes an axis's effect), over the combinations of the
other axes measured at every value of this one (a value whose hardest cells are missing, say
infeasible, would otherwise look better). The sentences read it:

    matters most    the axis with the largest share, with its lowest and highest means
    little above v  a numeric axis whose mean moves under 5% from v to its last value
    only for m      an axis that moves the headline at least 10% under caching modes m only
    barely          axes that move it under 5% in every mode
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from sweep.analysis import CACHING_AXIS
from sweep.report import heatmaps
from sweep.report.context import Context, img
from sweep.report.fmt import label, listing, num, sort_values, with_unit
from sweep.report.overview import Headline
from sweep.report.roles import BASELINE, determined, sort_modes

MAX_SENTENCES = 5
LITTLE = math.log2(1.05)  # under 5%: "matters little"
MATTERS = math.log2(1.10)  # at least 10%: "matters"


@dataclass
class Importance:
    """Main-effect shares per axis (largest first), the interactions' share, the partial
    dependences (geometric means per value, overall and per caching mode), and the sentences."""

    shares: dict[str, float]
    interactions: float
    overall: dict[str, pd.Series]
    by_mode: dict[str, pd.DataFrame]  # axis -> rows: values, columns: caching modes
    sentences: list[str]
    n_cells: int


def factors(hl: Headline) -> list[str]:
    """The axes of the decomposition: rows and other axes of the overview, and caching."""
    cells = hl.cells
    out: list[str] = []
    for axis in [*hl.heads, *hl.others, CACHING_AXIS]:
        if axis not in cells or axis in out or cells[axis].nunique(dropna=False) < 2:
            continue
        if axis != "model.name" and determined(cells, axis, [a for a in out if a != CACHING_AXIS]):
            continue  # follows from an axis already in (tensor parallel from the model)
        out.append(axis)
    return out


def _log_values(hl: Headline) -> pd.Series:
    value = hl.cells["value"].astype(float)
    none = hl.cells["bound"] == "none"
    if none.any():
        floor = value[value > 0].min() if (value > 0).any() else 1.0
        value = value.where(~none, floor / 2)
    value = value.where(value > 0)
    return np.log2(value)


def decompose(hl: Headline, orders: dict[str, list[Any]] | None = None) -> Importance | None:
    """The decomposition of ``hl`` (None with fewer than two axes or four measured cells);
    ``orders``: the display order of an axis's values (the models, by size), else natural."""
    orders = orders or {}

    def ordered(values: list[Any], axis: str) -> list[Any]:
        if axis == CACHING_AXIS:
            return sort_modes(values)
        known = [v for v in orders.get(axis, []) if v in values]
        return known + sort_values([v for v in values if v not in known])

    axes = factors(hl)
    y = _log_values(hl)
    cells = hl.cells.assign(_y=y)[y.notna()]
    total = float(cells["_y"].var(ddof=0)) if len(cells) else 0.0
    if len(axes) < 1 or len(cells) < 4 or total <= 0:
        return None
    shares = {}
    overall: dict[str, pd.Series] = {}
    by_mode: dict[str, pd.DataFrame] = {}
    for axis in axes:
        means = cells.groupby(axis, dropna=False)["_y"].transform("mean")
        shares[axis] = float(means.var(ddof=0) / total)
        full = _complete(cells, axis, axes)
        per_value = full.groupby(axis, dropna=False)["_y"].mean()
        overall[axis] = 2 ** per_value.reindex(ordered(per_value.index.tolist(), axis))
        if CACHING_AXIS in cells and axis != CACHING_AXIS:
            table = full.groupby([axis, CACHING_AXIS], dropna=False)["_y"].mean().unstack(CACHING_AXIS)
            table = table.reindex(ordered(table.index.tolist(), axis))
            by_mode[axis] = 2 ** table[sort_modes(table.columns.tolist())]
    ranked = dict(sorted(shares.items(), key=lambda kv: -kv[1]))
    interactions = max(0.0, 1.0 - sum(ranked.values()))
    result = Importance(ranked, interactions, overall, by_mode, [], len(cells))
    result.sentences = sentences(result, hl)
    return result


def _complete(cells: pd.DataFrame, axis: str, axes: list[str]) -> pd.DataFrame:
    """The cells whose other axes' values were measured at every value of ``axis`` (all of them
    when none is): so a value whose hardest cells are missing (infeasible) does not look better."""
    others = [a for a in axes if a != axis]
    if not others:
        return cells
    seen = cells.groupby(others, dropna=False)[axis].transform("nunique")
    full = cells[seen == cells[axis].nunique()]
    return full if len(full) else cells


def _span(series: pd.Series) -> float:
    """The spread of a partial dependence, in log2 units."""
    finite = series[np.isfinite(series) & (series > 0)]
    return float(np.log2(finite.max() / finite.min())) if len(finite) >= 2 else 0.0


def _value(v: float, hl: Headline) -> str:
    return f"{num(round(v, 1) if v >= 10 else float(f'{v:.3g}'))} {hl.unit}"


def _level(axis: str, value: Any) -> str:
    text = num(value)
    if axis == CACHING_AXIS:
        return f"caching {text}"
    if axis in ("model.name", "gpu.name"):
        return text
    return f"{label(axis).split(' (')[0]} {text}"


def sentences(imp: Importance, hl: Headline) -> list[str]:
    """What the decomposition says, in a few sentences (see the module docstring)."""
    out = []
    top = next(iter(imp.shares))
    pd_top = imp.overall[top].dropna()
    lo, hi = pd_top.idxmin(), pd_top.idxmax()
    out.append(
        f"{label(top)[0].upper() + label(top)[1:]} moves it most ({imp.shares[top]:.0%} of the variance):"
        f" from {_value(pd_top[lo], hl)} ({_level(top, lo)}) to {_value(pd_top[hi], hl)} ({_level(top, hi)}),"
        " geometric means over the other axes."
    )
    barely = []
    for axis in imp.shares:
        series = imp.overall[axis].dropna()
        modes = imp.by_mode.get(axis)
        spans = {m: _span(modes[m].dropna()) for m in modes.columns} if modes is not None else {}
        if _span(series) < LITTLE and all(s < LITTLE for s in spans.values()):
            barely.append(label(axis))
            continue
        if axis == top or len(out) >= MAX_SENTENCES:
            continue
        matter = [m for m, s in spans.items() if s >= MATTERS]
        if spans and matter and len(matter) < len(spans):
            rest = [m for m in spans if m not in matter]
            worst = max(matter, key=lambda m: spans[m])
            out.append(
                f"Changing {label(axis)} matters only with caching {listing([str(m) for m in matter])}"
                f" (up to {2 ** spans[worst]:.2f}x between its values there; under 10% with"
                f" {listing([_mode_word(m) for m in rest])})."
            )
            continue
        little = _little_above(series)
        if little is not None:
            out.append(
                f"Raising {label(axis).split(' (')[0]} above {with_unit(axis, little)} changes it little:"
                f" {_value(series[little], hl)} there,"
                f" {_value(series.iloc[-1], hl)} at {with_unit(axis, series.index[-1])}"
                f" (against {_value(series.iloc[0], hl)} at {with_unit(axis, series.index[0])})."
            )
            continue
        out.append(_effect(axis, imp.shares[axis], series, modes, hl))
    if barely:
        out.append(
            f"{_cap(listing(barely))} barely move{'s' if len(barely) == 1 else ''} it (under 5% between"
            " values, in every caching mode)."
        )
    if imp.interactions >= 0.1:
        out.append(
            f"{imp.interactions:.0%} of the variance is in interactions: an axis's effect depends on"
            " another's"
            " value (the lines per caching mode in the picture show those with caching)."
        )
    return out


def _effect(axis: str, share: float, series: pd.Series, modes: pd.DataFrame | None, hl: Headline) -> str:
    """``GPU memory utilisation (5% of the variance), 0.5 to 0.9: 18 to 23 users without caching;
    33 to 110 with prefix.``"""
    if axis == CACHING_AXIS:
        each = ", ".join(f"{_number(v)} {hl.unit} {_mode_word(m, 'with ')}" for m, v in series.items())
        return f"Caching ({share:.0%} of the variance): {each}, geometric means."
    first, last = series.index[0], series.index[-1]
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) for v in series.index)
    what = f"from {num(first)} to {num(last)}" if numeric else f"{num(last)} rather than {num(first)}"
    if modes is None:
        moves = f"{_value(series[first], hl)} to {_value(series[last], hl)}"
    else:
        moves = "; ".join(
            f"{_number(modes.loc[first, m])} to {_number(modes.loc[last, m])} {hl.unit}"
            f" {_mode_word(m, 'with ')}"
            for m in modes.columns
        )
    return f"{_cap(label(axis))} ({share:.0%} of the variance), {what}: {moves}."


def _number(value: float) -> str:
    return "-" if not np.isfinite(value) else num(round(value, 1) if value >= 10 else float(f"{value:.3g}"))


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _mode_word(mode: Any, with_: str = "") -> str:
    if mode == BASELINE:
        return "without caching" if with_ else "no caching"
    return f"{with_}{mode}"


def _little_above(series: pd.Series) -> Any:
    """The smallest value of a numeric axis above which its mean moves under 5%, when the axis
    moves it at least 10% overall and that value is not its first or last."""
    if len(series) < 3 or not all(isinstance(v, (int, float, np.integer, np.floating)) for v in series.index):
        return None
    if _span(series) < MATTERS:
        return None
    last = series.iloc[-1]
    for i, value in enumerate(series.index[:-1]):
        rest = series.iloc[i:]
        if all(abs(math.log2(v / last)) < LITTLE for v in rest if v > 0):
            return value if 0 < i else None
    return None


# ---- the picture -----------------------------------------------------------------------------


def figure(ctx: Context, imp: Importance, hl: Headline) -> str:
    """Bars of the shares, then the partial dependence of each axis (lines per caching mode)."""
    axes = [a for a in imp.shares if a != CACHING_AXIS][:5]
    fig = heatmaps.new_figure(14, 3.6, layout=None)
    grid = fig.add_gridspec(1, 1 + len(axes), width_ratios=[1.5] + [1] * len(axes), wspace=0.35)
    ax = fig.add_subplot(grid[0, 0])
    names = [label(a) for a in imp.shares] + ["interactions"]
    shares = [*imp.shares.values(), imp.interactions]
    colours = ["#2b6cb0"] * len(imp.shares) + ["#a0aec0"]
    ax.barh(range(len(names)), shares, color=colours)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the variance")
    for i, s in enumerate(shares):
        ax.text(min(s + 0.02, 0.8), i, f"{s:.0%}", va="center", fontsize=9)
    ax.set_title(
        f"What moves {hl.unit} per GPU" if hl.capacity is not None and hl.load else "What moves it",
        fontsize=10,
    )
    ymin = min(float(np.nanmin(imp.overall[a].to_numpy())) for a in axes) if axes else 1.0
    ymax = max(float(np.nanmax(imp.overall[a].to_numpy())) for a in axes) if axes else 1.0
    for k, axis in enumerate(axes):
        sub = fig.add_subplot(grid[0, 1 + k])
        table = imp.by_mode.get(axis)
        values = imp.overall[axis].index.tolist()
        pos = range(len(values))
        if table is not None:
            for mode in table.columns:
                style = {"off": "--", "session": ":", "prefix": "-"}.get(str(mode), "-.")
                sub.plot(pos, table[mode].to_numpy(), style, marker="o", label=_mode_word(mode))
                ymin, ymax = (
                    min(ymin, float(np.nanmin(table.to_numpy()))),
                    max(ymax, float(np.nanmax(table.to_numpy()))),
                )
        else:
            sub.plot(pos, imp.overall[axis].to_numpy(), marker="o")
        turn = len(values) > 3 or max(len(num(v)) for v in values) > 8
        sub.set_xticks(
            list(pos),
            [num(v) for v in values],
            rotation=35 if turn else 0,
            ha="right" if turn else "center",
            fontsize=8,
        )
        sub.set_yscale("log")
        sub.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # labels within one decade too
        sub.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: num(float(f"{v:.3g}"))))
        sub.yaxis.set_minor_formatter(NullFormatter())
        sub.set_title(label(axis), fontsize=10)
        sub.grid(alpha=0.3, which="both")
        if k == 0:
            sub.set_ylabel(
                f"{hl.unit} per GPU (geometric mean)" if hl.load or hl.capacity is None else hl.unit,
                fontsize=9,
            )
            if table is not None:
                handles, names = sub.get_legend_handles_labels()
                fig.legend(
                    handles,
                    names,
                    loc="upper right",
                    fontsize=8,
                    title="caching",
                    title_fontsize=8,
                    ncol=len(names),
                )
    for sub in fig.axes[1:]:
        sub.set_ylim(ymin / 1.3, ymax * 1.3)
    fig.subplots_adjust(left=0.14, right=0.99, bottom=0.27, top=0.8)
    fig.suptitle(
        f"Share of the variance of log2({hl.what}) over {imp.n_cells} cells, and its mean per value",
        fontsize=11,
        x=0.01,
        ha="left",
    )
    name = ctx.save(fig, "what-matters")
    return img(name, "Axes ranked by how much they move the headline; mean per value of each axis")
