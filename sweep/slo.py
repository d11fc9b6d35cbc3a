"""Service-level objectives on the runs table: parse them, and say which runs meet them.

An SLO is one or more limits on run-level metrics, all of which must hold::

    ttft_p99_s<1                     TTFT p99 under 1 s
    ttft_p99_s<=500ms, tpot_p99_s<0.05
    {ttft_p99_s: 1.0}                (a sweep spec's mapping: each metric <= its value)

A run **meets** the SLO when its status is ``ok``, it is not overloaded (``steady`` false with a
reason starting "overloaded": its latency has no steady value, so a limit on it means nothing)
and every limited metric is present and within its limit. A **probe** (one value of a searched
axis in one cell, run once per seed) meets the SLO when every one of its seeds' runs does: the
planner's figure must hold whatever the arrival pattern, so seeds are not averaged away.

The limits also give each run's per-request thresholds (``run.slo``: ``ttft_s``, ``tpot_s``,
``e2e_s``), from which the simulator counts goodput: a limit on any TTFT statistic sets
``ttft_s``, and likewise for TPOT and end-to-end latency.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from simcore.errors import ConfigError
from simcore.metrics import SUMMARY_FIELDS

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_LIMIT_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*(ms|s)?\s*$")
_PER_REQUEST = {"ttft": "ttft_s", "tpot": "tpot_s", "e2e": "e2e_s"}
#: Metrics an SLO may limit: every numeric run-level figure.
NUMERIC_METRICS: tuple[str, ...] = tuple(k for k, kind in SUMMARY_FIELDS.items() if kind in ("int", "float"))
_NAMES = {"ttft": "TTFT", "tpot": "TPOT", "e2e": "end-to-end latency", "queue": "queueing"}


@dataclass(frozen=True)
class Limit:
    """``metric op value``, e.g. ``ttft_p99_s < 1.0`` (seconds for ``_s`` metrics)."""

    metric: str
    op: str
    value: float

    def text(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def describe(self) -> str:
        """``TTFT p99 < 1 s``."""
        head, *rest = self.metric.removesuffix("_s").split("_")
        name = " ".join([_NAMES.get(head, head), *rest]) if self.metric.endswith("_s") else self.metric
        unit = " s" if self.metric.endswith("_s") else ""
        op = {"<=": "≤", ">=": "≥"}.get(self.op, self.op)
        return f"{name} {op} {self.value:g}{unit}"

    def holds(self, values: pd.Series) -> pd.Series:
        """Per value: within the limit (a null is not)."""
        numbers = pd.to_numeric(values, errors="coerce").astype(float)
        return _OPS[self.op](numbers, self.value) & numbers.notna()


@dataclass(frozen=True)
class Slo:
    """A conjunction of :class:`Limit`; parse with :meth:`parse` or :meth:`from_mapping`."""

    limits: tuple[Limit, ...]

    @classmethod
    def parse(cls, text: str, known: Iterable[str] = NUMERIC_METRICS) -> Slo:
        """``"ttft_p99_s<1, tpot_p99_s<=50ms"`` -> an SLO; raises :class:`ConfigError` naming the bad part.

        A metric may drop its ``_s`` (``ttft_p99<1s``); ``ms`` and ``s`` units are understood."""
        names = list(known)
        limits = []
        for part in filter(str.strip, re.split(r"[,;]|\band\b", text)):
            found = _LIMIT_RE.match(part)
            if not found:
                raise ConfigError(
                    f"--slo {part.strip()!r}: write METRIC<VALUE, e.g. ttft_p99_s<1 (several: "
                    "ttft_p99_s<1,tpot_p99_s<0.05)"
                )
            metric, op, number, unit = found.groups()
            metric = _known_metric(metric, names, f"--slo {part.strip()!r}")
            try:
                value = float(number) * (1e-3 if unit == "ms" else 1.0)
            except ValueError:
                raise ConfigError(f"--slo {part.strip()!r}: {number!r} is not a number") from None
            if not math.isfinite(value):
                raise ConfigError(f"--slo {part.strip()!r}: the limit must be a finite number")
            limits.append(Limit(metric, op, value))
        if not limits:
            raise ConfigError("--slo is empty: give e.g. ttft_p99_s<1")
        return cls(tuple(limits))

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Any], known: Iterable[str] = NUMERIC_METRICS, where: str = "slo"
    ) -> Slo:
        """A spec's ``{ttft_p99_s: 1.0}``: each metric at most its value. ``where`` starts errors."""
        names = list(known)
        limits = []
        for metric, value in mapping.items():
            name = _known_metric(str(metric), names, f"{where}.{metric}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{where}.{metric} = {value!r}: not a number: give a limit such as 1.0")
            limits.append(Limit(name, "<=", float(value)))
        if not limits:
            raise ConfigError(f"{where} is empty: give e.g. {{ttft_p99_s: 1.0}}")
        return cls(tuple(limits))

    def same_as(self, other: Slo) -> bool:
        """The same limits, ``<`` and ``<=`` taken alike (they differ only on a tie)."""

        def key(slo: Slo) -> set[tuple[str, str, float]]:
            return {(lim.metric, lim.op[0], lim.value) for lim in slo.limits}

        return key(self) == key(other)

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(limit.metric for limit in self.limits))

    def text(self) -> str:
        """``ttft_p99_s<=1``: what the ``slo`` column of ``capacity/`` holds."""
        return ",".join(limit.text() for limit in self.limits)

    def describe(self) -> str:
        """``TTFT p99 ≤ 1 s and TPOT p99 ≤ 0.05 s``."""
        return " and ".join(limit.describe() for limit in self.limits)

    def per_request(self) -> dict[str, float]:
        """``run.slo`` thresholds for the simulator's goodput: ``{"ttft_s": 1.0}``."""
        out: dict[str, float] = {}
        for limit in self.limits:
            key = _PER_REQUEST.get(limit.metric.split("_")[0])
            if key is not None and limit.op in ("<", "<="):
                out[key] = min(out.get(key, math.inf), limit.value)
        return out

    def meets(self, runs: pd.DataFrame) -> pd.Series:
        """Per run: meets the SLO (see the module docstring). Missing metric columns fail."""
        ok = runs["status"].eq("ok") & ~overloaded(runs)
        for limit in self.limits:
            ok &= limit.holds(runs[limit.metric]) if limit.metric in runs else False
        return ok.astype(bool)

    def why_not(self, runs: pd.DataFrame) -> pd.Series:
        """Per run: ``""`` when it meets the SLO, else the first reason (status, overload, a limit)."""
        reasons = pd.Series("", index=runs.index, dtype=object)
        for limit in reversed(self.limits):
            values = runs[limit.metric] if limit.metric in runs else pd.Series(math.nan, index=runs.index)
            bad = ~limit.holds(values)
            shown = pd.to_numeric(values, errors="coerce").map(lambda v: "none" if pd.isna(v) else f"{v:.3g}")
            reasons = reasons.where(~bad, limit.metric + " " + shown + f" (limit {limit.op} {limit.value:g})")
        reasons = reasons.where(~overloaded(runs), "overloaded")
        status = runs["status"].astype(str)
        return reasons.where(status.eq("ok"), "status " + status)


def overloaded(runs: pd.DataFrame) -> pd.Series:
    """Per run: flagged not steady because arrivals outrun the server (False when not recorded)."""
    if "steady" not in runs or "steady_reason" not in runs:
        return pd.Series(False, index=runs.index)
    steady = runs["steady"].astype("boolean").fillna(True)
    reason = runs["steady_reason"].fillna("").astype(str)
    return (~steady & reason.str.startswith("overloaded")).astype(bool)


def _known_metric(metric: str, names: list[str], where: str) -> str:
    if metric in names:
        return metric
    if f"{metric}_s" in names:
        return f"{metric}_s"
    close = difflib.get_close_matches(metric, names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "use a run metric such as ttft_p99_s or tpot_p99_s"
    raise ConfigError(f"{where}: no metric {metric!r}: {hint}")
