"""scripts/fuzz_fast_vs_reference.py: fast mode equals the reference on random configurations,
and the fuzzer's comparison does see a difference when there is one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import fuzz_fast_vs_reference as fuzz  # noqa: E402

from simcore import native  # noqa: E402
from simcore.feasibility import config_refusal  # noqa: E402


def test_random_configurations_run_the_same_in_both_modes(capsys):
    assert fuzz.main(["--cases", "24", "--first", "1000"]) == 0
    out = capsys.readouterr().out
    assert "MISMATCH" not in out and "24 random configurations" in out
    assert ("the pure-Python twins" if native.NATIVE is None else "the compiled paths") in out


def test_random_configurations_run_the_same_on_the_pure_python_twins():
    """Where the compiled module is not built, fast mode runs on the pure-Python twins: the same
    comparison there (seeds 30000-30011 crashed it before the fix to a foreign hint)."""
    env = {**os.environ, native.PURE_ENV: "1"}
    script = ROOT / "scripts" / "fuzz_fast_vs_reference.py"
    res = subprocess.run([sys.executable, str(script), "--cases", "12", "--first", "30000"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "12 random configurations" in res.stdout and "0 mismatched" in res.stdout
    assert "fast mode on the pure-Python twins" in res.stdout


def test_draws_are_deterministic_varied_and_runnable():
    cfgs = [fuzz.draw(seed) for seed in range(100)]
    assert [c.model_dump() for c in cfgs[:5]] == [fuzz.draw(seed).model_dump() for seed in range(5)]
    assert all(config_refusal(c) is None for c in cfgs)  # what simulate() runs
    assert {c.cluster.router for c in cfgs} == set(fuzz.ROUTERS)
    assert {c.cluster.replicas for c in cfgs} >= {1, 2, 3, 4}
    assert any(c.engine.cpu_offload_gib > 0 for c in cfgs)
    assert any(c.cluster.shared_pool_gib > 0 for c in cfgs)
    assert {c.workload.kind for c in cfgs} >= {"chat", "mix", "poisson", "api"}
    assert any(c.run.until == "steady" for c in cfgs)


def test_the_comparison_sees_a_different_run():
    cfg = fuzz.draw(3)
    other = cfg.model_copy(update={"run": cfg.run.model_copy(update={"seed": cfg.run.seed + 1})})
    a, b = fuzz.simulate_cluster(cfg, "fast"), fuzz.simulate_cluster(other, "fast")
    assert fuzz.differences(a, b)  # another seed: other requests, other blocks
    assert fuzz.differences(a, fuzz.simulate_cluster(cfg, "reference")) == []


def test_the_invariants_hold_on_a_run_and_catch_a_broken_one():
    cluster = fuzz.simulate_cluster(fuzz.draw(3), "reference")
    assert fuzz.broken_invariants(cluster) == []
    rec = cluster.records[5]
    rec.finish_s = rec.arrival_s - 1.0  # finished before it arrived
    assert any("request 5 breaks a rule" in x for x in fuzz.broken_invariants(cluster))


def test_bad_arguments_are_refused(capsys):
    assert fuzz.main(["--cases", "0"]) == 2
    assert "--cases must be >= 1" in capsys.readouterr().err
