"""The report's sentences: what caching buys in one section, each sentence a count over the same
measured cells, so that no two sentences can contradict each other.

Per model (and facet value) and caching mode, in this order, each only when it has something to
say: how many cells were measured and how many did not settle; TTFT p99 (cells at least 5%
faster, of the cells where a speed-up means something: neither run overloaded); throughput
(cells at least 5% higher, of all measured cells); overloaded cells (capacity, never a
speed-up); where caching stops helping; the hit rate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sweep.report.cells import HELP_THRESHOLD, P99_PRECISION
from sweep.report.fmt import LABELS, UNITS, gain, label, listing, num, pct, sort_values, times, with_unit
from sweep.report.roles import Y_CANDIDATES

Tick = Callable[[Any], str]


@dataclass
class Finding:
    """A titled list of sentences: one block of the page's key findings."""

    title: str
    lines: list[str] = field(default_factory=list)


def cell_name(row: pd.Series, x: str | None, y: str | None, tick: Tick) -> str:
    """``64 concurrent users at 80 GiB``."""
    bits = []
    if x in UNITS:
        bits.append(with_unit(x, row[x]))
    elif x:
        bits.append(f"{num(row[x])} {label(x)}" if x in LABELS else f"{label(x)} {num(row[x])}")
    if y:
        bits.append(tick(row[y]).split("\n")[0] if y in Y_CANDIDATES else f"{label(y)} {num(row[y])}")
    return " at ".join(bits) or "the only cell"


def cells_text(
    frame: pd.DataFrame, x: str | None, y: str | None, tick: Tick, every: Sequence[Any] = (), limit: int = 6
) -> str:
    """Cells named compactly: x values that share the same y values are merged, and a y list equal
    to ``every`` is said so: "4, 16 and 64 concurrent users at every GPU memory; 128 ... at 24 GiB"."""
    if not (x and y):
        names = [cell_name(r, x, y, tick) for _, r in frame.iterrows()]
        return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    by_ys: dict[tuple[Any, ...], list[Any]] = {}
    for xv in sort_values(frame[x].tolist()):
        ys = tuple(sort_values(frame.loc[frame[x] == xv, y].tolist()))
        by_ys.setdefault(ys, []).append(xv)
    groups = []
    for ys, xvs in by_ys.items():
        xs_text = listing([num(v) for v in xvs])
        if x in UNITS:
            who = xs_text + UNITS[x]
        else:
            who = f"{xs_text} {label(x)}" if x in LABELS else f"{label(x)} {xs_text}"
        if len(every) > 1 and set(ys) == set(every):
            where = f"every {label(y).split(' (')[0]}"
        else:
            where = ", ".join(
                tick(v).split("\n")[0] if y in Y_CANDIDATES else f"{label(y)} {num(v)}" for v in ys
            )
        groups.append(f"{who} at {where}")
    more = f"; and {len(groups) - limit} more" if len(groups) > limit else ""
    return "; ".join(groups[:limit]) + more


