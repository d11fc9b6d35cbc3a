"""Line figures: a metric against load, one line per memory size and caching mode.

Lines that agree everywhere (within :data:`SAME_RTOL`) are drawn once, labelled with every
member and "(same)", so no line hides another; the remaining lines are nudged apart on x by a
few percent so their error bars stay visible. Error bars (95% CI over seeds) are clipped to the
axes: on a log axis a bar whose interval reaches 0 runs to the bottom edge instead of off the
figure. Overloaded points (no steady latency) are drawn as crosses, transient ones hollow; an
SLO on the metric is a horizontal red line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

from sweep.report.fmt import num, seconds

SAME_RTOL = 0.01
MODE_STYLE = {"off": "--", "session": ":", "prefix": "-"}


@dataclass
class Series:
    """One line: its label parts, positions, means, CI half-widths and per-point state."""

    names: list[str]  # e.g. ["40 GiB, 156k KV tok, caching off"]
    mode: Any
    colour: int
    x: np.ndarray
    mean: np.ndarray
    ci: np.ndarray
    state: list[str]

    def same_as(self, other: Series) -> bool:
        return (
            len(self.x) == len(other.x)
            and bool(np.array_equal(self.x, other.x))
            and self.state == other.state
            and bool(np.allclose(self.mean, other.mean, rtol=SAME_RTOL, atol=0))
        )


def merge_same(series: list[Series]) -> list[Series]:
    """Fold every series that equals an earlier one into it (its names join the label)."""
    kept: list[Series] = []
    for s in series:
        twin = next((k for k in kept if k.same_as(s)), None)
        if twin is None:
            kept.append(s)
        else:
            twin.names += s.names
    return kept


def log_scale(values: Sequence[float]) -> bool:
    finite = [float(v) for v in values if v is not None and np.isfinite(v) and v > 0]
    return len(finite) >= 3 and max(finite) / min(finite) >= 16


def x_axis(ax: Axes, xs: list[Any], label: str) -> list[Any]:
    """Numbers go on a numeric (log when they span >= 16x) axis; anything else on category positions."""
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) for v in xs)
    if numeric:
        if log_scale(xs):
            ax.set_xscale("log", base=2)
        ax.set_xticks(list(xs), [num(v) for v in xs])
        ax.minorticks_off()
        positions = list(xs)
    else:
        positions = list(range(len(xs)))
        ax.set_xticks(positions, [str(v) for v in xs])
    ax.set_xlabel(label)
    return positions


def same_label(names: list[str]) -> str:
    """Lines drawn once: ``24 GiB / 40 GiB, caching off (same)`` when the names share their last
    part (``, caching off``), else every name joined by ``=``."""
    if len(names) == 1:
        return names[0]
    tails = {n.rsplit(", ", 1)[-1] for n in names}
    if len(tails) == 1 and all(", " in n for n in names):
        heads = [n.split(", ", 1)[0] for n in names]
        return " / ".join(heads) + f", {tails.pop()} (same)"
    return " = ".join(names) + " (same)"


def _label(s: Series) -> str:
    return same_label(s.names)


def draw(
    ax: Axes,
    series: list[Series],
    log_x: bool,
    fmt: Callable[[float], str] = seconds,
    slo: tuple[float, str] | None = None,
) -> None:
    """Draw ``series`` (after :func:`merge_same`) with clipped error bars and state markers."""
    values = np.concatenate([s.mean for s in series]) if series else np.array([])
    log_y = log_scale([*values.tolist(), *([slo[0]] if slo else [])])  # the SLO line must not squash them
    if log_y:
        ax.set_yscale("log")
    lo, hi = _limits(series, log_y, slo[0] if slo else None)
    for k, s in enumerate(series):
        x = _dodge(s.x, k, len(series), log_x)
        lower = np.minimum(s.ci, s.mean - lo)  # a bar runs to the axis edge, never beyond
        err = np.vstack([np.nan_to_num(lower), np.nan_to_num(s.ci)])
        style = MODE_STYLE.get(str(s.mode), "-.")
        ax.errorbar(
            x,
            s.mean,
            yerr=err if err.any() else None,
            color=f"C{s.colour % 10}",
            linestyle=style,
            marker="o",
            capsize=3,
            label=_label(s),
            markevery=[st == "steady" or st == "unknown" for st in s.state],
        )
        for marker, state in (("x", "overloaded"), ("o", "transient")):
            pick = [st == state for st in s.state]
            if any(pick):
                ax.plot(
                    np.asarray(x)[pick],
                    s.mean[pick],
                    linestyle="none",
                    marker=marker,
                    markersize=9,
                    markerfacecolor="none",
                    color=f"C{s.colour % 10}",
                )
    if slo is not None:
        ax.axhline(slo[0], color="#c53030", linewidth=1.4, label=f"SLO: {slo[1]}")
    ax.set_ylim(lo, hi)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt(v)))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
    ax.grid(alpha=0.3, which="both")


def _limits(series: list[Series], log_y: bool, slo: float | None) -> tuple[float, float]:
    """The y range: every mean, every bar end that the axis can show, and the SLO line."""
    means = np.concatenate([s.mean for s in series]) if series else np.array([1.0])
    tops = np.concatenate([s.mean + np.nan_to_num(s.ci) for s in series]) if series else means
    bottoms = np.concatenate([s.mean - np.nan_to_num(s.ci) for s in series]) if series else means
    extra = [slo] if slo is not None else []
    hi = float(np.nanmax([*tops.tolist(), *extra])) if len(tops) or extra else 1.0
    if log_y:
        positive = [v for v in [*means.tolist(), *bottoms.tolist(), *extra] if v > 0]
        return min(positive) / 1.4, hi * 1.4
    # a linear axis of quantities that cannot go below 0 starts at 0: bars clip there
    lo = 0.0 if means.min() >= 0 else float(np.nanmin([*bottoms.tolist(), *extra]))
    return lo, hi + 0.06 * (hi - lo or 1.0)


def _dodge(x: np.ndarray, k: int, n: int, log_x: bool) -> np.ndarray:
    """Nudge the k-th of n lines sideways (2% of a doubling on log axes) so bars do not overlap."""
    if n <= 1:
        return x
    shift = (k - (n - 1) / 2) * 0.03
    return (
        x * (2**shift) if log_x else x + shift * (np.diff(np.unique(x)).min() if len(np.unique(x)) > 1 else 1)
    )


def series_of(
    frame: pd.DataFrame,
    x: str,
    metric: str,
    pos_of: dict[Any, Any],
    names: list[str],
    mode: Any,
    colour: int,
    states: dict[Any, str],
) -> Series | None:
    """A :class:`Series` from summarize() rows of one line (``<metric>_mean``, ``<metric>_ci95``)."""
    pick = frame.dropna(subset=[f"{metric}_mean"]).assign(_pos=lambda f: f[x].map(pos_of)).sort_values("_pos")
    if pick.empty:
        return None
    return Series(
        names=names,
        mode=mode,
        colour=colour,
        x=pick["_pos"].to_numpy(dtype=float),
        mean=pick[f"{metric}_mean"].to_numpy(dtype=float),
        ci=pick[f"{metric}_ci95"].fillna(0).to_numpy(dtype=float),
        state=[states.get(v, "unknown") for v in pick[x]],
    )
