"""Which column plays which part in the report's pictures, inferred from the data and the spec.

x ("load")      workload.users, else workload.session_rate / workload.request_rate, else the
                first other varied numeric axis
y ("memory")    engine.kv_budget_gib / gpu.memory_gib / engine.gpu_memory_utilization /
                gpu.name, whichever the sweep varies (labelled with the KV capacity in tokens)
caching         engine.prefix_caching; compared against ``off`` when both are present
facets          every other varied axis that does not follow from those: one section per
                model and facet value
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from sweep import analysis
from sweep.analysis import CACHING_AXIS, SweepInfo
from sweep.report.fmt import sort_values

BASELINE = "off"
X_CANDIDATES: tuple[str, ...] = ("workload.users", "workload.session_rate", "workload.request_rate")
# Memory axes in order of preference when the spec names several; gpu.name last because a GPU
# changes speed as well as memory (and gpu.memory_gib follows it).
Y_CANDIDATES: tuple[str, ...] = (
    "engine.kv_budget_gib",
    "gpu.memory_gib",
    "engine.gpu_memory_utilization",
    "gpu.name",
)
MODE_ORDER = ("off", "session", "prefix")


@dataclass(frozen=True)
class Roles:
    """Which column plays which part in the pictures (see the module docstring)."""

    x: str | None
    y: str | None
    compare: bool
    modes: tuple[str, ...]
    facets: tuple[str, ...]


def determined(df: pd.DataFrame, col: str, by: list[str]) -> bool:
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
    kept: list[str] = []  # an axis that follows from the core and the facets before it is none
    for c in rest:
        if c not in (x, y) and not determined(df, c, [*core, *kept]):
            kept.append(c)
    facets = tuple(kept)
    caching_values = [str(v) for v in df[CACHING_AXIS].dropna().unique()] if CACHING_AXIS in df else []
    compare = CACHING_AXIS in varied and BASELINE in caching_values
    modes = tuple(sort_modes(caching_values))
    if compare:
        modes = tuple(m for m in modes if m != BASELINE)
    return Roles(x=x, y=y, compare=compare, modes=modes, facets=facets)


def sort_modes(modes: list[Any]) -> list[Any]:
    return sorted(modes, key=lambda v: (MODE_ORDER.index(v) if v in MODE_ORDER else 9, str(v)))


def model_order(df: pd.DataFrame, info: SweepInfo) -> list[Any]:
    """Models in the order the spec lists them (its grid, else a zip group; usually by size),
    else in natural order."""
    grid = info.spec.get("grid") or {}
    zipped = info.spec.get("zip") or []
    groups = [grid] + [g for g in (zipped if isinstance(zipped, list) else [zipped]) if isinstance(g, dict)]
    listed: list[Any] = []
    for group in groups:
        found = group.get("model") or group.get("model.name") if isinstance(group, dict) else None
        if isinstance(found, list):
            listed = found
            break
    names = [v if isinstance(v, str) else v.get("name") for v in listed if isinstance(v, (str, dict))]
    rank = {name: i for i, name in enumerate(names) if name}
    return sort_values(df["model.name"].dropna().tolist(), {k: float(v) for k, v in rank.items()})
