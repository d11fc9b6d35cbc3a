"""Calibration: it recovers known parameters from data the cost model itself made, reads the
measured formats, and ``kvsweep calibrate`` writes a profile that runs can use."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from simcore.api import simulate
from simcore.config import COST_FIELDS, SimConfig
from sweep import calibrate, measured
from sweep.cli import main as cli

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "measured").is_dir(), reason=f"shared data not found at {DATA}")

#: a profile unlike any shipped one, so recovering it cannot be luck
TRUE = {
    "compute_efficiency": 0.63, "matmul_half_tokens": 140.0, "bandwidth_efficiency": 0.77,
    "kv_bandwidth_efficiency": 0.58, "elementwise_efficiency": 0.51, "layer_overhead_s": 2.1e-5,
    "allreduce_latency_s": 1.3e-5, "allreduce_latency_per_gpu_s": 4e-6, "step_overhead_s": 1.7e-3,
    "per_seq_overhead_s": 3e-5, "frontend_latency_s": 4e-3, "first_token_lag_steps": 0.8,
}


def truth(gpu: str = "H100-SXM-80GB") -> dict:
    return {**calibrate.base_params("generic", gpu), **TRUE}


def synthetic_steps(path: Path, params: dict) -> None:
    """A steps file whose times are the cost model's own with ``params``."""
    rows = []
    for tp in (2, 4, 8):
        m = calibrate._cost_model("Llama-2-70B", "H100-SXM-80GB", tp, params)
        for n, b in [(128, 1), (512, 1), (2048, 1), (8192, 1), (512, 4), (512, 16), (1024, 2), (256, 8)]:
            for g in (128, 1024):
                ctx = n + g // 2
                rows.append({"model": "m", "hardware": "h", "tensor_parallel": tp, "prompt_size": n,
                             "batch_size": b, "token_size": g,
                             "prompt_time": 1e3 * m.step_time(b * n, b * (n * (n + 1) // 2), b * n, b),
                             "token_time": 1e3 * m.step_time(b, b * (ctx + 1), b * (ctx + 1), b)})
    pd.DataFrame(rows).to_csv(path, index=False)


def test_fit_recovers_step_parameters_exactly_from_the_models_own_times(tmp_path: Path) -> None:
    params = truth()
    synthetic_steps(tmp_path / "steps.csv", params)
    ds = calibrate.load_steps(tmp_path / "steps.csv", "Llama-2-70B", "H100-SXM-80GB", {}, [])
    names = ["compute_efficiency", "matmul_half_tokens", "bandwidth_efficiency", "kv_bandwidth_efficiency",
             "allreduce_latency_per_gpu_s", "step_overhead_s", "per_seq_overhead_s"]
    start = calibrate.base_params("generic", "H100-SXM-80GB")  # every fitted value starts elsewhere
    assert all(start[n] != params[n] for n in names)
    res = calibrate.fit(ds, {**params, **{n: start[n] for n in names}}, names)
    for n in names:
        assert res.params[n] == pytest.approx(params[n], rel=1e-6), n
    assert max(abs(p.error) for p in res.train + res.test) < 1e-9
    assert res.test  # the fixed split held some shapes out
    assert res.confounded == []


def test_fit_names_parameters_the_data_cannot_tell_apart(tmp_path: Path) -> None:
    """One model at TP 2, 4 and 8 only: the step overhead and the all-reduce latency at TP 2
    enter every step as step + 2 x layers x latency, so no step-time data separates them."""
    params = truth()
    synthetic_steps(tmp_path / "steps.csv", params)
    ds = calibrate.load_steps(tmp_path / "steps.csv", "Llama-2-70B", "H100-SXM-80GB", {}, [])
    names = ["allreduce_latency_s", "step_overhead_s", "bandwidth_efficiency"]
    res = calibrate.fit(ds, {**params, "allreduce_latency_s": 3e-5, "step_overhead_s": 1e-3}, names)
    assert max(abs(p.error) for p in res.train) < 1e-9  # it fits perfectly...
    assert res.confounded == [["allreduce_latency_s", "step_overhead_s"]]  # ...and says what it cannot know
    layers = 80
    total = res.params["step_overhead_s"] + 2 * layers * res.params["allreduce_latency_s"]
    assert total == pytest.approx(params["step_overhead_s"] + 2 * layers * params["allreduce_latency_s"])


@needs_data
def test_fit_recovers_operator_parameters_exactly() -> None:
    params = truth()
    frame = measured.load_operator_profile(DATA / "measured" / "vidur_llama2_7b_h100_mlp.csv")
    ds = calibrate.OperatorTimes(frame, "H100-SXM-80GB", "vidur")
    # replace the measured times by the model's own: the layer total carries everything fitted
    model_pts = {p.key: p.predicted for p in ds.points(params, ds.keys())}
    ds.frame["linear_ms"] = [model_pts[k] for k in ds.frame["key"]]
    ds.frame["elementwise_ms"] = 0.0
    names = list(calibrate.OperatorTimes.default_fit)
    start = calibrate.base_params("generic", "H100-SXM-80GB")
    res = calibrate.fit(ds, {**params, **{n: start[n] for n in names}}, names, starts=3)
    for n in names:
        assert res.params[n] == pytest.approx(params[n], rel=1e-6), n


def tiny_experiment() -> measured.Experiment:
    stages = (measured.Stage(4.0, 60.0, 1.0, 1.0), measured.Stage(12.0, 60.0, 1.0, 1.0))
    name = next(f"tiny-{i}" for i in range(100) if not calibrate.held_out(f"tiny-{i}"))  # a training key
    return measured.Experiment(
        name=name, model={"name": "Llama-3.2-1B"}, tp=1, max_num_seqs=64, max_num_batched_tokens=2048,
        kv_blocks=None, groups=2, prompts_per_group=3, system_prompt_tokens=40, prompt_tokens=300,
        output_tokens=60, stages=stages)


def measured_like(exp: measured.Experiment, params: dict) -> measured.Experiment:
    """``exp`` with its stage means replaced by what simulating it with ``params`` gives."""
    made = calibrate.StageMeans([exp], "H100-SXM-80GB", "t", workers=1).points(params, [exp.name])
    means: dict[str, dict[str, float]] = {}
    for p in made:
        means.setdefault(p.label, {})[p.metric] = p.predicted
    stages = tuple(measured.Stage(s.rate, s.duration_s, m["ttft"], m["e2e"])
                   for s, m in zip(exp.stages, means.values(), strict=True))
    return measured.Experiment(**{**exp.__dict__, "stages": stages})


@pytest.mark.parametrize("names, rel", [
    (["frontend_latency_s", "first_token_lag_steps"], 1e-6),  # client side: no re-simulation, exact
    (["step_overhead_s", "frontend_latency_s"], 1e-2),  # through the simulated engine: piecewise smooth
])
def test_fit_recovers_serving_parameters_from_simulated_stage_means(names: list[str], rel: float) -> None:
    """Stage means made by simulating with known parameters are fitted back by simulating."""
    params = truth()
    exp = measured_like(tiny_experiment(), params)
    ds = calibrate.StageMeans([exp], "H100-SXM-80GB", "t", workers=1)
    start = {**params, "frontend_latency_s": 0.0, "first_token_lag_steps": 0.0, "step_overhead_s": 4e-3}
    start.update({n: params[n] for n in ("frontend_latency_s", "first_token_lag_steps", "step_overhead_s")
                  if n not in names})
    res = calibrate.fit(ds, start, names)
    for n in names:
        assert res.params[n] == pytest.approx(params[n], rel=rel), n


def test_held_out_split_is_fixed_and_about_thirty_percent() -> None:
    keys = [f"tp{t}-p{p}-b{b}" for t in (1, 2, 4, 8) for p in (128, 512, 2048) for b in (1, 4, 16, 64)]
    held = [k for k in keys if calibrate.held_out(k)]
    assert 0.15 < len(held) / len(keys) < 0.45
    assert held == [k for k in keys if calibrate.held_out(k)]  # a pure function of the key
    assert calibrate.held_out("60-llama-3-1-70b-tp4-general-lite-4-1")
    assert not calibrate.held_out("20260217-231439-llama-2-7b-tp1-general")


def test_calibrate_command_writes_a_profile_runs_can_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    params = truth()
    synthetic_steps(tmp_path / "steps.csv", params)
    fitted = ["compute_efficiency", "bandwidth_efficiency", "step_overhead_s"]
    generic = calibrate.base_params("generic", "H100-SXM-80GB")
    base = tmp_path / "base.yaml"  # the truth, but the three to fit at the generic values
    base.write_text(yaml.safe_dump({"params": {**params, **{n: generic[n] for n in fitted}, "profile": "x"}}))
    out = tmp_path / "fitted.yaml"
    code = cli(["calibrate", str(tmp_path / "steps.csv"), "--gpu", "H100-SXM-80GB", "--model", "Llama-2-70B",
                "--out", str(out), "--fit", ",".join(fitted), "--base", str(base)])
    assert code == 0
    text = capsys.readouterr().out
    assert "held-out points: prefill median |error| 0.0%" in text
    doc = yaml.safe_load(out.read_text())
    assert doc["fitted"] == fitted
    assert set(doc["params"]) == set(COST_FIELDS)
    for n in fitted:
        assert doc["params"][n] == pytest.approx(params[n], rel=1e-5)
    cfg = SimConfig.model_validate({"model": "Llama-3.2-1B", "gpu": "H100-SXM-80GB",
                                    "engine": {"cost": {"profile": str(out), "per_seq_overhead_s": 0.0}},
                                    "run": {"num_requests": 20}})
    assert cfg.engine.cost.profile == str(out)
    assert cfg.engine.cost.step_overhead_s == pytest.approx(params["step_overhead_s"], rel=1e-5)
    assert cfg.engine.cost.per_seq_overhead_s == 0.0  # a field set in engine.cost wins
    assert simulate(cfg).status == "ok"


@pytest.mark.parametrize("argv, message", [
    (["calibrate", "nope.json", "--gpu", "H100-SXM-80GB", "--out", "x.yaml"], "nope.json: no such file"),
    (["calibrate", "{steps}", "--gpu", "H100-SXM-80GB", "--out", "x.yaml"], "steps data needs --model"),
    (["calibrate", "{steps}", "--gpu", "H100-SXM-80GB", "--out", "x.yaml", "--model", "Llama-2-70B",
      "--fit", "speed"], "--fit 'speed' is not a fittable cost parameter"),
    (["calibrate", "{steps}", "--gpu", "H100-SXM-80GB", "--out", "x.yaml", "--model", "Llama-2-70B",
      "--set", "compute_efficiency=3"], "compute_efficiency"),
    (["calibrate", "{steps}", "--gpu", "H100-SXM-80GB", "--out", "x.yaml", "--model", "Llama-2-70B",
      "--where", "colour=red"], "no column 'colour'"),
    (["calibrate", "{steps}", "--gpu", "H300", "--out", "x.yaml", "--model", "Llama-2-70B"],
     "--gpu 'H300': gpu = 'H300': unknown gpu 'H300': use one of"),
    (["calibrate", "{steps}", "--gpu", "H200", "--out", "x.yaml", "--model", "Llama-2-70B", "--base", "h900"],
     "unknown cost profile 'h900': use one of"),
])
def test_calibrate_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      argv: list[str], message: str) -> None:
    synthetic_steps(tmp_path / "steps.csv", truth())
    argv = [a.replace("{steps}", str(tmp_path / "steps.csv")) for a in argv]
    argv[argv.index("--out") + 1] = str(tmp_path / "x.yaml")
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "x.yaml").exists()


@needs_data
def test_measured_formats_read_the_shipped_files() -> None:
    exps = measured.load_experiments(DATA / "measured" / "vllm_h100_experiments.json")
    assert len(exps) == 10 and sum(len(e.stages) for e in exps) == 17
    llama = next(e for e in exps if e.name == "60-llama-3-1-70b-tp4-general-lite-4-1")
    assert (llama.tp, llama.kv_blocks, llama.prompt_tokens, llama.num_requests) == (4, 30425, 574, 5100)
    cfg = measured.experiment_config(llama, "H100-SXM-80GB")
    from simcore.costmodel import kv_capacity_blocks
    assert kv_capacity_blocks(cfg)[0] - 1 == 30425  # the server's KV cache, block for block
    ops = measured.load_operator_profile(DATA / "measured" / "vidur_llama2_7b_h100_mlp.csv")
    assert set(ops["num_tensor_parallel_workers"]) == {1, 2, 4, 8}
    assert math.isclose(ops.loc[(ops.num_tokens == 1) & (ops.num_tensor_parallel_workers == 1), "linear_ms"]
                        .iloc[0], 0.156)
