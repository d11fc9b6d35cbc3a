"""What holds, cell by cell: a cell's runs' state (steady, transient, overloaded), their run
length, and what caching does there against ``off``, with a verdict that never calls the latency
ratio of an overloaded cell a speed-up.

A cell's **state** (over its ok runs, i.e. its seeds):

    overloaded  some run flagged not steady because arrivals outrun the server: its latency
                grows with run length and has no steady value; its throughput is the capacity
    transient   otherwise, some run flagged not steady for another reason (did not settle)
    steady      every run flagged steady
    unknown     the dataset has no ``steady`` column (an older simulator): nothing is claimed

A cell's **run length** is the mean measured window (``measured_s``) of its ok runs, or their
simulated time where the dataset has no ``measured_s``.

The **verdict** of caching mode m against ``off`` in a cell:

    not measured        m or off has no ok run there
    overloaded in both  latency has no steady value in either: the throughput ratio compares
                        capacities; no speed-up is claimed
    ends the overload   off is overloaded, m is not
    overloaded with caching   m is overloaded, off is not
    helps / stops helping     otherwise: helps when TTFT p99 is at least 5% faster or throughput
                        at least 5% higher, stops helping when neither
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sweep import analysis
from sweep.analysis import CACHING_AXIS
from sweep.report.roles import BASELINE
from sweep.slo import overloaded

HELP_THRESHOLD = 0.05
#: A TTFT p99 whose within-run 95% interval is wider than this (relative) is too uncertain for a
#: speed-up built on it to be ranked or quoted as a headline (scripts/check_steady.py's rule).
P99_PRECISION = 0.25
#: The figure reported as a server's capacity when it is overloaded (achieved throughput).
CAPACITY_METRIC = "throughput_rps"
COMPARE_METRICS: tuple[str, ...] = (
    *analysis.COMPARE_METRICS, "prefix_hit_rate", "prefill_reduction", "ttft_p99_s_ci95_run",
)
STATES = ("steady", "transient", "overloaded", "unknown")


def run_states(df: pd.DataFrame) -> pd.Series:
    """Per ok run: steady / transient / overloaded / unknown (see the module docstring)."""
    if "steady" not in df:
        return pd.Series("unknown", index=df.index)
    steady = df["steady"].astype("boolean")
    state = pd.Series("unknown", index=df.index, dtype=object)
    state[steady.fillna(False).astype(bool)] = "steady"
    state[(~steady.fillna(True)).astype(bool)] = "transient"
    state[overloaded(df)] = "overloaded"
    return state


def run_length(df: pd.DataFrame) -> pd.Series:
    """Per run: the measured window in seconds (simulated time where it was not recorded)."""
    if "measured_s" in df:
        return pd.to_numeric(df["measured_s"], errors="coerce")
    return pd.to_numeric(df.get("sim_duration_s", pd.Series(np.nan, index=df.index)), errors="coerce")


def cell_states(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Per cell of ``keys``: ``state``, ``why`` (the first run's reason when not steady) and
    ``run_length_s`` (mean over its ok runs)."""
    keys = list(keys)
    ok = df[df["status"] == "ok"]
    work = ok[keys].assign(
        _state=run_states(ok).to_numpy(),
        _length=run_length(ok).to_numpy(),
        _why=ok["steady_reason"].fillna("").astype(str).to_numpy() if "steady_reason" in ok else "",
    )
    rank = {s: i for i, s in enumerate(("overloaded", "transient", "unknown", "steady"))}
    grouped = work.groupby(keys, dropna=False, sort=True) if keys else work.assign(_k=0).groupby("_k")
    out = grouped.agg(
        state=("_state", lambda s: min(s, key=rank.__getitem__)),
        why=("_why", lambda s: next((r for r in s if r), "")),
        run_length_s=("_length", "mean"),
    )
    return out.reset_index().drop(columns="_k", errors="ignore")


def caching_cells(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Each caching mode against ``off``, per cell of ``keys``: :func:`analysis.compare` plus
    ``state``/``state_base``, ``run_length_s``/``run_length_s_base``, ``ttft_p99_speedup``
    (null where either is overloaded), ``throughput_gain``, ``helps``, ``verdict``."""
    keys = list(keys)
    goodput = ("goodput_rps",) if "goodput_rps" in df and df["goodput_rps"].notna().any() else ()
    cmp = analysis.compare(df, CACHING_AXIS, BASELINE, metrics=[*COMPARE_METRICS, *goodput], by=keys)
    states = cell_states(df, [*keys, CACHING_AXIS])
    base = states[states[CACHING_AXIS] == BASELINE].drop(columns=CACHING_AXIS)
    base = base.rename(
        columns={"state": "state_base", "why": "why_base", "run_length_s": "run_length_s_base"}
    )
    cmp = cmp.merge(states, on=[*keys, CACHING_AXIS], how="left")
    cmp = cmp.merge(base, on=keys, how="left") if keys else cmp.merge(base, how="cross")
    for col in ("state", "state_base"):
        cmp[col] = cmp[col].fillna("unknown")
    either = (cmp["state"] == "overloaded") | (cmp["state_base"] == "overloaded")
    cmp["ttft_p99_speedup"] = (1 / cmp["ttft_p99_s_ratio"]).where(~either)
    cmp["ttft_p99_precise"] = _precise(cmp, "") & _precise(cmp, "_base")
    cmp["throughput_gain"] = cmp["throughput_rps_ratio"] - 1
    cmp["transient"] = (cmp["state"] == "transient") | (cmp["state_base"] == "transient")
    cmp["run_length_what"] = "measured" if "measured_s" in df else "simulated"
    cmp["verdict"] = [_verdict(row) for _, row in cmp.iterrows()]
    cmp["helps"] = cmp["verdict"].isin(["helps", "ends the overload"]) | (
        (cmp["verdict"] == "overloaded in both") & (cmp["throughput_gain"] >= HELP_THRESHOLD)
    )
    return cmp


def _precise(cmp: pd.DataFrame, side: str) -> pd.Series:
    """TTFT p99 known within :data:`P99_PRECISION` (its within-run interval); True where the
    dataset has no intervals (an older simulator: nothing to judge by)."""
    ci = f"ttft_p99_s_ci95_run{side}"
    if ci not in cmp or cmp[ci].isna().all():
        return pd.Series(True, index=cmp.index)
    rel = cmp[ci] / cmp[f"ttft_p99_s{side}"]
    return (rel <= P99_PRECISION).fillna(False)


def _verdict(row: pd.Series) -> str:
    if pd.isna(row["throughput_rps"]) or pd.isna(row["throughput_rps_base"]):
        return "not measured"
    on, off = row["state"] == "overloaded", row["state_base"] == "overloaded"
    if on and off:
        return "overloaded in both"
    if off:
        return "ends the overload"
    if on:
        return "overloaded with caching"
    faster = row["ttft_p99_speedup"] >= 1 + HELP_THRESHOLD
    more = row["throughput_gain"] >= HELP_THRESHOLD
    return "helps" if faster or more else "stops helping"


def cell_status(df: pd.DataFrame, keys: list[str]) -> dict[tuple[object, ...], str]:
    """Per cell of ``keys``: "ok" if any run is ok, else the first of no_data / infeasible / failed."""
    order = ("ok", "no_data", "infeasible", "failed")  # the first present wins; others count as failed
    rank = df["status"].map({s: i for i, s in enumerate(order)}).fillna(len(order) - 1)
    best = rank.groupby([df[k] for k in keys], dropna=False).min()
    return {(k if isinstance(k, tuple) else (k,)): order[int(v)] for k, v in best.items()}
