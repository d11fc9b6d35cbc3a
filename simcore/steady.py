"""The measured window and the steady-state verdict: the steady-state part of the metrics.

Computed from the per-request records only (and the time the KV cache first filled), so every
executor, the report and the ``until: steady`` check see the same verdict.

The measured window
-------------------
A run accepts arrivals until it stops (``stop_s``) and then drains. Its warm-up ends at
``warmup_end_s``: ``run.warmup_s`` when given (``warmup_rule`` "explicit"), else where MSER-5
(``stats.mser5_cut``) truncates the TTFT series in arrival order, and never before the KV cache
first filled (the first admission after the block pool's first eviction), since until then the
cache holds everything ever computed and its hit rate is a transient ("mser5"). TTFT is the
series because it carries queueing and prefill, where a filling cache and a growing backlog
show, and not the request's own output length (which dominates end-to-end time and is noise
here); arrival order, because the state a request meets is set when it arrives. The window is
[warmup_end_s, stop_s]: it *measures* the requests that arrived in it (they all complete: the run
drains) and *counts* the completions inside it (throughput, goodput).

The verdict
-----------
``steady`` is true, and ``steady_reason`` empty, unless (checked in order):

- *too few measured requests*: fewer than ``MIN_MEASURED`` (20 batches of 5);
- *overloaded* (open-loop workloads, whose arrivals do not wait for replies): the waiting queue
  (arrived, not yet admitted to the batch) grows across the window by at least ``OVERLOAD_SHARE``
  of its arrivals and ``MIN_GROWTH`` requests, in both halves: arrivals outrun the server and
  latency grows with run length. The batch itself is bounded by ``max_num_seqs``: only the queue
  grows without bound, and it stays short in a stable run even while the batch fills. The run's
  throughput is then the server's capacity (``capacity_rps``; null otherwise). A closed loop
  (chat users) cannot outrun the server: each user waits for its reply;
- *too few measured requests* again: for a closed loop fewer than ``PER_USER`` per user, for an
  open loop fewer than ``PER_USER`` times the mean number of requests in the system (Little's
  law): a window must span several request lifetimes, or it sees one phase of a slow transient
  and calls it steady;
- *cache still filling*: the KV cache first filled inside the window (explicit warm-up), or the
  prefix hit rate of the window's first and second half differ by Welch's test of 10 batch
  means against 10 at 99% (``stats.drift``) and by more than ``HIT_RATE_SHIFT``;
- *latency still drifting*: the same test on TTFT, with a change above ``TTFT_SHIFT``.

A cache that never fills during a run is taken as settled: whatever it held was there to hit.

``until: steady`` (:class:`SteadyMonitor`) asks the same questions at chosen completions, with
only what is known at that completion's finish time, and stops the arrivals when the run is
steady with every target CI met, or overloaded with ``STOP_OVERLOADED_ARRIVALS`` arrivals in its
window. Such a run's summary reports what that check saw: the requests still in flight when it
stopped the arrivals are left out of the measured figures (they finish in the drain), so the
stated verdict is the one the run stopped on, not a second test on more data. (One difference
remains: the check reads engine-side times, the summary the client's, which add the front-end
latency and the first-token streaming lag; a constant offset changes no verdict.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from simcore import stats
from simcore.config import CI_METRICS, SimConfig, SloConfig

if TYPE_CHECKING:
    from simcore.metrics import RequestRecord

_STATS = ("mean", "p50", "p90", "p99")
CI_SUFFIX = "_ci95_run"  # within-run CIs; sweep/analysis.py's ``_ci95`` is over seeds
MIN_MEASURED = stats.MEAN_BATCHES * stats.MIN_BATCH  # requests any verdict needs
PER_USER = 5  # measured requests per closed-loop user (or per request in the system, open loop)
MIN_GROWTH = 20  # requests the queue must grow by to call a run overloaded
OVERLOAD_SHARE = 0.05  # ... and the share of the window's arrivals it must grow by
HIT_RATE_SHIFT = 0.02  # a hit-rate change that counts as "cache still filling"
TTFT_SHIFT = 0.10  # a relative TTFT change that counts as drift
STOP_OVERLOADED_ARRIVALS = 1000  # until: steady stops an overloaded run once its window has this many
STEADY_STOPS = ("steady", "overloaded")  # the stop reasons of SteadyMonitor


def latency_stats(prefix: str, values: np.ndarray) -> dict[str, float | None]:
    """``<prefix>_mean_s``, ``_p50_s``, ``_p90_s``, ``_p99_s`` of ``values`` (nulls when empty)."""
    if values.size == 0:
        return {f"{prefix}_{s}_s": None for s in _STATS}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        f"{prefix}_mean_s": float(values.mean()),
        f"{prefix}_p50_s": float(p50),
        f"{prefix}_p90_s": float(p90),
        f"{prefix}_p99_s": float(p99),
    }


def ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


@dataclass(frozen=True)
class Setting:
    """What the window and the verdict need from the config."""

    warmup_s: float | None
    users: int | None  # closed loop: its users; None: an open loop
    slo: SloConfig | None

    @classmethod
    def of(cls, cfg: SimConfig) -> Setting:
        users = None if cfg.workload.open_loop else getattr(cfg.workload, "users", None)
        return cls(cfg.run.warmup_s, users, cfg.run.slo)


@dataclass
class Series:
    """Per-request arrays in arrival order, as known at time ``t`` (``inf``: the run's end).

    ``done``: completed by ``t``; ``failed``: refused at arrival (never fits). ``complete`` is the
    length of the leading run of requests that are done or failed: every later request's outcome
    may still change, so latency figures taken at ``t`` use only that prefix (no bias toward the
    requests that happened to finish first)."""

    t: float
    arrival: np.ndarray
    admitted: np.ndarray  # first admission, inf if none by t
    first: np.ndarray
    finish: np.ndarray
    done: np.ndarray
    failed: np.ndarray
    prompt: np.ndarray
    cached: np.ndarray
    output: np.ndarray
    recomputed: np.ndarray
    complete: int


_COLUMNS = (  # record field -> array dtype, for the arrays a Series is built from
    ("arrival_s", float), ("admitted_s", float), ("first_token_s", float), ("finish_s", float),
    ("prompt_tokens", np.int64), ("cached_tokens", np.int64), ("output_tokens", np.int64),
    ("recomputed_tokens", np.int64),
)
_COMPLETED, _FAILED = 1, 2
_STATUS_CODE = {"completed": _COMPLETED, "failed": _FAILED}


def columns(records: Sequence[RequestRecord]) -> dict[str, np.ndarray]:
    """The records' fields as arrays (and ``status``: 0 pending, 1 completed, 2 failed)."""
    cols = {name: np.array([getattr(r, name) for r in records], dtype=kind) for name, kind in _COLUMNS}
    cols["status"] = np.array([_STATUS_CODE.get(r.status, 0) for r in records], dtype=np.int8)
    return cols


def series(cols: dict[str, np.ndarray], t: float = math.inf) -> Series:
    """The :class:`Series` of some records' :func:`columns` (in arrival order) as known at ``t``."""
    finish, admitted = cols["finish_s"], cols["admitted_s"]
    done = (cols["status"] == _COMPLETED) & (finish <= t)
    failed = cols["status"] == _FAILED
    settled = done | failed
    return Series(
        t=t, arrival=cols["arrival_s"],
        admitted=np.where((admitted >= 0) & (admitted <= t), admitted, math.inf),
        first=cols["first_token_s"], finish=np.where(done, finish, math.inf), done=done, failed=failed,
        prompt=cols["prompt_tokens"], cached=cols["cached_tokens"], output=cols["output_tokens"],
        recomputed=cols["recomputed_tokens"],
        complete=int(np.argmin(settled)) if not settled.all() else len(settled),
    )


@dataclass
class Window:
    """The measured window of a series: [start, end] and the requests it measures."""

    start: float
    end: float
    rule: str
    measured: np.ndarray  # completed requests that arrived in the window (and are known)
    arrived: np.ndarray  # every request that arrived in it, failed ones included

    @property
    def length(self) -> float:
        return self.end - self.start


def window(s: Series, end: float, warmup_s: float | None, cache_full_s: float | None) -> Window:
    """The measured window ending at ``end``: from ``warmup_s`` if given, else from MSER-5's cut
    of the known TTFT series, and never before the KV cache first filled (``cache_full_s``)."""
    known = np.zeros(len(s.arrival), dtype=bool)
    known[: s.complete] = True
    if warmup_s is not None:
        start, rule = warmup_s, "explicit"
    else:
        ok = known & s.done
        ttft = (s.first - s.arrival)[ok]
        cut = stats.mser5_cut(ttft)
        start, rule = (float(s.arrival[ok][cut]) if cut else 0.0), "mser5"
        if cache_full_s is not None and cache_full_s <= s.t:
            start = max(start, cache_full_s)
    arrived = known & (s.arrival >= start) & (s.arrival <= end)
    return Window(start, end, rule, arrived & s.done, arrived)


def _queue_growth(s: Series, w: Window) -> float | None:
    """Requests per second the waiting queue grows by across the window when it grows as an
    overloaded queue does (see the module docstring), else None."""
    admissions = np.sort(np.concatenate([s.admitted[np.isfinite(s.admitted)], s.arrival[s.failed]]))

    def backlog(t: float) -> int:
        return int(np.searchsorted(s.arrival, t, "right") - np.searchsorted(admissions, t, "right"))

    mid = (w.start + w.end) / 2
    b0, b1, b2 = backlog(w.start), backlog(mid), backlog(w.end)
    growth = b2 - b0
    arrivals = np.searchsorted(s.arrival, w.end, "right") - np.searchsorted(s.arrival, w.start, "right")
    steady_enough = growth < max(MIN_GROWTH, OVERLOAD_SHARE * arrivals)
    if steady_enough or b1 - b0 <= growth / 4 or b2 - b1 <= growth / 4:
        return None
    return growth / w.length


def _drift(values: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float, bool]:
    """First- and second-half level of a measured series (weighted: sum(values) / sum(weights)
    per batch) and whether they differ beyond noise (``stats.drift``)."""
    k = stats.MEAN_BATCHES
    per_batch = stats.batches(values, k) if weights is None else (
        stats.batches(values, k) / np.maximum(stats.batches(weights, k), 1e-300))
    return stats.drift(per_batch)


def _needed(s: Series, w: Window, users: int | None) -> int:
    """Measured requests a verdict needs (see the module docstring)."""
    if users is not None:
        return max(MIN_MEASURED, PER_USER * users)
    m = w.measured
    in_system = (s.finish[m] - s.arrival[m]).sum() / w.length if w.length > 0 else 0.0
    return max(MIN_MEASURED, math.ceil(PER_USER * in_system))


def verdict(s: Series, w: Window, setting: Setting, cache_full_s: float | None) -> tuple[str, float | None]:
    """``(steady_reason, queue growth in req/s when overloaded)``; the reason is "" when steady."""
    n = int(w.measured.sum())
    if n < MIN_MEASURED:
        return f"too few measured requests ({n}; a verdict needs {MIN_MEASURED}): run longer", None
    if setting.users is None:
        growth = _queue_growth(s, w)
        if growth is not None:
            return f"overloaded: queue grows {growth:.3g} req/s", growth
    need = _needed(s, w, setting.users)
    if n < need:
        per = f"{PER_USER} per user" if setting.users is not None else f"{PER_USER} per request in the system"
        return f"too few measured requests ({n}; a verdict needs {need}: {per}): run longer", None
    if cache_full_s is not None and w.start < cache_full_s <= s.t:
        return (f"cache still filling: the KV cache first filled at {cache_full_s:.4g} s, inside the"
                " measured window (raise run.warmup_s or leave it out)"), None
    m = w.measured
    if s.cached[m].any():
        a, b, moved = _drift(s.cached[m].astype(float), s.prompt[m].astype(float))
        if moved and abs(b - a) > HIT_RATE_SHIFT:
            return f"cache still filling: hit rate {a:.2f} -> {b:.2f} across the measured window", None
    a, b, moved = _drift((s.first - s.arrival)[m])
    if moved and abs(b - a) > TTFT_SHIFT * max(a, b):
        return (f"latency still drifting: TTFT mean {a:.3g} s -> {b:.3g} s across the measured window"
                " (run longer)"), None
    return "", None


def _slo_met(s: Series, slo: SloConfig) -> np.ndarray:
    """Per request: completed and within every threshold of ``slo`` (one-token replies have no
    TPOT and pass that threshold)."""
    ok = s.done.copy()
    if slo.ttft_s is not None:
        ok &= s.first - s.arrival <= slo.ttft_s
    if slo.e2e_s is not None:
        ok &= s.finish - s.arrival <= slo.e2e_s
    if slo.tpot_s is not None:
        gaps = np.maximum(s.output - 1, 1)
        ok &= (s.output <= 1) | ((s.finish - s.first) / gaps <= slo.tpot_s)
    return ok


def _ttft(s: Series, w: Window) -> np.ndarray:
    m = w.measured
    return s.first[m] - s.arrival[m]


def _tpot(s: Series, w: Window) -> np.ndarray:
    m = w.measured
    decode_n = np.maximum(s.output[m] - 1, 0)
    has = decode_n > 0
    return (s.finish[m][has] - s.first[m][has]) / decode_n[has]


def _completed_in(s: Series, w: Window) -> np.ndarray:
    """Requests that completed inside the window (throughput counts these)."""
    return s.done & (s.finish >= w.start) & (s.finish <= w.end)


def _throughput(s: Series, w: Window) -> tuple[float | None, float | None]:
    done = _completed_in(s, w)
    return ratio(int(done.sum()), w.length), stats.rate_half_width(s.finish[done], w.start, w.end)


# summary column -> (value, 95% half-width) for the metrics with a within-run CI (CI_METRICS)
_WITH_CI = {
    "ttft_mean_s": lambda s, w: _mean_and_half(_ttft(s, w)),
    "ttft_p99_s": lambda s, w: _p99_and_half(_ttft(s, w)),
    "tpot_mean_s": lambda s, w: _mean_and_half(_tpot(s, w)),
    "throughput_rps": _throughput,
}


def _mean_and_half(x: np.ndarray) -> tuple[float | None, float | None]:
    return (float(x.mean()) if x.size else None), stats.mean_half_width(x)


def _p99_and_half(x: np.ndarray) -> tuple[float | None, float | None]:
    return (float(np.percentile(x, 99)) if x.size else None), stats.quantile_half_width(x, 99)


def window_figures(s: Series, w: Window, setting: Setting, cache_full_s: float | None) -> dict[str, Any]:
    """Everything the measured window gives: the verdict, throughput, latency statistics, their
    within-run CIs and the SLO figures (keys of ``metrics.SUMMARY_FIELDS``)."""
    m = w.measured
    ttft, finish, arrival = _ttft(s, w), s.finish[m], s.arrival[m]
    in_window = _completed_in(s, w)
    reason, growth = verdict(s, w, setting, cache_full_s)
    throughput = ratio(int(in_window.sum()), w.length)
    row: dict[str, Any] = {
        "steady": reason == "",
        "steady_reason": reason,
        "capacity_rps": throughput if growth is not None else None,
        "throughput_rps": throughput,
        "output_tokens_per_s": ratio(int(s.output[in_window].sum()), w.length),
        **latency_stats("ttft", ttft),
        **latency_stats("tpot", _tpot(s, w)),
        **latency_stats("e2e", finish - arrival),
        **latency_stats("queue", s.admitted[m] - arrival),
        **{f"{col}{CI_SUFFIX}": _WITH_CI[col](s, w)[1] for col in CI_METRICS.values()},
        "slo_attainment": None,
        "goodput_rps": None,
    }
    if setting.slo is not None:
        met = _slo_met(s, setting.slo)
        row["slo_attainment"] = ratio(int((met & w.arrived).sum()), int(w.arrived.sum()))
        row["goodput_rps"] = ratio(int((met & in_window).sum()), w.length)
    return row


class SteadyMonitor:
    """The ``until: steady`` check: at a completion's finish time, with only what is known then,
    whether the run may stop taking arrivals (the same verdict and CIs as the summary's)."""

    def __init__(self, cfg: SimConfig) -> None:
        self.setting = Setting.of(cfg)
        self.ci_rel = cfg.run.steady.ci_rel
        self.targets = [CI_METRICS[name] for name in cfg.run.steady.metrics]
        # every record's columns as of the last check, and the records not settled then (still
        # running, or finished after that check's time): a check converts only those and the
        # new ones, so it costs numpy time, not Python time, per request of the run
        self._cols = columns([])
        self._pending = np.zeros(0, dtype=np.int64)

    def _columns(self, records: Sequence[RequestRecord], t: float) -> dict[str, np.ndarray]:
        have = len(self._cols["status"])
        if len(records) > have:
            new = len(records) - have
            self._cols = {k: np.concatenate([v, np.zeros(new, dtype=v.dtype)]) for k, v in self._cols.items()}
            self._pending = np.concatenate([self._pending, np.arange(have, len(records))])
        if self._pending.size:
            fresh = columns([records[i] for i in self._pending.tolist()])
            for k, v in fresh.items():
                self._cols[k][self._pending] = v
            status = fresh["status"]
            settled = (status == _FAILED) | ((status == _COMPLETED) & (fresh["finish_s"] <= t))
            self._pending = self._pending[~settled]
        return self._cols

    def check(self, records: Sequence[RequestRecord], t: float, cache_full_s: float | None) -> str | None:
        """"steady", "overloaded" (its window holds ``STOP_OVERLOADED_ARRIVALS`` arrivals), or None."""
        s = series(self._columns(records, t), t)
        w = window(s, t, self.setting.warmup_s, cache_full_s)
        if w.length <= 0 or int(w.measured.sum()) < MIN_MEASURED:
            return None
        if self.setting.users is None and _queue_growth(s, w) is not None:
            return "overloaded" if int(w.arrived.sum()) >= STOP_OVERLOADED_ARRIVALS else None
        # the intervals first: until they are met (most checks) the verdict is not needed
        for col in self.targets:
            value, half = _WITH_CI[col](s, w)
            if value is None or half is None or half > self.ci_rel * abs(value):
                return None
        reason, _ = verdict(s, w, self.setting, cache_full_s)
        return "steady" if reason == "" else None
