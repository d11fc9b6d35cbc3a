"""A regression guard on real measurements: the shipped profiles keep kvsweep within the accuracy
targets on data they were not fitted to (the held-out side of the fixed split).

Targets (issue 11): vLLM on H100, held-out experiments: median |error| <= 10% for TTFT mean,
time per output token and E2E mean, no stage point worse than 30%, no stage saturated in kvsweep
(none is in the data). splitwise Llama2-70B, held-out shapes: median |error| <= 15% for decode
at every TP and for prefill at TP 2; prefill at TP 4 and 8 misses that target on the 2023 stack
(single long prompts are much cheaper per token there than batches of short ones, which no
per-token model of a modern engine reproduces), so it is held at today's level instead.
kvsweep's own H200 operator profiles (configs/measured, in the repository): ``h200-ops``
reproduces its held-out Llama-3.1-8B shapes as its stored fit error says, and the H200's default
profile predicts the Llama-3.1-70B file, a model held out of every fit, within 10% median per TP.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simcore import catalog
from sweep import calibrate, validation

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "measured").is_dir(), reason=f"shared data not found at {DATA}")


@pytest.fixture(scope="module")
def held_out_stages() -> list[calibrate.Point]:
    exps = [e for e in validation.measured.load_experiments(DATA / "measured" / "vllm_h100_experiments.json")
            if calibrate.held_out(e.name)]
    ds = calibrate.StageMeans(exps, validation.H100, "held out", workers=1)
    return ds.points(calibrate.base_params(None, validation.H100), ds.keys())


@needs_data
def test_vllm_h100_held_out_experiments_meet_the_targets(held_out_stages: list[calibrate.Point]) -> None:
    assert len({p.key for p in held_out_stages}) == 4 and len(held_out_stages) == 3 * 7
    table = calibrate.summary(held_out_stages)
    assert set(table) == {"ttft", "itl", "e2e"}
    for metric, stats in table.items():
        assert stats["median_abs"] <= 0.10, (metric, stats)
        assert abs(stats["worst"]) <= 0.30, (metric, stats)
    assert not [p for p in held_out_stages if p.note == "saturated"]
    assert all(c.held for c in validation.experiment_checks(held_out_stages))


@needs_data
def test_splitwise_held_out_shapes() -> None:
    points = validation.splitwise_points(DATA)
    assert set(points) == {"a100-80gb", "h100-80gb"}
    for hw, pts in points.items():
        table = validation.by_tp(pts)
        assert {tp for tp, _ in table} == {2, 4, 8}
        for (tp, metric), stats in table.items():
            bound = validation.STEP_TARGET if metric == "decode" or tp == 2 else 0.60
            assert stats["median_abs"] <= bound, (hw, tp, metric, stats)


@needs_data
def test_vidur_layer_times_per_tensor_parallel_degree() -> None:
    table = validation.by_tp(validation.vidur_points(DATA))
    assert {tp for tp, _ in table} == {1, 2, 4, 8}
    for key, stats in table.items():
        assert stats["median_abs"] <= 0.08, (key, stats)


def test_h200_ops_reproduces_its_held_out_8b_shapes_as_its_stored_fit_error_says() -> None:
    entry = catalog.profiles()["h200-ops"]
    ds = validation.h200_dataset(validation.OWN_DATA, validation.H200_FIT_MODEL)
    keys = [k for k in ds.keys() if calibrate.held_out(k)]
    got = calibrate.summary(ds.points(calibrate.base_params("h200-ops", validation.H200), keys))["layer"]
    stored = entry["fit_error"]["held_out"]["layer"]
    assert got["n"] == stored["n"] == len(keys) == 27
    # stored rounded to 4 decimals, from parameters before their rounding to 6 digits
    assert got["median_abs"] == pytest.approx(stored["median_abs"], abs=2e-4)
    assert got["worst"] == pytest.approx(stored["worst"], abs=2e-4)
    assert got["median_abs"] <= 0.05


def test_h200_default_profile_predicts_the_held_out_70b_model_within_the_target() -> None:
    points = validation.h200_points()
    default = catalog.default_profile(validation.H200)
    assert default == "h200-vllm" and set(points) == set(validation.H200_OPS)
    checks = validation.h200_checks(points)
    assert len(checks) == 4 and all(c.held for c in checks), checks
    new = validation.by_tp(points["Llama-3.1-70B"][default])
    old = validation.by_tp(points["Llama-3.1-70B"][validation.H200_CONTRAST])
    assert set(new) == {(tp, "layer") for tp in (1, 2, 4, 8)}
    for key, stats in new.items():
        assert stats["median_abs"] <= validation.H200_TARGET and stats["n"] == 31, (key, stats)
        assert stats["median_abs"] < old[key]["median_abs"], key  # the measurement helped at every TP
