"""Findings per model: a handful of sentences, each naming its evidence (the overview's figures,
or counts over the model's cells with the cell that gives each extreme), in this order:

    1. the headline per GPU, with and without caching (the overview's row, at its reference)
    2. per caching mode against off, over every cell of the model: how many cells are at least 5%
       faster in TTFT p99 (of those without overload) and 5% higher in throughput; medians; the
       best cell of each (a speed-up only where both p99s are precise enough to quote)
    3. per caching mode, when it happens: where it ends an overload, and where it stops helping,
       with the axis value most of those cells share

Everything else (per facet value, the capacity clauses) folds away under the model's sentences.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sweep.analysis import CACHING_AXIS
from sweep.report.cells import HELP_THRESHOLD, caching_cells
from sweep.report.fmt import gain, label, listing, num, setting, times, with_unit
from sweep.report.overview import Headline, gain_of
from sweep.report.roles import BASELINE, determined, sort_modes
from sweep.search import LOAD_AXES

MAX_MODES = 2  # caching modes given their own sentences per model


def cell_words(row: pd.Series, keys: list[str]) -> str:
    """``64 users, A100-80GB, GPU memory utilisation 0.9, system prompts 1``."""
    bits = []
    for k in keys:
        v = row[k]
        if k in LOAD_AXES or k in ("gpu.memory_gib", "engine.kv_budget_gib"):
            bits.append(with_unit(k, v))
        elif k == "gpu.name":
            bits.append(str(v))
        else:
            bits.append(f"{label(k).split(' (')[0]} {num(v)}")
    return ", ".join(bits) or "the only cell"


def headline_sentence(hl: Headline, rows: pd.DataFrame, model: Any) -> str:
    """Per GPU (and tensor parallel) of ``model``: the overview's figure per caching mode, e.g.
    ``A100-80GB: 8 without caching, 128 with prefix (16.00x)``."""
    mine = rows[rows["model.name"] == model]
    if mine.empty:
        return ""
    per_gpu = []
    for gpu, group in mine.groupby("gpu.name", dropna=False, sort=True):
        modes = sort_modes(group[CACHING_AXIS].tolist()) if CACHING_AXIS in group else [None]
        off = group[group[CACHING_AXIS] == BASELINE].iloc[0] if BASELINE in modes else None
        bits = []
        for mode in modes:
            row = group[group[CACHING_AXIS] == mode].iloc[0] if mode is not None else group.iloc[0]
            text = _figure(hl, row)
            if mode == BASELINE:
                bits.append(f"{text} without caching")
            elif mode is not None:
                buys = gain_of(hl, row, off)[0] if off is not None else "-"
                bits.append(f"{text} with {mode}" + (f" ({buys})" if buys != "-" else ""))
            else:
                bits.append(text)
        per_gpu.append(f"{gpu}: " + ", ".join(bits))
    held = listing([setting(a, v) for a, v in hl.reference.items()])
    unit = f"{hl.unit} per GPU" if hl.load or hl.capacity is None else hl.unit
    head = hl.what[0].upper() + hl.what[1:]
    return f"{head} ({unit}{', at ' + held if held else ''}): " + "; ".join(per_gpu) + " (overview table)."


def _figure(hl: Headline, row: pd.Series) -> str:
    if row.get("bound") == "none":
        return "none"
    value = row.get("value")
    if value is None or pd.isna(value):
        return "no steady run" if hl.capacity is None else "-"
    text = num(round(float(value), 1) if value >= 10 else float(f"{value:.3g}"))
    text = {">=": "≥ ", "<=": "≤ "}.get(str(row.get("bound")), "") + text
    if hl.capacity is None and hl.load and pd.notna(row.get("load")):
        text += f" at {with_unit(hl.load, row['load'])}"
    return text


def _mostly(frame: pd.DataFrame, everything: pd.DataFrame, keys: list[str]) -> str:
    """``, most of them (25) at system prompts 256``: the axis value shared by at least 60% of
    ``frame``'s cells and over-represented against ``everything``; "" when none is."""
    best: tuple[float, str, int] | None = None
    if len(frame) < 3:  # "most of them" of one or two cells says nothing
        return ""
    for k in keys:
        counts = frame[k].value_counts(dropna=False)
        if counts.empty:
            continue
        value, n = counts.index[0], int(counts.iloc[0])
        share = n / len(frame)
        base = float((everything[k] == value).mean()) if len(everything) else 1.0
        if share >= 0.6 and share > base * 1.2 and (best is None or share > best[0]):
            best = (share, cell_words(pd.Series({k: value}), [k]), n)
    return f", most of them ({best[2]}) at {best[1]}" if best else ""


