"""Rebuild simcore/catalog/profiles.yaml from the public measurements (the catalog's provenance).

    python scripts/fit_profiles.py [--data ../shared/data] [--out simcore/catalog/profiles.yaml]

Each fit is what ``kvsweep calibrate`` does, on the training side of the fixed split:

1. ``h100-vidur-ops``: the matmul efficiency curve, elementwise traffic and per-layer time from
   Vidur's per-operator profile of a Llama-2-7B layer on H100 (TP 1-8).
2. ``h100-vllm``: from (1), the memory-bound side, the CPU overheads, the all-reduce latency,
   the front-end latency and the first-token streaming lag fitted to the 10 vLLM serving
   experiments on H100 (stage means, simulated; stages cut to 300 s while fitting).
3. ``splitwise-a100`` and ``splitwise-h100``: the whole step-time model fitted to splitwise-sim's
   Llama2-70B step times (a 2023 software stack: it checks the shape, TP 2/4/8).
4. ``a100-vllm``: (2) with the compute and bandwidth efficiencies scaled by the A100 / H100
   ratio of the two splitwise fits (same software and model on both GPUs: the ratio is the
   hardware's), the software terms kept. A rule, not a fit.

Catalog GPUs map to them: H100 and H200 (same chip, more bandwidth: its catalog peak) take
``h100-vllm``; A100-40GB, A100-80GB and L40S (no measurement; Ampere-class tensor cores as the
nearest) take ``a100-vllm``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simcore.config import COST_FIELDS  # noqa: E402
from sweep import calibrate, measured, validation  # noqa: E402

HEADER = """\
# Calibrated cost profiles: the values of simcore.config.CostParams per GPU and software stack,
# with where they came from and how well they fit (median |error| and worst error, as fractions,
# on the training and held-out sides of the fixed split). `defaults` names the profile each
# catalog GPU uses unless a run sets engine.cost.profile; a field set in engine.cost overrides
# the profile's. Written by scripts/fit_profiles.py from shared/data/measured/: do not edit by
# hand; rerun it.
"""
DEFAULTS = {
    "H100-SXM-80GB": "h100-vllm",
    "H200": "h100-vllm",
    "A100-80GB": "a100-vllm",
    "A100-40GB": "a100-vllm",
    "L40S": "a100-vllm",
}
SCALED = ("compute_efficiency", "bandwidth_efficiency")


def entry(res: calibrate.FitResult, gpu: str, source: str) -> dict[str, Any]:
    doc = calibrate.profile_document(res, name="", gpu=gpu, source=source)
    return {k: doc[k] for k in ("gpu", "source", "split", "fitted", "fit_error", "params")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=validation.DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "simcore" / "catalog" / "profiles.yaml")
    args = ap.parse_args()
    m = args.data / "measured"
    t0 = time.perf_counter()
    generic = calibrate.base_params("generic", "H100-SXM-80GB")
    ops = calibrate.OperatorTimes(
        measured.load_operator_profile(m / "vidur_llama2_7b_h100_mlp.csv"), "H100-SXM-80GB", "vidur"
    )
    ops_fit = calibrate.fit(ops, generic, ops.default_fit, starts=6)
    print(f"operators fitted ({time.perf_counter() - t0:.0f} s)", flush=True)
    stages = calibrate.StageMeans(
        measured.load_experiments(m / "vllm_h100_experiments.json"),
        "H100-SXM-80GB",
        "vllm",
        max_stage_s=300.0,
    )
    vllm_fit = calibrate.fit(stages, {**ops_fit.params, "profile": "h100-vidur-ops"}, stages.default_fit)
    print(f"stages fitted ({time.perf_counter() - t0:.0f} s)", flush=True)
    split = {}
    for hardware, (gpu, name) in validation.SPLITWISE.items():
        ds = calibrate.load_steps(
            m / "splitwise_perf_model.csv",
            "Llama-2-70B",
            gpu,
            {"model": "llama2-70b", "hardware": hardware},
            validation.SPLITWISE_DROP,
        )
        base = {**calibrate.base_params("generic", gpu), "cuda_graph_max_tokens": 64}
        split[name] = (gpu, calibrate.fit(ds, base, ds.default_fit, starts=6))
        print(f"{name} fitted ({time.perf_counter() - t0:.0f} s)", flush=True)
    a100, h100 = split["splitwise-a100"][1].params, split["splitwise-h100"][1].params
    a100_vllm = dict(vllm_fit.params)
    for k in SCALED:
        a100_vllm[k] = min(1.0, vllm_fit.params[k] * a100[k] / h100[k])
    profiles: dict[str, Any] = {
        "generic": {
            "gpu": "any",
            "source": "Not fitted: physically plausible round values (the CostParams "
            "defaults), for GPUs given inline.",
            "params": {},
        },
        "h100-vidur-ops": entry(
            ops_fit,
            "H100-SXM-80GB",
            "Vidur per-operator profile, Llama-2-7B layer on "
            "H100, TP 1-8 (microsoft/vidur data/profiling/compute/h100/.../mlp.csv)",
        ),
        "h100-vllm": entry(
            vllm_fit,
            "H100-SXM-80GB",
            "10 vLLM v1 serving experiments on H100-SXM-80GB (the "
            "BLIS sim-to-real ground truth: inference-sim), simulated stage means; compute "
            "curve and elementwise traffic from h100-vidur-ops",
        ),
    }
    for name, (gpu, res) in split.items():
        profiles[name] = entry(
            res,
            gpu,
            "splitwise-sim perf_model.csv, Llama2-70B step times, TP 2/4/8 "
            "(2023 software stack; TP2 batch-64 rows left out as inconsistent)",
        )
    profiles["a100-vllm"] = {
        "gpu": "A100-80GB",
        "source": "rule, not a fit: h100-vllm with compute_efficiency and bandwidth_efficiency scaled by "
        "splitwise-a100 / splitwise-h100 (same software and model on both GPUs)",
        "fit_error": "see kvsweep validate (splitwise A100 shapes) and the two profiles it is made of",
        "params": {k: calibrate.plain(a100_vllm[k]) for k in COST_FIELDS},
    }
    doc = {"defaults": DEFAULTS, "profiles": profiles}
    args.out.write_text(HEADER + yaml.safe_dump(doc, sort_keys=False, width=100), encoding="utf-8")
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
