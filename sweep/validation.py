"""kvsweep against measurements of real servers and a published figure (``kvsweep validate``).

Five checks, each with its target:

1. **vLLM on H100, end to end** (``measured/vllm_h100_experiments.json``): each experiment
   rebuilt as a kvsweep run (:func:`sweep.measured.experiment_config`) with the H100 profile,
   full-length stages; per stage the means of TTFT, time per output token and E2E against the
   measured ones. Target, on the experiments held out of the profile's fit: median |error| at
   most 10% per metric, no stage point worse than 30%, and no stage that saturates in kvsweep.
2. **splitwise-sim step times** (Llama2-70B, A100 and H100, TP 2/4/8, a 2023 software stack):
   the ``splitwise-*`` profiles, fitted on the training shapes, against the held-out shapes.
   Target: median |error| at most 15% for prefill and decode at every TP.
3. **Vidur's per-operator profile** (one Llama-2-7B layer on H100, TP 1-8): the H100 profile's
   per-layer time (body matmuls, elementwise traffic, per-layer overhead) against the summed
   operator times, per TP. Reported, no target (the profile's compute curve is fitted to it).
4. **kvsweep's own H200 operator profile** (``configs/measured``: one layer of Llama-3.1-8B and
   of Llama-3.1-70B at TP 1-8, 31 step sizes, measured with ``scripts/profile_ops.py``): the
   H200's default profile against both files, per TP, and for contrast ``h100-vllm`` (the
   H200's profile before it was measured). ``h200-ops`` is fitted on the 8B file (its training
   and held-out shapes are shown); the 70B file is a model held out entirely. Target: median
   |error| at most 10% per TP on 70B.
5. **Mooncake FAST '25 Figure 9**: the synthetic trace's cache-only replay within 1.5 points of
   the published curve at 1e5, 1e6, 2e6, 4e6, 1e7 and 5e7 tokens; the conversation trace with
   its documented gap (its ids cover input tokens only; production also reuses replies' KV).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simcore import catalog
from simcore.replay import replay
from simcore.traces import load_trace
from sweep import calibrate, measured
from sweep.calibrate import Point

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: measurements kvsweep made itself (see its README), kept in the repository
OWN_DATA = Path(__file__).resolve().parents[1] / "configs" / "measured"
H100 = "H100-SXM-80GB"
H200 = "H200"
#: kvsweep's H200 operator profiles: model -> file in OWN_DATA; ``h200-ops`` is fitted on the first
H200_OPS = {"Llama-3.1-8B": "h200_llama31_8b_ops.csv", "Llama-3.1-70B": "h200_llama31_70b_ops.csv"}
H200_FIT_MODEL = "Llama-3.1-8B"
H200_FIT = "h200-ops"  # the profile fitted on it
#: the H200's profile before it was measured: H100-fitted efficiencies on the H200's peaks
H200_CONTRAST = "h100-vllm"
SPLITWISE = {  # file hardware -> (catalog GPU, profile fitted to it)
    "a100-80gb": ("A100-80GB", "splitwise-a100"),
    "h100-80gb": ("H100-SXM-80GB", "splitwise-h100"),
}
#: rows of the steps file that are not used: its README calls the TP2 batch-64 rows inconsistent
SPLITWISE_DROP = [{"tensor_parallel": "2", "batch_size": "64"}]
FIG9_CAPACITIES = (1e5, 1e6, 2e6, 4e6, 1e7, 5e7)
FIG9_TOLERANCE = 0.015
E2E_TARGET = (0.10, 0.30)  # median |error|, worst |error| on held-out stages
STEP_TARGET = 0.15
H200_TARGET = 0.10  # median |error| per TP on the model held out of the H200 fit


@dataclass(frozen=True)
class Check:
    """One target: what, the value found, the bound, and whether it holds."""

    what: str
    value: float
    bound: float
    held: bool


def experiment_points(
    data: Path, *, workers: int | None = None, max_stage_s: float | None = None
) -> list[Point]:
    """Every stage of every vLLM experiment with the GPU's own (catalog) profile."""
    exps = measured.load_experiments(data / "measured" / "vllm_h100_experiments.json")
    ds = calibrate.StageMeans(
        exps, H100, "vllm_h100_experiments.json", max_stage_s=max_stage_s, workers=workers
    )
    return ds.points(calibrate.base_params(None, H100), ds.keys())


def experiment_checks(points: Sequence[Point]) -> list[Check]:
    held = [p for p in points if calibrate.held_out(p.key)]
    out = []
    for metric, stats in calibrate.summary(held).items():
        out.append(
            Check(
                f"held-out {metric} median |error|",
                stats["median_abs"],
                E2E_TARGET[0],
                stats["median_abs"] <= E2E_TARGET[0],
            )
        )
        out.append(
            Check(
                f"held-out {metric} worst |error|",
                abs(stats["worst"]),
                E2E_TARGET[1],
                abs(stats["worst"]) <= E2E_TARGET[1],
            )
        )
    saturated = sum(1 for p in points if p.note == "saturated" and p.metric == "ttft")
    out.append(Check("stages saturated in kvsweep (none are in the data)", saturated, 0, saturated == 0))
    return out