def mode_sentences(cmp: pd.DataFrame, mode: Any, keys: list[str]) -> list[str]:
    """Sentences 2 and 3 of the module docstring for one caching mode."""
    sub = cmp[(cmp[CACHING_AXIS] == mode) & (cmp["verdict"] != "not measured")]
    if sub.empty:
        return [f"'{mode}' against off: no cell has ok runs both ways (see the failures table)."]
    calm = sub[sub["ttft_p99_speedup"].notna()]
    faster = calm[calm["ttft_p99_speedup"] >= 1 + HELP_THRESHOLD]
    text = f"'{mode}' against off, over {len(sub)} cells measured both ways:"
    if len(calm):
        precise = calm[calm["ttft_p99_precise"]] if "ttft_p99_precise" in calm else calm
        best = ""
        if len(precise):
            top = precise.loc[precise["ttft_p99_speedup"].idxmax()]
            best = f"; up to {times(top['ttft_p99_speedup'])} at {cell_words(top, keys)}"
        text += (
            f" TTFT p99 at least {HELP_THRESHOLD:.0%} faster in {len(faster)} of {len(calm)} cells without"
            f" overload (median {times(calm['ttft_p99_speedup'].median())}{best});"
        )
    more = sub[sub["throughput_gain"] >= HELP_THRESHOLD]
    top_g = sub.loc[sub["throughput_gain"].idxmax()]
    text += (
        f" throughput at least {HELP_THRESHOLD:.0%} higher in {len(more)} of {len(sub)}"
        f" (median {gain(sub['throughput_gain'].median())}; up to {gain(top_g['throughput_gain'])}"
        f" at {cell_words(top_g, keys)})."
    )
    out = [text]
    ends = sub[sub["verdict"] == "ends the overload"]
    stops = sub[sub["verdict"] == "stops helping"]
    clauses = []
    if len(ends):
        clauses.append(f"ends the overload in {len(ends)} cells{_mostly(ends, sub, keys)}")
    if len(stops):
        clauses.append(
            f"stops helping (under {HELP_THRESHOLD:.0%} on both) in {len(stops)} of {len(sub)}"
            f"{_mostly(stops, sub, keys)}"
        )
    if clauses:
        out.append(f"'{mode}' " + "; ".join(clauses) + ".")
    return out


def cell_keys(varied: list[str]) -> list[str]:
    """The axes of a model's cells (every varied axis but the model and caching)."""
    return [c for c in varied if c not in ("model.name", CACHING_AXIS)]


def model_cells(mdf: pd.DataFrame, varied: list[str]) -> pd.DataFrame:
    """Each caching mode against off in every cell of one model (:func:`caching_cells`)."""
    return caching_cells(mdf, cell_keys(varied))


def caching_sentences(mdf: pd.DataFrame, varied: list[str], cmp: pd.DataFrame | None) -> list[str]:
    """Sentences 2 and 3 of the module docstring for one model's runs ``mdf``; ``cmp``: its
    :func:`model_cells` (None when the sweep does not compare caching: no sentence)."""
    out: list[str] = []
    if cmp is None:
        return out
    keys = cell_keys(varied)
    named: list[str] = []  # the axes that name a cell: varied here, not following from another
    for k in keys:
        if mdf[k].nunique(dropna=False) > 1 and not (named and determined(mdf, k, named)):
            named.append(k)
    modes = [m for m in sort_modes(cmp[CACHING_AXIS].dropna().unique().tolist()) if m != BASELINE]
    for mode in reversed(modes[-MAX_MODES:]):  # the strongest mode (prefix) first
        out += mode_sentences(cmp, mode, named or keys)
    return out