def caching_finding(title: str, sub: pd.DataFrame, x: str | None, y: str | None, tick: Tick) -> Finding:
    """Sentences about one caching mode against ``off`` over the cells of ``sub``
    (:func:`sweep.report.cells.caching_cells` rows of one mode)."""
    measured = sub[sub["verdict"] != "not measured"]
    if measured.empty:
        return Finding(title, ["No cell has ok runs both with and without caching: see the failures table."])
    every = measured[y].unique().tolist() if y else []

    def where(frame: pd.DataFrame) -> str:
        return cells_text(frame, x, y, tick, every)

    n = len(measured)
    lines = [_measured_line(measured, where)]
    calm = measured[measured["ttft_p99_speedup"].notna()]
    faster = calm[calm["ttft_p99_speedup"] >= 1 + HELP_THRESHOLD]
    if len(calm):
        lines.append(
            f"TTFT p99: at least {HELP_THRESHOLD:.0%} faster with caching in {len(faster)} of {len(calm)}"
            f" cells without overload{_best_speedup(calm, x, y, tick)},"
            f" median {times(calm['ttft_p99_speedup'].median())}."
        )
    more = measured[measured["throughput_gain"] >= HELP_THRESHOLD]
    best_g = measured.loc[measured["throughput_gain"].idxmax()]
    lines.append(
        f"Throughput: at least {HELP_THRESHOLD:.0%} higher in {len(more)} of {n} cells; up to"
        f" {gain(best_g['throughput_gain'])} ({cell_name(best_g, x, y, tick)}), median"
        f" {gain(measured['throughput_gain'].median())}."
    )
    lines += _overload_lines(measured, where)
    stops = measured[measured["verdict"] == "stops helping"]
    if len(stops):
        lines.append(
            f"Caching stops helping (neither {HELP_THRESHOLD:.0%} faster nor {HELP_THRESHOLD:.0%} more"
            f" throughput) in {len(stops)} of {n} cells: {where(stops)}."
        )
    hit = measured["prefix_hit_rate"].dropna()
    if not hit.empty:
        span = (
            pct(hit.min(), False)
            if pct(hit.min(), False) == pct(hit.max(), False)
            else f"{pct(hit.min(), False)} to {pct(hit.max(), False)}"
        )
        lines.append(f"Hit rate {span} of prompt tokens.")
    return Finding(title, lines)


def _best_speedup(calm: pd.DataFrame, x: str | None, y: str | None, tick: Tick) -> str:
    """"; up to 5.1x (cell)" over the cells whose p99s are both precise enough to quote, and
    how many were not."""
    precise = calm[calm["ttft_p99_precise"]] if "ttft_p99_precise" in calm else calm
    vague = len(calm) - len(precise)
    note = (
        f" ({vague} cell{'s' if vague != 1 else ''} left out: a p99 known only within more than"
        f" ±{P99_PRECISION:.0%}, run longer to rank {'them' if vague != 1 else 'it'})"
        if vague else ""
    )
    if precise.empty:
        return note
    best = precise.loc[precise["ttft_p99_speedup"].idxmax()]
    return f"; up to {times(best['ttft_p99_speedup'])} ({cell_name(best, x, y, tick)}){note}"


def _measured_line(measured: pd.DataFrame, where: Callable[[pd.DataFrame], str]) -> str:
    n = len(measured)
    text = f"{n} cell{'s' if n != 1 else ''} measured with and without caching"
    lengths = pd.concat([measured["run_length_s"], measured["run_length_s_base"]]).dropna()
    if not lengths.empty:
        lo, hi = lengths.min(), lengths.max()
        span = f"{lo:,.0f} s" if f"{lo:,.0f}" == f"{hi:,.0f}" else f"{lo:,.0f} to {hi:,.0f} s"
        text += f" (runs {measured['run_length_what'].iloc[0]} over {span})"
    transient = measured[measured["transient"]]
    if len(transient):
        text += (
            f"; {len(transient)} did not settle (hatched in the heatmaps: {where(transient)}): their"
            " figures describe a transient, run them longer"
        )
    return text + "."


def _overload_lines(measured: pd.DataFrame, where: Callable[[pd.DataFrame], str]) -> list[str]:
    lines = []
    both = measured[measured["verdict"] == "overloaded in both"]
    if len(both):
        cap = f"{num(both['throughput_rps_base'].min())} to {num(both['throughput_rps_base'].max())}"
        lines.append(
            f"Overloaded with and without caching in {len(both)} cells ({where(both)}): arrivals outrun the"
            f" server, so latency there has no steady value and no speed-up is claimed; capacity without"
            f" caching {cap} requests/s, with caching {gain(both['throughput_gain'].median())} (median)."
        )
    ends = measured[measured["verdict"] == "ends the overload"]
    if len(ends):
        lines.append(
            f"Caching ends the overload in {len(ends)} cells ({where(ends)}): without it arrivals"
            " outrun the server."
        )
    worse = measured[measured["verdict"] == "overloaded with caching"]
    if len(worse):
        lines.append(f"Overloaded with caching only in {len(worse)} cells ({where(worse)}).")
    return lines