def splitwise_points(data: Path) -> dict[str, list[Point]]:
    """Held-out step times per file hardware, with that hardware's ``splitwise-*`` profile."""
    path = data / "measured" / "splitwise_perf_model.csv"
    out = {}
    for hardware, (gpu, profile) in SPLITWISE.items():
        ds = calibrate.load_steps(
            path, "Llama-2-70B", gpu, {"model": "llama2-70b", "hardware": hardware}, SPLITWISE_DROP
        )
        keys = [k for k in ds.keys() if calibrate.held_out(k)]
        out[hardware] = ds.points(calibrate.base_params(profile, gpu), keys)
    return out


def by_tp(points: Sequence[Point]) -> dict[tuple[int, str], dict[str, float]]:
    """(TP, metric) -> median |error|, worst signed error, count; keys start ``tp<N>-``."""
    groups: dict[tuple[int, str], list[float]] = {}
    for p in points:
        tp = int(p.key.split("-")[0].removeprefix("tp"))
        groups.setdefault((tp, p.metric), []).append(p.error)
    out = {}
    for key, errs in sorted(groups.items()):
        arr = np.array(errs)
        out[key] = {
            "median_abs": float(np.median(np.abs(arr))),
            "worst": float(arr[np.argmax(np.abs(arr))]),
            "n": int(arr.size),
        }
    return out


def tp_checks(what: str, points: Sequence[Point], bound: float) -> list[Check]:
    """Per (TP, metric) of ``points``: median |error| at most ``bound``; ``what`` names the data."""
    return [
        Check(f"{what} TP{tp} {metric} median |error|", s["median_abs"], bound, s["median_abs"] <= bound)
        for (tp, metric), s in by_tp(points).items()
    ]


def splitwise_checks(points: dict[str, list[Point]]) -> list[Check]:
    return [c for hw, pts in points.items() for c in tp_checks(f"splitwise {hw}", pts, STEP_TARGET)]


def vidur_points(data: Path) -> list[Point]:
    """Every shape of Vidur's profile with the H100 profile."""
    path = data / "measured" / "vidur_llama2_7b_h100_mlp.csv"
    ds = calibrate.OperatorTimes(measured.load_operator_profile(path), H100, str(path))
    return ds.points(calibrate.base_params(None, H100), ds.keys())


def h200_dataset(folder: Path, model: str) -> calibrate.OperatorTimes:
    """One of kvsweep's H200 operator files (:data:`H200_OPS`) as a dataset on the H200."""
    path = folder / H200_OPS[model]
    return calibrate.OperatorTimes(measured.load_operator_profile(path), H200, str(path))


def h200_points(folder: Path = OWN_DATA) -> dict[str, dict[str, list[Point]]]:
    """model -> profile -> every shape of the model's H200 operator file, with the H200's
    default profile (first), :data:`H200_CONTRAST` and :data:`H200_FIT`."""
    profiles = (catalog.default_profile(H200), H200_CONTRAST, H200_FIT)
    out: dict[str, dict[str, list[Point]]] = {}
    for model in H200_OPS:
        ds = h200_dataset(folder, model)
        out[model] = {name: ds.points(calibrate.base_params(name, H200), ds.keys()) for name in profiles}
    return out


def h200_checks(points: dict[str, dict[str, list[Point]]]) -> list[Check]:
    """Per TP, the default profile's median |error| on the model held out of the fit."""
    default = catalog.default_profile(H200)
    return [
        c
        for model, by_profile in points.items()
        if model != H200_FIT_MODEL
        for c in tp_checks(f"H200 {model} (model held out)", by_profile[default], H200_TARGET)
    ]


@dataclass(frozen=True)
class Fig9Row:
    trace: str
    capacity_tokens: float
    published: float
    simulated: float

    @property
    def diff(self) -> float:
        return self.simulated - self.published


def published_fig9(data: Path) -> dict[str, dict[float, float]]:
    """trace -> capacity (tokens) -> hit rate, as read off Figure 9 (``mooncake_fig9.csv``)."""
    out: dict[str, dict[float, float]] = {}
    with (data / "mooncake_fig9.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["trace"], {})[float(row["capacity_tokens"])] = float(row["hit_rate"])
    return out


def fig9_rows(data: Path, capacities: Sequence[float] = FIG9_CAPACITIES) -> list[Fig9Row]:
    """Replay the synthetic and conversation traces at each capacity and at infinity (compared
    with the curve's plateau, its largest capacity)."""
    published = published_fig9(data)
    rows = []
    for name in ("synthetic", "conversation"):
        curve = published[name]
        requests = load_trace(data / "traces" / f"{name}_trace.jsonl")
        for r in replay(requests, [*capacities, math.inf], block_size=512):
            pub = curve[max(curve)] if r.capacity_tokens == math.inf else curve[r.capacity_tokens]
            rows.append(Fig9Row(name, r.capacity_tokens, pub, r.hit_rate))
    return rows


def fig9_checks(rows: Sequence[Fig9Row]) -> list[Check]:
    return [
        Check(
            f"Figure 9 synthetic at {r.capacity_tokens:.0e} tokens |diff|",
            abs(r.diff),
            FIG9_TOLERANCE,
            abs(r.diff) <= FIG9_TOLERANCE,
        )
        for r in rows
        if r.trace == "synthetic" and r.capacity_tokens != math.inf
    ]
