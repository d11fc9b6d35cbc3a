"""What the report's sections share: the context (output folder, roles, SLO, figure numbering),
figure embedding, memory tick labels and what an empty cell says."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from sweep.report.fmt import num, slug, tokens
from sweep.report.roles import BASELINE, Y_CANDIDATES, Roles
from sweep.slo import Slo

Tick = Callable[[Any], str]


@dataclass
class Context:
    """What every section shares: where figures go, the roles, the SLO (if any)."""

    out: Path
    roles: Roles
    slo: Slo | None = None
    figures: int = 0
    prefix: str = ""  # of figure file names: each model's part has its own (drawn in parallel)

    def save(self, fig: Figure, name: str) -> str:
        self.figures += 1
        filename = f"fig{self.prefix}{self.figures:02d}-{slug(name)}.png"
        fig.savefig(self.out / filename)
        return filename


def img(name: str, alt: str) -> str:
    return f'<figure><img src="{html.escape(name)}" alt="{html.escape(alt)}"></figure>'


def y_tick_fn(df: pd.DataFrame, y: str | None) -> tuple[Tick, dict[Any, float]]:
    """Tick label for a memory value: the value, its unit and the KV capacity it gave, in tokens."""
    capacity: dict[Any, float] = {}
    if y is not None and "kv_capacity_tokens" in df:
        capacity = df.groupby(y)["kv_capacity_tokens"].mean().dropna().to_dict()

    def tick(value: Any) -> str:
        text = num(value)
        if y in ("gpu.memory_gib", "engine.kv_budget_gib"):
            text += " GiB"
        if y in Y_CANDIDATES and value in capacity:
            text += f"\n{tokens(capacity[value])} KV tok"
        return text

    return tick, capacity


def blank(status: dict[tuple[Any, ...], str], cell: tuple[Any, ...], mode: str | None = None) -> str:
    """What an empty heatmap cell says: why the run, or its baseline, has no number."""
    own = status.get((*cell, mode) if mode is not None else cell, "")
    if own in ("infeasible", "failed", "no_data"):
        return own.replace("_", " ")
    base = status.get((*cell, BASELINE), "") if mode is not None else ""
    if base in ("infeasible", "failed", "no_data"):
        return f"off {base.replace('_', ' ')}"
    return "n/a" if own != "" else "not run"
