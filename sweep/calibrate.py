"""Fitting the cost model's parameters to measured latencies (``kvsweep calibrate``).

A *dataset* turns parameter values into predicted-vs-measured points: analytically from
``simcore.costmodel`` for step and operator times, or by simulating the measured experiments for
stage means (see :mod:`sweep.measured` for the three formats). The fit minimises the log errors
``log(predicted / measured)`` over the training points with scipy's trust-region least squares
and a soft-L1 loss (robust to the odd outlying point, which the median errors we report ignore
too), the parameters scaled to comparable sizes and held within physical bounds.

The split into training and held-out points is fixed, so every run of the command and the
tests see the same one: a point is held out when the first 32 bits of the SHA-256 of its key
(an experiment's name; a step shape ``tp-prompt-batch``; an operator shape ``tp-tokens``) are 0,
1 or 2 modulo 10 (about 30%). All points of a key go to the same side.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from simcore.api import simulate
from simcore.config import COST_FIELDS, CostParams, SimConfig
from simcore.costmodel import CostModel
from simcore.errors import ConfigError, format_validation_error
from sweep import measured
from sweep.measured import Experiment

#: per fittable parameter: (lower bound, upper bound, typical size the optimiser scales by)
BOUNDS: dict[str, tuple[float, float, float]] = {
    "compute_efficiency": (0.02, 1.0, 1.0),
    "matmul_half_tokens": (0.0, 5000.0, 100.0),
    "bandwidth_efficiency": (0.02, 1.0, 1.0),
    "attention_compute_efficiency": (0.02, 1.0, 1.0),
    "kv_bandwidth_efficiency": (0.02, 1.0, 1.0),
    "elementwise_efficiency": (0.02, 1.0, 1.0),
    "interconnect_efficiency": (0.01, 1.0, 1.0),
    "allreduce_latency_s": (0.0, 1e-3, 1e-5),
    "allreduce_latency_per_gpu_s": (0.0, 1e-3, 1e-5),
    "layer_overhead_s": (0.0, 1e-3, 1e-5),
    "launch_per_layer_s": (0.0, 1e-3, 1e-5),
    "eager_launch_per_layer_s": (0.0, 5e-3, 1e-4),
    "step_overhead_s": (0.0, 0.05, 1e-3),
    "per_seq_overhead_s": (0.0, 1e-3, 1e-5),
    "frontend_latency_s": (0.0, 1.0, 1e-3),
    "first_token_lag_steps": (0.0, 20.0, 1.0),
}
HELD_OUT_MOD = (10, 3)  # held out: hash % 10 < 3


def held_out(key: str) -> bool:
    """The fixed split: True for the ~30% of keys held out of every fit (see the module notes)."""
    mod, below = HELD_OUT_MOD
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % mod < below


@dataclass(frozen=True)
class Point:
    """One measured figure and its prediction (``metric`` in the dataset's units, ms)."""

    key: str
    label: str
    metric: str
    measured: float
    predicted: float
    note: str = ""

    @property
    def error(self) -> float:
        """Signed relative error, predicted / measured - 1."""
        return self.predicted / self.measured - 1.0


class Dataset:
    """Measured points of one format; :meth:`points` predicts them from parameter values."""

    format = ""
    source = ""  # where the data came from (a path), for messages
    #: parameters a fit of this format moves unless told otherwise
    default_fit: tuple[str, ...] = ()
    #: finite-difference step for the optimiser (simulated data is not smooth at tiny steps)
    diff_step: float | None = None

    def keys(self) -> list[str]:
        raise NotImplementedError

    def points(self, params: dict[str, Any], keys: Sequence[str]) -> list[Point]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _cost_model(
    model: dict[str, Any] | str, gpu: str | dict[str, Any], tp: int, params: dict[str, Any]
) -> CostModel:
    cfg = SimConfig.model_validate(
        {"model": model, "gpu": gpu, "engine": {"tensor_parallel": tp, "cost": params}}
    )
    return CostModel(cfg)


class StepTimes(Dataset):
    """Prefill and decode step times of one model (the steps format)."""

    format = "steps"
    default_fit = (
        "compute_efficiency",
        "matmul_half_tokens",
        "bandwidth_efficiency",
        "kv_bandwidth_efficiency",
        "attention_compute_efficiency",
        "interconnect_efficiency",
        "allreduce_latency_s",
        "allreduce_latency_per_gpu_s",
        "layer_overhead_s",
        "step_overhead_s",
        "per_seq_overhead_s",
        "eager_launch_per_layer_s",
    )

    def __init__(self, frame: pd.DataFrame, model: str, gpu: str, source: str) -> None:
        if frame.empty:
            raise ConfigError(f"{source}: no step times left after the filters (check --where and --drop)")
        self.frame = frame.reset_index(drop=True)
        self.model, self.gpu, self.source = model, gpu, source
        self.frame["key"] = [
            f"tp{r.tensor_parallel}-p{r.prompt_size}-b{r.batch_size}" for r in frame.itertuples()
        ]

    def keys(self) -> list[str]:
        return sorted(set(self.frame["key"]))

    def points(self, params: dict[str, Any], keys: Sequence[str]) -> list[Point]:
        wanted = set(keys)
        sub = self.frame[self.frame["key"].isin(wanted)]
        models = {
            tp: _cost_model(self.model, self.gpu, int(tp), params) for tp in sub["tensor_parallel"].unique()
        }
        out: list[Point] = []
        prefill = sub.groupby("key", as_index=False).agg(
            tp=("tensor_parallel", "first"),
            n=("prompt_size", "first"),
            b=("batch_size", "first"),
            ms=("prompt_time", "median"),
        )
        for r in prefill.itertuples():
            n, b = int(r.n), int(r.b)
            t = models[r.tp].step_time(b * n, b * (n * (n + 1) // 2), b * n, b)
            out.append(Point(r.key, r.key, "prefill", float(r.ms), t * 1e3))
        for r in sub.itertuples():
            b = int(r.batch_size)
            ctx = int(r.prompt_size) + int(r.token_size) // 2  # mean context over the generation
            t = models[r.tensor_parallel].step_time(b, b * (ctx + 1), b * (ctx + 1), b)
            out.append(Point(r.key, f"{r.key}-g{r.token_size}", "decode", float(r.token_time), t * 1e3))
        return out

    def describe(self) -> str:
        return f"{len(self.frame)} step-time rows of {self.model} on {self.gpu}"


def load_steps(
    path: str | Path, model: str, gpu: str, where: dict[str, str], drop: list[dict[str, str]]
) -> StepTimes:
    """A steps file as a :class:`StepTimes` dataset: rows matching every ``where`` pair, minus rows
    matching all pairs of any ``drop`` entry; median times over repeated rows."""
    frame = measured.read_csv(path)
    frame = measured.filter_rows(frame, where, drop, str(path))
    keys = ["tensor_parallel", "prompt_size", "batch_size", "token_size"]
    missing = [c for c in [*keys, "prompt_time", "token_time"] if c not in frame.columns]
    if missing:
        raise ConfigError(f"{path}: missing columns {missing} (see the steps format in sweep/measured.py)")
    grouped = frame.groupby(keys, as_index=False)[["prompt_time", "token_time"]].median()
    return StepTimes(grouped, model, gpu, str(path))


class OperatorTimes(Dataset):
    """One layer's linear and elementwise operator times (the operators format)."""

    format = "operators"
    default_fit = (
        "compute_efficiency",
        "matmul_half_tokens",
        "bandwidth_efficiency",
        "elementwise_efficiency",
        "layer_overhead_s",
    )

    def __init__(self, frame: pd.DataFrame, gpu: str, source: str) -> None:
        self.frame = frame.copy()
        self.gpu, self.source = gpu, source
        self.frame["key"] = [f"tp{r.num_tensor_parallel_workers}-n{r.num_tokens}" for r in frame.itertuples()]

    def keys(self) -> list[str]:
        return list(self.frame["key"])

    def layer_model(self, tp: int, params: dict[str, Any]) -> CostModel:
        """A one-layer model of the profiled shape (no embedding, no LM head)."""
        r = self.frame.iloc[0]
        h, heads, kv, ffn = int(r.n_embd), int(r.n_head), int(r.n_kv_head), int(r.n_expanded_embd)
        d = h // heads
        params_layer = h * (2 * heads * d + 2 * kv * d) + 3 * h * ffn
        model = {
            "name": "profiled-layer",
            "num_layers": 1,
            "hidden_size": h,
            "num_attention_heads": heads,
            "num_kv_heads": kv,
            "head_dim": d,
            "num_params": params_layer,
            "max_context": 1 << 20,
            "intermediate_size": ffn,
        }
        return _cost_model(model, self.gpu, tp, params)

    def points(self, params: dict[str, Any], keys: Sequence[str]) -> list[Point]:
        """Per shape: a layer's linear and elementwise operators together, against the model's
        body matmuls, elementwise traffic and per-layer overhead for that many tokens."""
        sub = self.frame[self.frame["key"].isin(set(keys))]
        models = {tp: self.layer_model(int(tp), params) for tp in sub["num_tensor_parallel_workers"].unique()}
        out = []
        for r in sub.itertuples():
            m = models[r.num_tensor_parallel_workers]
            n = int(r.num_tokens)
            linear = max(m.weight_s, n * m.flop_per_token_s + m.knee_s)
            layer = linear + n * m.elementwise_per_token_s + m.gpu_fixed_s - m.allreduce_s
            out.append(Point(r.key, r.key, "layer", float(r.linear_ms + r.elementwise_ms), layer * 1e3))
        return out

    def describe(self) -> str:
        return f"{len(self.frame)} operator-time rows (one layer) on {self.gpu}"


#: client-side parameters: they move what the client sees, not what the engine does
CLIENT_PARAMS = ("frontend_latency_s", "first_token_lag_steps")
_ROW_KEYS = ("arrival_s", "first_token_s", "finish_s", "output_tokens", "status")


def _simulate_rows(args: tuple[Experiment, str, dict[str, Any], float | None]) -> list[dict[str, Any]]:
    """Simulate one experiment with the client-side parameters at zero (a worker's job);
    the engine-time rows of its requests."""
    exp, gpu, params, max_stage_s = args
    engine_only = {**params, **dict.fromkeys(CLIENT_PARAMS, 0.0)}
    result = simulate(measured.experiment_config(exp, gpu, engine_only, max_stage_s=max_stage_s))
    if result.requests is None:
        raise ConfigError(f"experiment {exp.name}: the server does not fit ({result.error})")
    return [{k: r[k] for k in _ROW_KEYS} for r in result.requests]


def _stage_points(
    exp: Experiment, rows: list[dict[str, Any]], params: dict[str, Any], max_stage_s: float | None
) -> list[Point]:
    """An experiment's measured stage means beside the simulated ones."""
    sims = measured.stage_means(
        rows,
        exp,
        max_stage_s,
        frontend_s=params["frontend_latency_s"],
        lag_steps=params["first_token_lag_steps"],
    )
    out = []
    for i, (stage, sim) in enumerate(zip(exp.stages, sims, strict=True)):
        label = f"{exp.name} stage {i} ({stage.rate:g}/s)"
        note = "saturated" if sim.saturated else ""
        itl = measured.itl_ms(stage.ttft_ms, stage.e2e_ms, exp.output_tokens)
        out += [
            Point(exp.name, label, "ttft", stage.ttft_ms, sim.ttft_ms, note),
            Point(exp.name, label, "itl", itl, sim.itl_ms, note),
            Point(exp.name, label, "e2e", stage.e2e_ms, sim.e2e_ms, note),
        ]
    return out


class StageMeans(Dataset):
    """Serving experiments' stage means, predicted by simulating each experiment.

    The workloads are open loop, so the client-side parameters (:data:`CLIENT_PARAMS`) do not
    change what the engine does: each experiment is simulated once per set of engine
    parameters (remembered for the next calls) and the client-side ones applied to its rows.
    """

    format = "stages"
    default_fit = (
        "bandwidth_efficiency",
        "kv_bandwidth_efficiency",
        "step_overhead_s",
        "per_seq_overhead_s",
        "layer_overhead_s",
        "allreduce_latency_s",
        "allreduce_latency_per_gpu_s",
        "frontend_latency_s",
        "first_token_lag_steps",
    )
    diff_step = 0.02
    cache_size = 64  # engine parameter sets remembered (each: every experiment's request rows)

    def __init__(
        self,
        experiments: list[Experiment],
        gpu: str,
        source: str,
        *,
        max_stage_s: float | None = None,
        workers: int | None = None,
    ) -> None:
        self.experiments = {e.name: e for e in experiments}
        self.gpu, self.source, self.max_stage_s = gpu, source, max_stage_s
        self.workers = workers or os.cpu_count() or 1
        self._rows: dict[tuple[Any, ...], list[dict[str, Any]]] = {}

    def keys(self) -> list[str]:
        return sorted(self.experiments)

    def _engine_key(self, name: str, params: dict[str, Any]) -> tuple[Any, ...]:
        return (name, *sorted((k, v) for k, v in params.items() if k not in CLIENT_PARAMS))

    def points(self, params: dict[str, Any], keys: Sequence[str]) -> list[Point]:
        todo = [k for k in keys if self._engine_key(k, params) not in self._rows]
        jobs = [(self.experiments[k], self.gpu, params, self.max_stage_s) for k in todo]
        if self.workers <= 1 or len(jobs) <= 1:
            results = [_simulate_rows(job) for job in jobs]
        else:
            with ProcessPoolExecutor(min(self.workers, len(jobs))) as pool:
                results = list(pool.map(_simulate_rows, jobs))
        for k, rows in zip(todo, results, strict=True):
            self._rows[self._engine_key(k, params)] = rows
        out = [
            p
            for k in keys
            for p in _stage_points(
                self.experiments[k], self._rows[self._engine_key(k, params)], params, self.max_stage_s
            )
        ]
        while len(self._rows) > self.cache_size * max(len(keys), 1):
            self._rows.pop(next(iter(self._rows)))
        return out

    def describe(self) -> str:
        length = "" if self.max_stage_s is None else f", stages cut to {self.max_stage_s:g} s"
        return f"{len(self.experiments)} serving experiments on {self.gpu}{length}"


@dataclass
class FitResult:
    """What a fit found: every parameter value, which ones moved, and the points both sides.
    ``confounded`` lists groups of fitted parameters the training data cannot tell apart (a
    change of them along some direction leaves every prediction as it is), so their values are
    one of many that fit equally well."""

    params: dict[str, Any]
    base: dict[str, Any]
    fitted: list[str]
    train: list[Point] = field(default_factory=list)
    test: list[Point] = field(default_factory=list)
    confounded: list[list[str]] = field(default_factory=list)


def confounded_groups(jac: np.ndarray, names: Sequence[str], rtol: float = 1e-6) -> list[list[str]]:
    """Groups of parameters along the Jacobian's (near) null directions: each direction whose
    singular value is below ``rtol`` times the largest names the parameters it moves."""
    if jac.size == 0:
        return []
    _, sing, vt = np.linalg.svd(jac, full_matrices=True)
    sing = np.concatenate([sing, np.zeros(vt.shape[0] - sing.size)])
    groups = []
    for value, vec in zip(sing, vt, strict=True):
        if value <= rtol * max(sing[0], 1e-300):
            weights = np.abs(vec) / np.abs(vec).max()
            groups.append([n for n, w in zip(names, weights, strict=True) if w > 0.05])
    return groups


def base_params(base: str | None, gpu: str) -> dict[str, Any]:
    """Every CostParams value of profile ``base`` (default: the GPU's own profile)."""
    given = {} if base is None else {"profile": base}
    try:
        cfg = SimConfig.model_validate({"model": "Llama-3.1-8B", "gpu": gpu, "engine": {"cost": given}})
    except ValidationError as exc:
        text = format_validation_error(exc, model=SimConfig).removeprefix("invalid config: ")
        raise ConfigError(f"--base {base!r} / --gpu {gpu!r}: {text}") from None
    return cfg.engine.cost.model_dump()


def check_names(names: Sequence[str], what: str) -> None:
    unknown = [n for n in names if n not in BOUNDS]
    if unknown:
        raise ConfigError(f"{what} {unknown[0]!r} is not a fittable cost parameter: use {', '.join(BOUNDS)}")


def fit(ds: Dataset, base: dict[str, Any], names: Sequence[str], starts: int = 1) -> FitResult:
    """Least-squares fit of ``names`` on the training keys; other parameters keep ``base``'s
    values. ``starts`` > 1 also starts from deterministic perturbations of ``base`` (each
    parameter halved or doubled in turn across starts) and keeps the best. Client-side
    parameters of stage data, which cost no simulation to move, are fitted alone first, so
    the full fit starts near them."""
    check_names(names, "fit parameter")
    keys = ds.keys()
    train = [k for k in keys if not held_out(k)]
    if not train:
        raise ConfigError(f"{ds.source}: every point is held out; give more data")
    client = [n for n in names if isinstance(ds, StageMeans) and n in CLIENT_PARAMS]
    start = dict(base)
    if client and len(client) < len(names):
        start, _ = _solve(ds, start, client, train, 1)
    params, best = _solve(ds, start, names, train, starts)
    free = [n for n in names if BOUNDS[n][0] < params[n] < BOUNDS[n][1]]  # at a bound: pinned by it
    jac = best.jac[:, [names.index(n) for n in free]]
    test = [k for k in keys if held_out(k)]
    return FitResult(
        params,
        base,
        list(names),
        ds.points(params, train),
        ds.points(params, test) if test else [],
        confounded_groups(jac, free),
    )


def _solve(
    ds: Dataset, base: dict[str, Any], names: Sequence[str], train: list[str], starts: int
) -> tuple[dict[str, Any], Any]:
    """The best of ``starts`` least-squares runs over ``names``; (parameters, scipy's result)."""
    from scipy.optimize import least_squares  # here: every kvsweep command imports this module

    names = list(names)
    lo = np.array([BOUNDS[n][0] / BOUNDS[n][2] for n in names])
    hi = np.array([BOUNDS[n][1] / BOUNDS[n][2] for n in names])
    scale = np.array([BOUNDS[n][2] for n in names])

    def params_of(x: np.ndarray) -> dict[str, Any]:
        return {**base, **{n: float(v) for n, v in zip(names, x * scale, strict=True)}}

    def residuals(x: np.ndarray) -> np.ndarray:
        pts = ds.points(params_of(x), train)
        return np.clip(np.array([math.log(max(p.predicted, 1e-9) / p.measured) for p in pts]), -5.0, 5.0)

    # strictly inside the bounds: trust-region-reflective steps from a bound are vanishingly small
    x0 = np.clip(np.array([float(base[n]) for n in names]) / scale, lo + 1e-3, hi - 1e-3)
    best = None
    for x in _starts(x0, lo, hi, starts):
        res = least_squares(
            residuals,
            x,
            bounds=(lo, hi),
            loss="soft_l1",
            f_scale=0.1,
            x_scale="jac",
            diff_step=ds.diff_step,
            max_nfev=200 if ds.diff_step is None else 60,
        )
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    return params_of(best.x), best


def _starts(x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int) -> list[np.ndarray]:
    out = [x0]
    for i in range(1, n):
        factor = np.where((np.arange(x0.size) + i) % 2 == 0, 2.0, 0.5) ** (1 + (i - 1) // 2)
        out.append(np.clip(np.where(x0 > 0, x0 * factor, (hi - lo) * 0.01 * i), lo, hi))
    return out


def summary(points: Sequence[Point]) -> dict[str, dict[str, float]]:
    """Per metric: median |error| and worst signed error (by size), as fractions."""
    out: dict[str, dict[str, float]] = {}
    for metric in dict.fromkeys(p.metric for p in points):
        errs = np.array([p.error for p in points if p.metric == metric])
        worst = errs[np.argmax(np.abs(errs))]
        out[metric] = {
            "median_abs": float(np.median(np.abs(errs))),
            "worst": float(worst),
            "n": int(errs.size),
        }
    return out


def profile_document(res: FitResult, *, name: str, gpu: str, source: str) -> dict[str, Any]:
    """The YAML a fit writes: usable as ``engine.cost.profile: PATH``."""

    def rounded(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return {
            m: {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            for m, row in table.items()
        }

    return {
        "name": name,
        "gpu": gpu,
        "source": source,
        "split": f"held out: sha256(key) mod {HELD_OUT_MOD[0]} < {HELD_OUT_MOD[1]}",
        "fitted": list(res.fitted),
        "fit_error": {"train": rounded(summary(res.train)), "held_out": rounded(summary(res.test))},
        "params": {k: plain(res.params[k]) for k in COST_FIELDS},
    }


def plain(value: Any) -> Any:
    """A value as written to a profile: floats to 6 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value


def validate_params(params: dict[str, Any], what: str) -> None:
    """Raise ConfigError when ``params`` are not valid cost parameters."""
    try:
        CostParams.model_validate({k: v for k, v in params.items() if k in COST_FIELDS})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=what)) from None
